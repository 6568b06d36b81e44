package bridge

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ driverapi.NetworkUpdater = (*Driver)(nil)

// UpdateNetwork implements driverapi.NetworkUpdater, key by key. What
// the network's endpoints are built on is refused: the bridge, its
// subnets and gateways, isGateway (the endpoints' default routes go
// through the bridge's addresses), and promiscMode on a bridge cnmnet did
// not make (its owner's). The rest is applied: ipMasq, isolation and
// enableICC to the firewall (and enableICC to the ports of the endpoints
// there are), hairpinMode to every port, mtu to the bridge if cnmnet made
// it and to the veths of new endpoints, promiscMode to the bridge, and
// hostBindingIPv4 to the ports published from now on. The record is
// written last, so that a plugin killed half-way leaves it as it was and
// the next ADD applies the change again. A change holds the driver's
// host lock, as a network's creation does.
func (d *Driver) UpdateNetwork(nid string, info driverapi.NetworkInfo) (func() error, error) {
	c, err := parseConfValid(info.Config)
	if err != nil {
		return nil, err
	}
	if _, want, err := d.plan(nid, c, info); err != nil || want == nil {
		return nil, err
	}
	// A change: the record is read again, compared and written back, and
	// the host changed to match, as one step among the plugins of the
	// host. An ADD without one takes no lock, and waits for no other
	// process's firewall.
	unlock, err := hostLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur, want, err := d.plan(nid, c, info)
	if err != nil || want == nil {
		return nil, err
	}
	if err := d.applyNetwork(cur, want); err != nil {
		return nil, errors.Join(err, d.applyNetwork(want, cur))
	}
	return func() error { return d.revertNetwork(want, cur) }, nil
}

// plan returns the network's record and what the configuration c makes
// of it; want is nil when that is no change.
func (d *Driver) plan(nid string, c *netConf, info driverapi.NetworkInfo) (cur, want *network, err error) {
	cur, err = d.network(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil // Join says so; nothing to update
	}
	if err != nil {
		return nil, nil, err
	}
	if want, err = edited(cur, c, info); err != nil {
		return nil, nil, err
	}
	if reflect.DeepEqual(cur, want) {
		return cur, nil, nil
	}
	return cur, want, nil
}

// revertNetwork puts the network back from what an UpdateNetwork made it,
// applied, to what it was, prior, unless another ADD has changed it since:
// the latest change wins.
func (d *Driver) revertNetwork(applied, prior *network) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	now, err := d.network(applied.ID)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(now, applied) {
		return nil
	}
	return d.applyNetwork(applied, prior)
}

// edited returns the network cur with the configuration c, or refuses a
// key that cannot change in place.
func edited(cur *network, c *netConf, info driverapi.NetworkInfo) (*network, error) {
	refuse := func(key, has, asked string) error {
		return invalid("%s: network %s exists with %s %s, not %s; to change it remove the network first: cnmctl network rm %s",
			key, cur.Name, key, has, asked, cur.Name)
	}
	bridge := defaultBridgeName(info.Name)
	if c.Bridge != nil {
		bridge = *c.Bridge
	}
	if bridge != cur.Bridge {
		return nil, refuse("bridge", cur.Bridge, bridge)
	}
	// Without pools (delegated IPAM on a network made before the core
	// kept them) the subnets are the record's.
	if len(info.Pools) > 0 {
		subnets, gateways := poolAddrs(info.Pools)
		if !sameSet(subnets, cur.Subnets) {
			return nil, invalid("ipam.ranges: network %s exists with subnets %s, not %s; to change them remove the network first: cnmctl network rm %s",
				cur.Name, strings.Join(cur.Subnets, ", "), strings.Join(subnets, ", "), cur.Name)
		}
		if !sameSet(gateways, cur.Gateways) {
			return nil, invalid("ipam.ranges: network %s exists with gateways %s, not %s; to change them remove the network first: cnmctl network rm %s",
				cur.Name, orNone(cur.Gateways), orNone(gateways), cur.Name)
		}
	}
	if gw := orDefault(c.IsGateway, true); gw != cur.IsGateway {
		return nil, refuse("isGateway", strconv.FormatBool(cur.IsGateway), strconv.FormatBool(gw))
	}
	want := *cur
	want.IPMasq = orDefault(c.IPMasq, true)
	want.Isolation = orDefault(c.Isolation, true)
	want.ICC = orDefault(c.EnableICC, true)
	want.Hairpin = c.HairpinMode
	want.Promisc = c.PromiscMode
	want.HostBindingIPv4 = c.HostBindingIPv4
	switch {
	case c.MTU != 0:
		want.MTU, want.MTUDefault = c.MTU, false
	case !cur.MTUDefault:
		// The mtu key went: the default, as a new network would get.
		want.MTU, want.MTUDefault = defaultRouteMTU(), true
	}
	if want.Promisc != cur.Promisc && !bridgeIsOurs(cur) {
		return nil, invalid("promiscMode: network %s uses bridge %s, which cnmnet did not create: its promiscuity is its owner's, not the network's to change; "+
			"to change promiscMode remove the network first (the bridge stays): cnmctl network rm %s", cur.Name, cur.Bridge, cur.Name)
	}
	return &want, nil
}

