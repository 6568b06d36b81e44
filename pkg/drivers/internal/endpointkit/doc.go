// Package endpointkit holds the steps the drivers that give an endpoint
// a veth share: choosing its MAC, telling the core its gateways, and
// removing a link that may be gone already.
package endpointkit
