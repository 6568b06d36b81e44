package cnm

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
)

// An edited configuration of a network that exists. The configuration
// of the latest successful ADD is the network's (Network.Config, which
// cnmctl goes by), so an ADD either puts its configuration in force or
// is refused, changing nothing. The core's own keys apply per request:
// endpointIdentity and podNamespace name the endpoints of new
// attachments, reservationTTL is read at each DEL, maxPersistentEndpoints
// when a persistent endpoint is made, and ipam's rangeStart, rangeEnd
// and routes when an endpoint gets its addresses; existing endpoints
// keep what they got. What shapes the network's addresses cannot change
// under its endpoints: the ipam type, the subnets and their gateways.
// The driver decides on its own keys (driverapi.NetworkUpdater).

// updateNetwork refuses a request that would change the addresses of its
// network nw (nil: there is none yet), and has the driver apply the
// request's configuration to the network's host state or refuse it. It
// returns how to undo what the driver changed, nil when nothing changed.
func (c *Controller) updateNetwork(req *Request, d driverapi.Driver, nw *Network) (undo func() error, err error) {
	if nw == nil {
		return nil, nil // made by this ADD, with this configuration
	}
	if nw.Driver != req.Conf.Type || !nw.DeletingSince.IsZero() {
		// reserve refuses it, naming type, or waits for the deletion
		// under way, or makes again a network whose deletion died.
		return nil, nil
	}
	if err := checkAddressesKept(nw, req.Conf); err != nil {
		return nil, err
	}
	u, ok := d.(driverapi.NetworkUpdater)
	if !ok || !nw.Ready {
		// A network not ready yet is made with this configuration.
		return nil, nil
	}
	// Called on every ADD, not only when the stored configuration
	// differs: a plugin killed between the driver's change and the
	// store's leaves them apart, and the next ADD brings them together.
	return u.UpdateNetwork(nw.ID, c.networkInfo(req.Conf, nw))
}

// checkAddressesKept refuses an ipam section that changes the type of
// the network's allocator or the subnets and gateways of its ranges.
// A delegated plugin's own keys are its business: what it hands out is
// checked against the network's pools (fitPools).
func checkAddressesKept(nw *Network, conf *NetConf) error {
	if len(nw.Config) == 0 {
		return nil // recorded before networks kept their configuration
	}
	was, err := ipam.ParseConfig(nw.Config)
	if err != nil {
		return nil // refused at its own ADD since; nothing to compare with
	}
	is := conf.IPAMConf
	howTo := "remove the network first: cnmctl network rm " + nw.Name
	switch {
	case was == nil && is == nil:
		return nil
	case was == nil:
		return invalidConfig("ipam: network %s exists without addresses; to give it some %s", nw.Name, howTo)
	case is == nil:
		return invalidConfig("ipam: network %s exists with addresses (%s), and this configuration gives it none; to change that %s",
			nw.Name, describeAddresses(was), howTo)
	case ipamType(was) != ipamType(is):
		return invalidConfig("ipam.type: network %s exists with ipam %s, not %s; to change it %s", nw.Name, ipamType(was), ipamType(is), howTo)
	case was.RemoteConf != nil && is.RemoteConf != nil:
		// The pools were requested at the network's first ADD.
		if !slices.Equal(was.RemoteConf.Pools, is.RemoteConf.Pools) || was.RemoteConf.AddressSpace != is.RemoteConf.AddressSpace {
			return invalidConfig("ipam: network %s exists with the pools its remote IPAM plugin gave for %s; to ask for others %s",
				nw.Name, describeRemotePools(was.RemoteConf), howTo)
		}
		return nil
	case was.Delegated():
		return nil
	}
	if before, after := rangeSubnets(was), rangeSubnets(is); !slices.Equal(before, after) {
		return invalidConfig("ipam.ranges: network %s exists with subnets %s, not %s; to change them %s",
			nw.Name, strings.Join(before, ", "), strings.Join(after, ", "), howTo)
	}
	return nil
}

func ipamType(c *ipam.Config) string {
	if c.Delegated() {
		return c.Type
	}
	return ipam.BuiltinType
}

func describeAddresses(c *ipam.Config) string {
	if !c.Delegated() {
		return "subnets " + strings.Join(rangeSubnets(c), ", ")
	}
	return "from ipam " + c.Type
}