// bridgeIsOurs reports whether the network's bridge is cnmnet's: marked as
// the network's, or gone (Join makes it again, as cnmnet's).
func bridgeIsOurs(n *network) bool {
	br, err := netlink.LinkByName(n.Bridge)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return true
	}
	return err == nil && ownedBy(br, n.ID)
}

// applyNetwork changes the network's host state from what from describes
// to what to does, then records to. A bridge that is gone is left to
// Join, which makes it again from the record.
func (d *Driver) applyNetwork(from, to *network) error {
	if from.IPMasq != to.IPMasq || from.Isolation != to.Isolation || from.ICC != to.ICC {
		if err := d.ensureFirewall(to); err != nil {
			return err
		}
	}
	br, err := netlink.LinkByName(to.Bridge)
	if err == nil && ownedBy(br, to.ID) {
		if from.MTU != to.MTU {
			if err := netlink.LinkSetMTU(br, to.MTU); err != nil {
				return fmt.Errorf("set MTU of bridge %s: %w", to.Bridge, err)
			}
		}
		if from.Promisc != to.Promisc {
			if err := setPromisc(br, to.Promisc); err != nil {
				return err
			}
		}
	}
	if from.ICC != to.ICC || from.Hairpin != to.Hairpin {
		if err := d.setPortFlags(to); err != nil {
			return err
		}
	}
	return d.putNetwork(to)
}

func setPromisc(br netlink.Link, on bool) error {
	var err error
	if on {
		err = netlink.SetPromiscOn(br)
	} else {
		err = netlink.SetPromiscOff(br)
	}
	if err != nil {
		return fmt.Errorf("set promiscuity of bridge %s: %w", br.Attrs().Name, err)
	}
	return nil
}

// setPortFlags gives the host veths of the network's endpoints the port
// flags of n: isolated unless ICC, hairpin with hairpinMode or published
// ports (as Join does).
func (d *Driver) setPortFlags(n *network) error {
	return d.eachHostVeth(n, func(l netlink.Link, hairpin bool) error {
		name := l.Attrs().Name
		var errs []error
		if err := netlink.LinkSetHairpin(l, hairpin); err != nil {
			errs = append(errs, fmt.Errorf("set hairpin of %s: %w", name, err))
		}
		if err := netlink.LinkSetIsolated(l, !n.ICC); err != nil {
			errs = append(errs, fmt.Errorf("set isolation of port %s: %w", name, err))
		}
		return errors.Join(errs...)
	})
}

// poolAddrs are the subnets and gateway addresses of pools, as the record
// keeps them.
func poolAddrs(pools []driverapi.Pool) (subnets, gateways []string) {
	for _, p := range pools {
		subnets = append(subnets, p.Subnet.String())
		if p.Gateway != nil {
			gateways = append(gateways, gatewayCIDR(p))
		}
	}
	return subnets, gateways
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}
