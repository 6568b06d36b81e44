// Package dataplane programs one host's part of an overlay network: one
// L2 segment spanning hosts over VXLAN, whose endpoints keep their
// address and MAC wherever they run.
//
// On each host a network is a bridge, which the local endpoints' veths
// join and which holds the network's gateway addresses, and a VXLAN
// device attached to it as a port: learning off, proxy (ARP and
// neighbour-discovery suppression) on, its VNI and UDP port set
// explicitly, its local address the host's VTEP. A remote endpoint is a
// Peer: a permanent FDB entry on the VXLAN device sends its MAC to its
// host's VTEP, and a permanent neighbour entry per address on the VXLAN
// device lets the device answer the local endpoints' ARP requests and
// neighbour solicitations for it. Nothing is flooded across the tunnel:
// without an all-zeros FDB entry broadcast and unknown unicast stop at
// the VXLAN device, so every remote endpoint must be programmed, and the
// gateway, the same address and MAC on every host, is answered only by
// the endpoint's own host.
//
// Every function works in the network namespace of the calling thread
// (the host's, where the plugin and the daemon run) and is idempotent.
// Only links marked as the network's (alias "cnmnet:<network id>") are
// changed or deleted, and only entries on those links. The functions do
// not lock: callers serialise the changes to one network.
package dataplane
