package driverapi

import (
	"context"
	"net"
)

// IPAMDriver hands out the addresses of the networks whose ipam type
// names it, after libnetwork's ipamapi.Ipam: pools once per network,
// addresses per endpoint. A plugin invocation is a short process, so the
// core records what the driver hands out (pools with the network,
// addresses with the endpoint that holds them) and gives it back on each
// call. config is the network configuration: the driver reads its own
// keys of the ipam section. An error that is a CNI error keeps its code;
// a driver that cannot reach its allocator says so with code 11 (try
// again later), which makes the core keep a release for GC.
type IPAMDriver interface {
	// RequestPools reserves the network's pools, on its first ADD. A
	// driver that fails half-way gives back what it reserved.
	RequestPools(ctx context.Context, config []byte) ([]IPAMPool, error)
	// ReleasePool gives back a pool RequestPools reserved, with its
	// gateway address when RequestPools requested it.
	ReleasePool(ctx context.Context, config []byte, pool IPAMPool) error
	// RequestAddress reserves an address of pool for an endpoint:
	// preferred when it is not nil; mac is the endpoint's, nil if none
	// yet. The address comes with the pool's prefix length.
	RequestAddress(ctx context.Context, config []byte, pool IPAMPool, preferred net.IP, mac net.HardwareAddr) (*net.IPNet, error)
	// ReleaseAddress gives back an address RequestAddress reserved.
	ReleaseAddress(ctx context.Context, config []byte, pool IPAMPool, addr net.IP) error
	// Status reports whether the driver can serve an ADD now.
	Status(ctx context.Context, config []byte) error
}

// IPAMPool is a pool an IPAMDriver reserved, as the core records it.
type IPAMPool struct {
	// ID is the driver's name for the pool.
	ID string `json:"id"`
	// Subnet is the pool in CIDR notation, Gateway its gateway ("" for
	// none).
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway,omitempty"`
	// GatewayRequested is set when the gateway was requested as an
	// address of the pool: it goes back with the pool.
	GatewayRequested bool `json:"gatewayRequested,omitempty"`
}

// IPAMRegisterer is implemented by the registerers that take IPAM
// drivers too (the core's controller, cnm.Drivers). An IPAM driver's
// package checks for it, so that a registerer without it still takes the
// binary's network drivers.
type IPAMRegisterer interface {
	// RegisterIPAMDriver adds driver for the ipam type name.
	RegisterIPAMDriver(name string, driver IPAMDriver) error
}

// RegisterAll is the registration of each of regs in turn, for a binary
// whose drivers come from several packages.
func RegisterAll(regs ...func(Registerer) error) func(Registerer) error {
	return func(r Registerer) error {
		for _, reg := range regs {
			if err := reg(r); err != nil {
				return err
			}
		}
		return nil
	}
}
