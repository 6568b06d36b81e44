// Package cluster holds the tests of global-scope networks across
// hosts: each host a network namespace with its own data directory and
// host name, the plugins exec'd in it as a runtime would, and a real etcd
// (one member, or three for the fault specs) on unix sockets under the
// test's temporary directory, reachable from every namespace.
package cluster
