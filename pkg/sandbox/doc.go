// Package sandbox does the network-namespace work of the cnmnet core.
//
// In the Container Network Model a driver creates an interface in the
// host namespace (one end of a veth pair, a macvlan, ...) and the core
// moves it into the sandbox, the container's network namespace, and
// configures it there. Attach does that move and configuration, Check
// verifies it for CNI CHECK, Detach undoes it for CNI DEL, and
// LoopbackUp serves sandboxes joined without an interface.
//
// A sandbox is named by its netns path (CNI_NETNS). The "host" namespace
// is the caller's current network namespace. Work inside a sandbox runs
// in ns.NetNS.Do, which pins the goroutine to an OS thread switched into
// the sandbox, so callers need not lock threads themselves.
//
// Telling a network namespace from other files needs the NS_GET_NSTYPE
// ioctl (Linux 4.11 or later).
package sandbox
