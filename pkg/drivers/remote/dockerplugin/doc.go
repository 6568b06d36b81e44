// Package dockerplugin is the client side of Docker's plugin protocol,
// for the remote network and IPAM drivers: finding a plugin by name as
// the Docker daemon does (a socket in /run/docker/plugins, else a spec
// file in /etc/docker/plugins or /usr/lib/docker/plugins), activating
// it, and calling its methods (HTTP POST of JSON, over a unix socket or
// TCP with optional TLS), each call under a deadline.
//
// Its errors say which of three things went wrong, since callers answer
// them differently: the plugin could not be reached or did not answer
// in time (ErrUnavailable: try again later), the plugin answered with
// an error of its own (*Error, carrying its message and HTTP status), or
// it answered something that is not the protocol (a malformed reply).
package dockerplugin
