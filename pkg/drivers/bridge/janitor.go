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
	return map[string]any{
		"bridge": n.Bridge, "mtu": n.MTU, "ipMasq": n.IPMasq, "isolation": n.Isolation, "enableICC": n.ICC,
	}, nil
}

// Orphans implements driverapi.Janitor: veths on the network's bridge,
// published-port rules and host-port reservations of endpoints that are
// not in eids.
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
	links, err := bridgePorts(n.Bridge)
	if err != nil {
		return nil, err
	}
	for _, name := range links {
		if !owned[name] {
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

// bridgePorts lists the names of the links plugged into the bridge.
func bridgePorts(bridge string) ([]string, error) {
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
	var names []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
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

// RemoveOrphans implements driverapi.Janitor. Orphan links are deleted,
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
			errs = append(errs, deleteLink(o.Name))
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
