package cnm

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// The addresses of a network whose ipam type names an IPAM driver
// (driverapi.IPAMDriver: remote) come from it: its pools are reserved at
// the network's first ADD and recorded with the network (Network.Pools,
// with their IDs), each endpoint's addresses with the endpoint
// (Address.Pool), so that a persistent endpoint keeps them across its
// joins and only its deletion gives them back. A release the driver
// cannot do now is kept as the releases of CNI IPAM plugins are.

// ipamDriver is the IPAM driver of ipam type typ; nil for a CNI IPAM
// plugin's type (or none).
func (c *Controller) ipamDriver(typ string) driverapi.IPAMDriver { return c.ipamDrivers[typ] }

// noIPAMDriver is the error of a remote type in a plugin built without
// its driver.
func noIPAMDriver(typ string) error {
	return invalidConfig("ipam.type: this plugin has no IPAM driver for %q", typ)
}

// requestAddresses gets the addresses of ep, a new endpoint, from the
// delegated IPAM of its network: a CNI IPAM plugin's ADD, or an address
// of each of the network's pools from its IPAM driver.
func (c *Controller) requestAddresses(ctx context.Context, req *Request, nw *Network, ep *Endpoint) ([]Address, error) {
	id := c.ipamDriver(ep.IPAM)
	switch {
	case id != nil:
		return c.requestFromDriver(ctx, id, req, nw, ep)
	case ep.IPAM == ipam.RemoteType:
		return nil, noIPAMDriver(ep.IPAM)
	}
	res, err := c.delegate(req, ep).Add(ctx)
	if err != nil {
		return nil, err
	}
	return addressesOf(res.IPs), nil
}

func (c *Controller) requestFromDriver(ctx context.Context, id driverapi.IPAMDriver, req *Request, nw *Network, ep *Endpoint) ([]Address, error) {
	static, err := req.Conf.staticRequest(req.Args)
	if err != nil {
		return nil, err
	}
	if err := c.ensurePools(ctx, id, req, nw); err != nil {
		return nil, err
	}
	preferred, err := preferredIn(nw, static.IPs)
	if err != nil {
		return nil, err
	}
	var mac net.HardwareAddr
	if ep.MAC != "" {
		mac, _ = net.ParseMAC(ep.MAC)
	}
	var got []Address
	for i, p := range nw.Pools {
		a, err := id.RequestAddress(ctx, req.Conf.Raw, p.ipamPool(), preferred[i], mac)
		if err != nil {
			// Best effort: the endpoint is rolled back without addresses.
			for _, g := range got {
				_ = c.releaseAddress(ctx, id, req.Conf.Raw, g)
			}
			return nil, err
		}
		got = append(got, Address{Address: a.String(), Gateway: p.Gateway, Pool: p.ID})
	}
	// Recorded at once: what the driver holds must be known to be
	// released, whatever happens to this ADD.
	ep.Addresses = got
	if err := c.store.Update(func(tx store.Tx) error { return putEndpoint(tx, ep, nil) }); err != nil {
		return nil, errors.Join(fmt.Errorf("record addresses of endpoint %s: %w", ep.Name, err), c.releaseAll(ctx, id, req.Conf.Raw, got))
	}
	return got, nil
}

// preferredIn sorts the static addresses of a request by the pools of
// nw they fall in; one in none of them is refused.
func preferredIn(nw *Network, ips []net.IP) ([]net.IP, error) {
	out := make([]net.IP, len(nw.Pools))
	for _, ip := range ips {
		found := false
		for i, p := range nw.Pools {
			if _, subnet, err := net.ParseCIDR(p.Subnet); err == nil && subnet.Contains(ip) && out[i] == nil {
				out[i], found = ip, true
				break
			}
		}
		if !found {
			return nil, invalidConfig("ips: %s is in none of the pools of network %s (%s)", ip, nw.Name, poolList(nw.Pools))
		}
	}
	return out, nil
}

