package overlay

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/nldump"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ driverapi.Janitor = (*Driver)(nil)

// Orphan kinds besides "link".
const (
	kindPeer      = "peer"      // a peer record naming this host
	kindNamespace = "namespace" // cnmctl is not where the network is
	kindPort      = "port"      // a host-port reservation or ports record
	kindRule      = "rule"      // a published port's rules
	kindFirewall  = "firewall"  // the network's rules, incomplete
)

// hostVethName is the pattern of the host ends vethNames makes.
var hostVethName = regexp.MustCompile(`^ovh[0-9a-f]{11}$`)

// Orphans implements driverapi.Janitor, for this host's part of network
// nid: the host veths marked as the network's whose endpoint is not in
// eids (a crash, or the endpoint taken over by another host), the peer
// records that name this host for such an endpoint, and, as a "link"
// finding naming the device, a data plane that is not whole. A link not
// marked as the network's is never listed.
func (d *Driver) Orphans(nid string, eids []string) ([]driverapi.Orphan, error) {
	h, err := d.hostNetwork(nid)
	if err != nil || h == nil {
		return nil, err // never set up here: nothing of it is here
	}
	dn, err := h.Dataplane(nid)
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, eid := range eids {
		live[eid] = true
	}
	veths, err := networkVeths(nid)
	if err != nil {
		return nil, err
	}
	var out []driverapi.Orphan
	if o, err := dataplaneFinding(dn, len(veths) > 0); err != nil || o != nil {
		if o != nil {
			out = append(out, *o)
		}
		if err != nil || o.Kind == kindNamespace {
			return out, err // not the plugins' namespace: judge nothing else
		}
	}
	for name, eid := range veths {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: "link", Name: name})
		}
	}
	peers, err := d.peersNaming(nid, h.Host)
	if err != nil {
		return nil, err
	}
	for _, eid := range peers {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: kindPeer, Name: records.PeerKey(nid, eid)})
		}
	}
	fw, err := d.firewallFindings(nid, h, live)
	return append(out, fw...), err
}

// firewallFindings lists the host-port reservations and the published
// port rules of endpoints not in live, and, as one "firewall" finding,
// what the network's rules lack (what a firewall reload removes). A
// network that neither masquerades, isolates nor publishes a port has no
// rules to judge, and needs no iptables.
func (d *Driver) firewallFindings(nid string, h *records.HostNetwork, live map[string]bool) ([]driverapi.Orphan, error) {
	var out []driverapi.Orphan
	owners, err := d.ports().Owners(nid)
	if err != nil {
		return nil, err
	}
	for key, eid := range owners {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: kindPort, Name: key})
		}
	}
	mappings, err := d.ports().Network(nid)
	if err != nil {
		return nil, err
	}
	if !h.IPMasq && !h.Isolation && len(mappings) == 0 && len(out) == 0 {
		return nil, nil
	}
	fw, err := d.firewall()
	if err != nil {
		return nil, err
	}
	var cerr *firewall.CheckError
	if err := fw.CheckMissing(h.Firewall(), mappings); errors.As(err, &cerr) {
		out = append(out, driverapi.Orphan{Kind: kindFirewall, Name: "iptables", Problem: strings.Join(cerr.Problems, "; ")})
	} else if err != nil {
		return nil, err
	}
	published, err := fw.PublishedBy(h.Firewall())
	if err != nil {
		return nil, err
	}
	for _, eid := range published {
		if !live[eid] {
			out = append(out, driverapi.Orphan{Kind: kindRule, Name: eid})
		}
	}
	return out, nil
}

// dataplaneFinding says what is wrong with the network's bridge and
// VXLAN device here, nil when nothing. Both gone and no veth of the
// network here: this may be another namespace than the plugins', and
// nothing is made.
func dataplaneFinding(dn dataplane.Network, veths bool) (*driverapi.Orphan, error) {
	problem := dataplane.Check(dn)
	if problem == nil {
		return nil, nil
	}
	br, err := present(dn.Bridge)
	if err != nil {
		return nil, err
	}
	vx, err := present(dn.VXLAN)
	if err != nil {
		return nil, err
	}
	if !br && !vx && !veths {
		return &driverapi.Orphan{Kind: kindNamespace, Name: dn.Bridge,
			Problem: "the network's bridge and VXLAN device are not in this network namespace: deleted, or cnmctl runs in another namespace than the plugins (the node's); the next ADD makes them again"}, nil
	}
	name := dn.VXLAN
	if !br {
		name = dn.Bridge
	}
	return &driverapi.Orphan{Kind: "link", Name: name,
		Problem: problem.Error() + "; --repair makes the network's data plane again"}, nil
}

func present(name string) (bool, error) {
	_, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find %s: %w", name, err)
	}
	return true, nil
}

// networkVeths maps the host veths here that are cnmnet's for network
// nid — named as vethNames names them and marked "cnmnet:<eid>/<nid>"
// with that endpoint — to their endpoint.
func networkVeths(nid string) (map[string]string, error) {
	links, err := nldump.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]string{}
	for _, l := range links {
		if eid, ok := vethOf(l, nid); ok {
			out[l.Attrs().Name] = eid
		}
	}
	return out, nil
}