// rangeSubnets lists the subnets of the built-in ranges with their
// gateways, sorted: the order of the ranges and their bounds do not
// shape the network.
func rangeSubnets(c *ipam.Config) []string {
	var out []string
	for _, set := range c.Ranges {
		for _, r := range set {
			s := r.Subnet
			if r.Gateway != "" {
				s += " (gateway " + r.Gateway + ")"
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out
}

// checkIPAMServes refuses a delegated IPAM type the core cannot run. The
// dhcp plugin leases an address for an interface that is already in the
// sandbox, sending from it and renewing through it; the core asks IPAM
// for the endpoint's addresses before any driver makes an interface,
// since they reserve the endpoint (which may outlive its container) and
// give its MAC.
func checkIPAMServes(c *ipam.Config) error {
	if c.Delegated() && c.Type == "dhcp" {
		return invalidConfig("ipam.type: dhcp cannot serve a cnmnet network: it leases an address for an interface already in the sandbox, " +
			"and cnmnet reserves an endpoint's addresses before it makes its interface; use host-local, static or the built-in cnm")
	}
	return nil
}

// fitPools checks the addresses a delegated IPAM plugin gave ep against
// the pools of its network: the first endpoint's addresses give them (the
// subnet of each address's prefix, with its gateway), and every later
// one's must fall in them, as the driver was made with them.
func fitPools(nw *Network, ep *Endpoint) error {
	pools, err := delegatedPools(ep)
	if err != nil {
		return err
	}
	if len(nw.Pools) == 0 {
		if !nw.Ready {
			nw.Pools = pools
		}
		return nil
	}
	for _, p := range pools {
		i := slices.IndexFunc(nw.Pools, func(q Pool) bool { return q.Subnet == p.Subnet })
		switch {
		case i < 0:
			return invalidConfig("ipam: %s gave endpoint %s an address in %s, which is not a subnet of network %s (%s, from its first endpoint's addresses); "+
				"to change the subnets remove the network first: cnmctl network rm %s", ep.IPAM, ep.Name, p.Subnet, nw.Name, poolList(nw.Pools), nw.Name)
		case p.Gateway != "" && p.Gateway != nw.Pools[i].Gateway:
			return invalidConfig("ipam: %s gave endpoint %s the gateway %s for %s, where network %s has %s; "+
				"to change it remove the network first: cnmctl network rm %s", ep.IPAM, ep.Name, p.Gateway, p.Subnet, nw.Name, orNone(nw.Pools[i].Gateway), nw.Name)
		}
	}
	return nil
}

// delegatedPools are the pools of ep's addresses: each address's subnet
// by its prefix, with the gateway the plugin gave, which must be another
// address of that subnet.
func delegatedPools(ep *Endpoint) ([]Pool, error) {
	var pools []Pool
	for _, a := range ep.Addresses {
		ip, subnet, err := net.ParseCIDR(a.Address)
		if err != nil {
			return nil, fmt.Errorf("ipam %s: address %q: %w", ep.IPAM, a.Address, err)
		}
		p := Pool{Subnet: subnet.String()}
		if a.Gateway != "" {
			gw := net.ParseIP(a.Gateway)
			switch {
			case gw == nil || !subnet.Contains(gw):
				return nil, invalidConfig("ipam: %s gave endpoint %s the gateway %s, outside the subnet %s of its address %s",
					ep.IPAM, ep.Name, a.Gateway, p.Subnet, a.Address)
			case gw.Equal(ip):
				return nil, invalidConfig("ipam: %s gave endpoint %s its own address %s as its gateway", ep.IPAM, ep.Name, ip)
			}
			p.Gateway = gw.String()
		}
		if !slices.ContainsFunc(pools, func(q Pool) bool { return q.Subnet == p.Subnet }) {
			pools = append(pools, p)
		}
	}
	return pools, nil
}

func poolList(pools []Pool) string {
	var out []string
	for _, p := range pools {
		s := p.Subnet
		if p.Gateway != "" {
			s += " gateway " + p.Gateway
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// describeRemotePools names what a remote IPAM section asked for.
func describeRemotePools(rc *ipam.RemoteConfig) string {
	var out []string
	for _, p := range rc.Pools {
		switch {
		case p.Subnet != "":
			out = append(out, p.Subnet)
		case p.IPv6:
			out = append(out, "an IPv6 pool of the plugin's choice")
		default:
			out = append(out, "an IPv4 pool of the plugin's choice")
		}
	}
	if len(out) == 0 {
		return "a pool of the plugin's choice"
	}
	return strings.Join(out, ", ")
}
