// Package remote is the IPAM driver of ipam type "remote": the addresses
// of a network come from a Docker IPAM plugin (the IpamDriver protocol,
// HTTP and JSON on a unix socket, as libnetwork's remote IPAM speaks it).
//
// The plugin is found as the remote network driver finds its plugin
// (ipam.plugin, or ipam.socket), and activated as an IpamDriver at each
// call of a process. RequestPools asks GetCapabilities, the default
// address space (GetDefaultAddressSpaces) when the configuration names
// none, and RequestPool for each pool of the configuration; a pool's
// gateway is the configured one, else the one the plugin's pool data
// gives (com.docker.network.gateway), else one requested from the pool
// as Docker does (RequestAddress with RequestAddressType
// com.docker.network.gateway). Every call has the configured deadline.
//
// The core keeps what the plugin hands out: the pools with the network,
// the addresses with the endpoint that holds them, and gives them back
// on each call (driverapi.IPAMDriver). A plugin that does not answer is
// error 11, which makes the core keep a release for GC; a plugin that
// answers a release with an error has had its say: that is written to
// the log and the release is done.
package remote
