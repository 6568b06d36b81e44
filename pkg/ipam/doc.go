// Package ipam assigns endpoint addresses for cnmnet.
//
// The ipam section of a network config uses host-local's syntax (ranges,
// or the single-range shorthand subnet/rangeStart/rangeEnd/gateway).
// ParseConfig validates it and returns it in canonical form.
//
// When ipam.type is "cnm" (or empty) the built-in Allocator reserves
// addresses inside the caller's store transaction, so a reservation
// commits or rolls back together with the endpoint record that owns it.
// An owner is an opaque key chosen by the caller (an endpoint), not a
// container: the reservation outlives the containers that use it.
//
// Any other ipam.type names a CNI IPAM plugin (host-local, static, dhcp)
// that Delegate runs through the standard CNI exec path, passing the
// endpoint's identity as CNI_CONTAINERID so that the plugin keys its
// reservation to the endpoint rather than to a container.
//
// # Store keys
//
// The allocator owns these keys of the shared store (network is the CNI
// network name, which may not contain "/"):
//
//	ipam/<network>/addr/<ip>        -> owner holding the address
//	ipam/<network>/cursor/<subnet>  -> last address handed out dynamically
//	                                   in the range set whose first range
//	                                   has that subnet
//
// <ip> is the canonical text form of the address (dotted quad for IPv4,
// RFC 5952 for IPv6) and <subnet> is the canonical masked prefix, e.g.
// ipam/net1/addr/10.0.0.2 and ipam/net1/cursor/fd00::/64. Values are the
// raw strings. Allocation resumes after the cursor, as host-local does, so
// an address just released is not handed out again at once.
package ipam