// ensurePools reserves the network's pools on its first ADD and records
// them with it. Of two ADDs that raced, the pools recorded first are
// the network's: the other's go back.
func (c *Controller) ensurePools(ctx context.Context, id driverapi.IPAMDriver, req *Request, nw *Network) error {
	if len(nw.Pools) > 0 {
		return nil
	}
	reserved, err := id.RequestPools(ctx, req.Conf.Raw)
	if err != nil {
		return err
	}
	var pools []Pool
	for _, p := range reserved {
		pools = append(pools, Pool{Subnet: p.Subnet, Gateway: p.Gateway, ID: p.ID, GatewayRequested: p.GatewayRequested})
	}
	var theirs []Pool
	err = c.store.Update(func(tx store.Tx) error {
		cur, err := getNetwork(tx, nw.Name)
		if err != nil {
			return err
		}
		if theirs = cur.Pools; len(theirs) > 0 {
			return nil
		}
		cur.Pools = pools
		return putNetwork(tx, cur)
	})
	if err != nil || len(theirs) > 0 {
		var errs errorList
		errs.add(err)
		for _, p := range pools {
			errs.add(id.ReleasePool(ctx, req.Conf.Raw, p.ipamPool()))
		}
		if err != nil {
			return fmt.Errorf("record pools of network %s: %w", nw.Name, errors.Join(errs...))
		}
		pools = theirs
	}
	nw.Pools = pools
	return nil
}

func (p Pool) ipamPool() driverapi.IPAMPool {
	return driverapi.IPAMPool{ID: p.ID, Subnet: p.Subnet, Gateway: p.Gateway, GatewayRequested: p.GatewayRequested}
}

func (c *Controller) releaseAddress(ctx context.Context, id driverapi.IPAMDriver, config []byte, a Address) error {
	ip, subnet, err := net.ParseCIDR(a.Address)
	if err != nil {
		return fmt.Errorf("address %q: %w", a.Address, err)
	}
	return id.ReleaseAddress(ctx, config, driverapi.IPAMPool{ID: a.Pool, Subnet: subnet.String()}, ip)
}

func (c *Controller) releaseAll(ctx context.Context, id driverapi.IPAMDriver, config []byte, addrs []Address) error {
	var errs errorList
	for _, a := range addrs {
		errs.add(c.releaseAddress(ctx, id, config, a))
	}
	return errors.Join(errs...)
}

// callRelease does a release: a CNI IPAM plugin's DEL with netconf
// (netns is the sandbox for the first attempt, at DEL, and "" for
// retries), or the IPAM driver's releases of r's addresses and pools.
// What the driver gave back is dropped from r, so that a retry asks
// only for the rest.
func (c *Controller) callRelease(ctx context.Context, r *Release, netconf []byte, path, netns string) error {
	id := c.ipamDriver(r.IPAM)
	if id == nil && r.IPAM != ipam.RemoteType {
		return r.call(ctx, netconf, path, netns)
	}
	what := "endpoint " + r.Endpoint
	if r.Endpoint == "" {
		what = "network " + r.Network
	}
	if len(r.Addresses) == 0 && len(r.Pools) == 0 {
		return nil
	}
	if id == nil {
		return fmt.Errorf("ipam %s: release addresses of %s: %w", r.IPAM, what, noIPAMDriver(r.IPAM))
	}
	var errs errorList
	var kept []Address
	for _, a := range r.Addresses {
		if err := c.releaseAddress(ctx, id, netconf, a); err != nil {
			errs.add(err)
			kept = append(kept, a)
		}
	}
	r.Addresses = kept
	var keptPools []Pool
	for _, p := range r.Pools {
		if err := id.ReleasePool(ctx, netconf, p.ipamPool()); err != nil {
			errs.add(err)
			keptPools = append(keptPools, p)
		}
	}
	r.Pools = keptPools
	if len(errs) > 0 {
		return fmt.Errorf("ipam %s: release addresses of %s: %w", r.IPAM, what, errors.Join(errs...))
	}
	return nil
}

// poolRelease is the release of the pools an IPAM driver reserved for
// nw, a network being deleted; nil when it has none.
func (c *Controller) poolRelease(nw *Network) *Release {
	var pools []Pool
	for _, p := range nw.Pools {
		if p.ID != "" {
			pools = append(pools, p)
		}
	}
	typ, _ := ipamTypeOf(nw.Config)
	if len(pools) == 0 || (c.ipamDriver(typ) == nil && typ != ipam.RemoteType) {
		return nil
	}
	return &Release{Network: nw.Name, ID: nw.ID, IPAM: typ, Pools: pools, NetConf: nw.Config, Since: c.now().UTC()}
}

// releasePools gives back the pools of nw, a network being deleted, and
// returns the release to keep when its driver could not do it all.
func (c *Controller) releasePools(ctx context.Context, nw *Network) *Release {
	rel := c.poolRelease(nw)
	if rel == nil {
		return nil
	}
	if err := c.callRelease(ctx, rel, rel.NetConf, c.cniPath, ""); err != nil {
		rel.Error = err.Error()
		return rel
	}
	return nil
}
