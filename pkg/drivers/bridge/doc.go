// Package bridge is the bridge network driver, after libnetwork's: a
// Linux bridge per network, a veth pair per endpoint, masquerade for
// traffic leaving the network, isolation between networks, optional
// isolation between the endpoints of one network (enableICC false, by
// bridge port isolation and a drop of what the host would route from the
// bridge back to it), and published ports (the portMappings capability)
// through DNAT with hairpin.
//
// The firewall work is in package firewall; this package owns the links,
// the host sysctls of its bridges and the reservation of host ports.
// Its state (networks, published ports) lives in the driver's own key
// space of the store, so every plugin process sees the same.
package bridge
