// Package endpointkit holds the steps the drivers that give an endpoint
// a veth share: choosing its MAC, telling the core its gateways, removing
// a link that may be gone already, and the sysctls of the host side
// (forwarding, a bridge's route_localnet).
package endpointkit