// vethOf returns the endpoint of link when it is a host veth cnmnet made
// for an endpoint of network nid.
func vethOf(l netlink.Link, nid string) (string, bool) {
	name := l.Attrs().Name
	if l.Type() != "veth" || !hostVethName.MatchString(name) {
		return "", false
	}
	rest, ok := strings.CutPrefix(l.Attrs().Alias, "cnmnet:")
	if !ok {
		return "", false
	}
	eid, net, ok := strings.Cut(rest, "/")
	if !ok || net != nid || len(eid) < 11 || l.Attrs().Alias != vethOwner(eid, nid) {
		return "", false
	}
	if host, _ := vethNames(eid); host != name {
		return "", false
	}
	return eid, true
}

// peersNaming lists the endpoints of network nid whose peer record names
// host.
func (d *Driver) peersNaming(nid, host string) ([]string, error) {
	var out []string
	err := d.store.View(func(tx store.Tx) error {
		return tx.Scan(records.PeerPrefix(nid), func(k string, v []byte) error {
			p := &records.Peer{}
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("%w: overlay peer %s: %v", store.ErrCorrupt, k, err)
			}
			if p.Host == host {
				out = append(out, strings.TrimPrefix(k, records.PeerPrefix(nid)))
			}
			return nil
		})
	})
	return out, err
}

// RemoveOrphans implements driverapi.Janitor, under the host lock:
// orphan veths are deleted after checking again that they are the
// network's, peer records dropped when they still name this host, and a
// data plane that is not whole made again from this host's record, with
// its peers.
func (d *Driver) RemoveOrphans(nid string, orphans []driverapi.Orphan) error {
	h, err := d.hostNetwork(nid)
	if err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("overlay network %s has no host state here", nid)
	}
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	rules := false
	for _, o := range orphans {
		switch {
		case o.Kind == "link" && (o.Name == h.Bridge || o.Name == h.VXLAN):
			errs = append(errs, d.setUpHost(nid, h))
			rules = true
		case o.Kind == "link":
			errs = append(errs, removeOrphanVeth(nid, o.Name))
		case o.Kind == kindPeer:
			errs = append(errs, d.removeOrphanPeer(nid, h.Host, o.Name))
		case o.Kind == kindPort:
			errs = append(errs, d.ports().Drop(o.Name))
			rules = true
		case o.Kind == kindRule:
			rules = true
		case o.Kind == kindFirewall:
			errs = append(errs, d.ensureFirewall(h))
			rules = true
		case o.Kind == kindNamespace:
			// Not made here: this may not be the plugins' namespace.
			errs = append(errs, fmt.Errorf("overlay network %s: not repaired: %s", h.Name, o.Problem))
		}
	}
	if rules {
		// Rewritten from the records left: orphan rules go, missing
		// ones come back.
		errs = append(errs, d.syncPortsLocked(nid, h))
	}
	return errors.Join(errs...)
}

// removeOrphanVeth deletes a host veth Orphans listed, after checking
// again that it is the network's: the list may be stale, and a foreign
// link is never deleted.
func removeOrphanVeth(nid, name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if _, ok := vethOf(l, nid); !ok {
		return fmt.Errorf("%s is not a host veth of overlay network %s; left alone", name, nid)
	}
	return endpointkit.DeleteLink(name)
}

// removeOrphanPeer deletes peer record key if it still names host: one
// naming another host is the endpoint's new place.
func (d *Driver) removeOrphanPeer(nid, host, key string) error {
	if !strings.HasPrefix(key, records.PeerPrefix(nid)) {
		return fmt.Errorf("%s is not a peer record of overlay network %s", key, nid)
	}
	err := d.withdraw(nid, strings.TrimPrefix(key, records.PeerPrefix(nid)), host)
	if err != nil {
		return fmt.Errorf("remove overlay peer record %s: %w", key, err)
	}
	return nil
}

var _ driverapi.NetworkDescriber = (*Driver)(nil)

// NetworkOperInfo implements driverapi.NetworkDescriber: the network's
// part on this host as cnmctl network inspect shows it, under the keys
// that set it, with the devices, the VTEP and how many endpoints of
// other hosts this host forwards to. Empty when the network has no state
// here.
func (d *Driver) NetworkOperInfo(nid string) (map[string]any, error) {
	h, err := d.hostNetwork(nid)
	if err != nil || h == nil {
		return map[string]any{}, err
	}
	info := map[string]any{
		"vni": h.VNI, "vxlanPort": h.Port, "mtu": h.MTU, "ipMasq": h.IPMasq, "isolation": h.Isolation,
		"underlayInterface": h.Underlay, "underlayAddress": h.LocalIP,
		"bridge": h.Bridge, "vxlan": h.VXLAN, "host": h.Host, "subnets": h.Subnets,
	}
	dn, err := h.Dataplane(nid)
	if err != nil {
		return nil, err
	}
	// Read in the namespace cnmctl runs in: when it is not the
	// plugins', the forwarding entries are not to be found.
	if peers, err := dataplane.Peers(dn); err == nil {
		info["remoteEndpointsProgrammed"] = len(peers)
	}
	return info, nil
}
