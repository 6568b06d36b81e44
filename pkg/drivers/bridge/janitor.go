package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var (
	_ driverapi.Janitor          = (*Driver)(nil)
	_ driverapi.NetworkDescriber = (*Driver)(nil)
)

// NetworkOperInfo implements driverapi.NetworkDescriber.
func (d *Driver) NetworkOperInfo(nid string) (map[string]any, error) {
	n, err := d.network(nid)
	if err != nil {
		return nil, err
	}
	owned := false
	if br, err := netlink.LinkByName(n.Bridge); err == nil {
		owned = ownedBy(br, nid)
	}
	return map[string]any{
		"bridge": n.Bridge, "mtu": n.MTU, "ipMasq": n.IPMasq, "isolation": n.Isolation, "enableICC": n.ICC,
		// Whether network rm deletes the bridge (see releaseBridge).
		"bridgeOwned": owned,
	}, nil
}

// Orphans implements driverapi.Janitor: host veths cnmnet made on the
// network's bridge, published-port rules and host-port reservations of
// endpoints that are not in eids. Any other port of the bridge is not
// cnmnet's, and never listed.
func (d *Driver) Orphans(nid string, eids []string) ([]driverapi.Orphan, error) {
	n, err := d.network(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	owned := map[string]bool{}
	for _, eid := range eids {
		live[eid] = true
		host, _ := vethNames(eid)
		owned[host] = true
	}
	var out []driverapi.Orphan
	links, err := ownedPorts(n.Bridge)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if name := l.Attrs().Name; !owned[name] {
			out = append(out, driverapi.Orphan{Kind: "link", Name: name})
		}
	}
	ports, err := d.portOwners(nid)
	if err != nil {
		return nil, err
	}
	for key, eid := range ports {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: "port", Name: key})
		}
	}
	fw, err := d.firewall()
	if err != nil {
		return nil, err
	}
	published, err := fw.PublishedBy(n.firewallNetwork())
	if err != nil {
		return nil, err
	}
	for _, eid := range published {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: "rule", Name: eid})
		}
	}
	return out, nil
}

// ownedPorts lists the host veths cnmnet made that are plugged into the
// bridge (see ownedHostVeth).
func ownedPorts(bridge string) ([]netlink.Link, error) {
	br, err := netlink.LinkByName(bridge)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var ports []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && ownedHostVeth(l) {
			ports = append(ports, l)
		}
	}
	return ports, nil
}

// removeOrphanLink deletes a host veth Orphans listed, after checking
// again that it is cnmnet's and on the bridge: the list may be stale, and
// a foreign link is never deleted.
func removeOrphanLink(bridge, name string) error {
	links, err := ownedPorts(bridge)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().Name == name {
			return deleteLink(name)
		}
	}
	if _, err := netlink.LinkByName(name); err == nil {
		return fmt.Errorf("%s is not a host veth of cnmnet on bridge %s; left alone", name, bridge)
	}
	return nil // gone already
}

// portOwners maps the driver's records that hold host ports for network
// nid — "endpoints/<eid>" and "hostports/..." keys — to their endpoint.
// A host port whose endpoint has no record at all is counted in too.
func (d *Driver) portOwners(nid string) (map[string]string, error) {
	owners := map[string]string{}
	networkOf := map[string]string{}
	err := d.store.View(func(tx store.Tx) error {
		if err := tx.Scan("endpoints/", func(k string, v []byte) error {
			p := &ports{}
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("%w: bridge endpoint record %s: %v", store.ErrCorrupt, k, err)
			}
			eid := strings.TrimPrefix(k, "endpoints/")
			networkOf[eid] = p.Network
			if p.Network == nid {
				owners[k] = eid
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Scan("hostports/", func(k string, v []byte) error {
			if net, ok := networkOf[string(v)]; !ok || net == nid {
				owners[k] = string(v)
			}
			return nil
		})
	})
	return owners, err
}

// RemoveOrphans implements driverapi.Janitor. Orphan host veths are deleted,
// orphan records dropped, and the network's port rules rewritten from
// what is left, which removes orphan rules.
func (d *Driver) RemoveOrphans(nid string, orphans []driverapi.Orphan) error {
	n, err := d.network(nid)
	if err != nil {
		return err
	}
	var errs []error
	rules := false
	for _, o := range orphans {
		switch o.Kind {
		case "link":
			errs = append(errs, removeOrphanLink(n.Bridge, o.Name))
		case "port":
			errs = append(errs, d.store.Update(func(tx store.Tx) error { return tx.Delete(o.Name) }))
			rules = true
		case "rule":
			rules = true
		}
	}
	if rules {
		errs = append(errs, d.syncPorts(n))
	}
	return errors.Join(errs...)
}
