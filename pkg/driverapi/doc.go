// Package driverapi is the contract between the cnmnet core and its
// network drivers, after libnetwork's Container Network Model.
//
// A driver manages networks and endpoints of one type. The core calls
// CreateNetwork on a network's first use, CreateEndpoint when an endpoint
// is reserved, Join when a sandbox (a network namespace) attaches to it,
// Leave when it detaches, DeleteEndpoint when the reservation ends and
// DeleteNetwork when an operator removes the network. On every ADD of a
// network that exists, a driver that implements NetworkUpdater applies an
// edited configuration to it, or refuses it, before anything else.
//
// Addresses are the core's business: when an endpoint reaches
// CreateEndpoint its address may already be assigned (a static request,
// or an allocation made earlier, possibly on another host); a driver may
// reject such an address but never replace it, and adds one only when
// none is assigned. At Join a driver names the interface it made for the
// sandbox; the core moves it into the sandbox, renames it and configures
// its addresses, gateways and routes.
//
// Each driver package registers its own driver(s) through the Registerer
// it is handed; the core keeps no list of drivers.
package driverapi
