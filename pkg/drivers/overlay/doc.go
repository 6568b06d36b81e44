// Package overlay is the overlay network driver (network type
// "cnm-overlay"), after libnetwork's: one L2 segment, and one subnet,
// spanning hosts over VXLAN, whose endpoints keep their address and MAC
// on whichever host they join. It is registered at global scope: its
// networks and endpoints live in the cluster store.
//
// On each host a network is a bridge and a VXLAN device (package
// dataplane), made by the network's first ADD there (CreateNetwork),
// which also programs every remote endpoint the network has at that
// moment, so that the host's first container reaches them at once. An
// endpoint is a veth pair whose host end is on the bridge. Join records
// where the endpoint is (records.Peer: this host, its VTEP, the
// endpoint's MAC and addresses) for the other hosts, whose daemon
// (cnm-overlayd) programs their forwarding entries from it; Leave
// removes that record when it still names this host, so that an
// endpoint that moved on is not withdrawn from its new place.
//
// Traffic to addresses outside the overlay's subnets leaves through the
// endpoint's own host: the gateway addresses are on every host's bridge
// (ARP for them never crosses the tunnel), and package firewall
// masquerades what leaves the bridge (ipMasq) and isolates the network's
// bridge from other networks' (isolation), as for cnm-bridge.
//
// The records shared with the daemon are package records'. Changes to a
// network's host state are serialised on a host by a lock file
// (records.HostLockFile), which the daemon takes too.
package overlay
