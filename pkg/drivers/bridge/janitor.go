package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/nldump"
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
	// The configuration in force, under the keys that set it.
	info := map[string]any{
		"bridge": n.Bridge, "mtu": n.MTU, "isGateway": n.IsGateway, "ipMasq": n.IPMasq, "isolation": n.Isolation,
		"enableICC": n.ICC, "hairpinMode": n.Hairpin, "promiscMode": n.Promisc, "subnets": n.Subnets,
		// Whether network rm deletes the bridge (see releaseBridge).
		"bridgeOwned": owned,
	}
	if n.HostBindingIPv4 != "" {
		info["hostBindingIPv4"] = n.HostBindingIPv4
	}
	return info, nil
}

// Orphans implements driverapi.Janitor: host veths cnmnet made on the
// network's bridge, published-port rules and host-port reservations of
// endpoints that are not in eids, and, as one "firewall" finding, what
// the network's firewall lacks (a jump from a built-in chain, a chain, a
// rule: what a firewall reload removes). Any other port of the bridge is
// not cnmnet's, and never listed.
func (d *Driver) Orphans(nid string, eids []string) ([]driverapi.Orphan, error) {
	n, err := d.network(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if missing, err := d.bridgeMissing(n, eids); err != nil || missing != nil {
		// Without the bridge nothing else of the network can be judged.
		return missing, err
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
	ports, err := d.ports().Owners(nid)
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
	mappings, err := d.ports().Network(nid)
	if err != nil {
		return nil, err
	}
	var cerr *firewall.CheckError
	if err := fw.CheckMissing(n.firewallNetwork(), mappings); errors.As(err, &cerr) {
		out = append(out, driverapi.Orphan{Kind: kindFirewall, Name: "iptables",
			Problem: strings.Join(cerr.Problems, "; ")})
	} else if err != nil {
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
	links, err := nldump.LinkList()
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
			return endpointkit.DeleteLink(name)
		}
	}
	if _, err := netlink.LinkByName(name); err == nil {
		return fmt.Errorf("%s is not a host veth of cnmnet on bridge %s; left alone", name, bridge)
	}
	return nil // gone already
}

// bridgeMissing reports a network whose bridge is not in this network
// namespace. When an endpoint's host veth is here, the bridge was deleted
// by hand: --repair makes it again and plugs the veths back, as the next
// ADD would. When none is (and no other bridge network's bridge is), this
// may as well be another namespace than the plugins': nothing is made
// here, and the finding says so.
func (d *Driver) bridgeMissing(n *network, eids []string) ([]driverapi.Orphan, error) {
	if _, err := netlink.LinkByName(n.Bridge); err == nil {
		return nil, nil
	} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	for _, eid := range eids {
		host, _ := vethNames(eid)
		if _, err := netlink.LinkByName(host); err == nil {
			return []driverapi.Orphan{{Kind: kindBridge, Name: n.Bridge,
				Problem: "the network's bridge is gone (deleted by hand?); --repair makes it again and plugs its endpoints back"}}, nil
		}
	}
	problem := "the network's bridge is not in this network namespace: deleted, or cnmctl runs in another namespace than the plugins (the node's); the next ADD makes it again"
	if other, err := d.anyBridgeHere(); err != nil {
		return nil, err
	} else if !other {
		problem = "no bridge of any cnm-bridge network is in this network namespace: run cnmctl where the plugins run (the node's), or ADD makes them again"
	}
	return []driverapi.Orphan{{Kind: kindNamespace, Name: n.Bridge, Problem: problem}}, nil
}

// anyBridgeHere reports whether a bridge of one of the driver's networks
// is in the calling thread's network namespace.
func (d *Driver) anyBridgeHere() (bool, error) {
	found := false
	err := d.store.View(func(tx store.Tx) error {
		return tx.Scan("networks/", func(_ string, v []byte) error {
			other := &network{}
			if err := json.Unmarshal(v, other); err != nil {
				return fmt.Errorf("%w: bridge network record: %v", store.ErrCorrupt, err)
			}
			if _, err := netlink.LinkByName(other.Bridge); err == nil {
				found = true
			}
			return nil
		})
	})
	return found, err
}

// Orphan kinds of network-level host state.
const (
	kindBridge    = "bridge"    // the network's bridge is gone
	kindNamespace = "namespace" // cnmctl is not where the networks are
)

// kindFirewall is the Orphan kind of a network's missing firewall rules.
const kindFirewall = "firewall"

// RemoveOrphans implements driverapi.Janitor. Orphan host veths are deleted,
// orphan records dropped, and the network's port rules rewritten from
// what is left, which removes orphan rules; missing firewall rules are
// put back (EnsureNetwork, then the ports).
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
			errs = append(errs, d.ports().Drop(o.Name))
			rules = true
		case "rule":
			rules = true
		case kindFirewall:
			errs = append(errs, d.ensureFirewall(n))
			rules = true
		case kindBridge:
			errs = append(errs, d.repairNetwork(n))
		case kindNamespace:
			// Not made here: this may not be the plugins' namespace.
			errs = append(errs, fmt.Errorf("network %s: not repaired: %s", n.Name, o.Problem))
		}
	}
	if rules {
		errs = append(errs, d.syncPorts(n))
	}
	return errors.Join(errs...)
}

// ensureFirewall writes the network's rules, the shared chains and the
// jumps where they are missing.
func (d *Driver) ensureFirewall(n *network) error {
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	if err := fw.EnsureNetwork(n.firewallNetwork()); err != nil {
		return fmt.Errorf("firewall of network %s: %w", n.Name, err)
	}
	return nil
}
