// Package remote_test tests cnm-remote, the remote driver's plugin,
// against a Docker network plugin built on docker/go-plugins-helpers
// that makes real veth pairs and a bridge in a "host" namespace of the
// test's own, serving on a socket in the spec's temporary directory.
package remote
