// Package hostports holds what the drivers that publish container ports
// on the host share (the portMappings capability): resolving a runtime's
// mappings to the endpoint's addresses, reserving each host port for one
// endpoint in the driver's store, and listing a network's ports as the
// firewall takes them.
//
// The store layout is the bridge driver's, kept as it was: the endpoint's
// ports under "endpoints/<endpoint id>", each reserved host port under
// "hostports/<protocol>/<port>/<address or any4|any6>". A global driver
// keeps them in its host store, as a port is published on one host.
package hostports
