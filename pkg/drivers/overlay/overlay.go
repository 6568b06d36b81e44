package overlay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// firstAutoVNI is where allocation starts: the VNIs below are left to
// operators who choose them.
const firstAutoVNI = 4096

// Driver is the overlay driver of one plugin invocation.
type Driver struct {
	store     store.Store // the driver's cluster-wide space
	hostStore store.Store // this host's part of it
	fw        *firewall.Firewall
	// vteps are the underlays resolved in this invocation, by the keys
	// that chose them: an ADD checks the configuration, then applies it.
	vteps map[underlayChoice]vtep
}

// underlayChoice is what a configuration says of its underlay.
type underlayChoice struct{ iface, address string }

// vtep is an underlay as resolved: its interface and address.
type vtep struct {
	iface string
	ip    net.IP
}

// underlay resolves c's underlay once per invocation (netConf.underlay).
func (d *Driver) underlay(c *netConf) (string, net.IP, error) {
	key := underlayChoice{c.UnderlayInterface, c.UnderlayAddress}
	if v, ok := d.vteps[key]; ok {
		return v.iface, v.ip, nil
	}
	iface, ip, err := c.underlay()
	if err != nil {
		return "", nil, err
	}
	if d.vteps == nil {
		d.vteps = map[underlayChoice]vtep{}
	}
	d.vteps[key] = vtep{iface, ip}
	return iface, ip, nil
}

var (
	_ driverapi.Driver         = (*Driver)(nil)
	_ driverapi.Checker        = (*Driver)(nil)
	_ driverapi.StatusReporter = (*Driver)(nil)
)

// Register registers the overlay driver with r, at global scope.
func Register(r driverapi.Registerer) error {
	d := &Driver{store: r.DriverStore(records.NetworkType), hostStore: r.DriverHostStore(records.NetworkType)}
	return r.RegisterDriver(records.NetworkType, d, driverapi.Capability{Scope: driverapi.GlobalScope})
}

// Type implements driverapi.Driver.
func (d *Driver) Type() string { return records.NetworkType }

func (d *Driver) firewall() (*firewall.Firewall, error) {
	if d.fw == nil {
		fw, err := firewall.New()
		if err != nil {
			return nil, err
		}
		d.fw = fw
	}
	return d.fw, nil
}

// hostName is this host's name in the cluster store, as the core
// resolves it: the configuration's "host", else the machine's hostname.
func hostName(raw []byte) (string, error) {
	var c struct {
		Host string `json:"host"`
	}
	_ = json.Unmarshal(raw, &c) // the core has validated the key
	if c.Host != "" {
		return c.Host, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("host name: %w", err)
	}
	return h, nil
}

// checkClusterKeys refuses a VNI held by another network, and a VNI or
// port other than those recorded for the network of the configuration's
// name.
func (d *Driver) checkClusterKeys(c *netConf) error {
	return d.store.View(func(tx store.Tx) error {
		mine, err := networkNamed(tx, c.Name)
		if err != nil {
			return err
		}
		if mine != nil {
			return checkRecorded(mine, c)
		}
		if c.VNI == nil {
			return nil
		}
		return checkVNIFree(tx, uint32(*c.VNI), "")
	})
}

// networkNamed is the cluster record of the network called name, nil
// when there is none: by its name's index, else (a network recorded
// before the index, or none) by a scan of the records.
func networkNamed(tx store.Tx, name string) (*records.Network, error) {
	nid, err := tx.Get(records.NameKey(name))
	switch {
	case err == nil:
		n := &records.Network{}
		if err := store.GetJSON(tx, records.NetworkKey(string(nid)), n); err == nil && n.Name == name {
			return n, nil
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	var mine *records.Network
	err = tx.Scan(records.NetworkKey(""), func(_ string, v []byte) error {
		n := &records.Network{}
		if json.Unmarshal(v, n) == nil && n.Name == name {
			mine = n
		}
		return nil
	})
	return mine, err
}

// checkRecorded refuses keys that differ from the network's record: a
// VXLAN network's VNI and port are the same on every host.
func checkRecorded(n *records.Network, c *netConf) error {
	if c.VNI != nil && uint32(*c.VNI) != n.VNI {
		return invalid("vni: network %s has VNI %d on every host; it cannot change (remove the network to give it another)", n.Name, n.VNI)
	}
	if c.port() != n.Port {
		return invalid("vxlanPort: network %s uses port %d on every host; it cannot change (remove the network to give it another)", n.Name, n.Port)
	}
	return nil
}

// checkVNIFree refuses vni when a network other than nid holds it.
func checkVNIFree(tx store.Tx, vni uint32, nid string) error {
	holder, err := tx.Get(records.VNIKey(vni))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if string(holder) == nid {
		return nil
	}
	name := "with ID " + string(holder)
	n := &records.Network{}
	if store.GetJSON(tx, records.NetworkKey(string(holder)), n) == nil && n.Name != "" {
		name = n.Name
	}
	return invalid("vni: %d is taken by network %s", vni, name)
}

// allocateVNI returns the lowest VNI from firstAutoVNI that no network holds.
func allocateVNI(tx store.Tx) (uint32, error) {
	taken := map[uint32]bool{}
	err := tx.Scan("vnis/", func(k string, _ []byte) error {
		if v, err := strconv.ParseUint(strings.TrimPrefix(k, "vnis/"), 10, 32); err == nil {
			taken[uint32(v)] = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for v := uint32(firstAutoVNI); v <= dataplane.MaxVNI; v++ {
		if !taken[v] {
			return v, nil
		}
	}
	return 0, types.NewError(driverapi.CodePoolExhausted, "vni: no free VNI left", "")
}

// recordNetwork reads network nid's cluster record, or makes it with its
// VNI in one transaction. created says this call made it.
func (d *Driver) recordNetwork(nid string, info driverapi.NetworkInfo, c *netConf) (n *records.Network, created bool, err error) {
	err = d.store.Update(func(tx store.Tx) error {
		n, created = &records.Network{}, false
		err := store.GetJSON(tx, records.NetworkKey(nid), n)
		if err == nil {
			return checkRecorded(n, c)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n = &records.Network{ID: nid, Name: info.Name, Port: c.port()}
		for _, p := range info.Pools {
			n.Subnets = append(n.Subnets, p.Subnet.String())
			if p.Gateway != nil {
				n.Gateways = append(n.Gateways, (&net.IPNet{IP: p.Gateway, Mask: p.Subnet.Mask}).String())
			}
		}
		if c.VNI != nil {
			n.VNI = uint32(*c.VNI)
			if err := checkVNIFree(tx, n.VNI, nid); err != nil {
				return err
			}
		} else if n.VNI, err = allocateVNI(tx); err != nil {
			return err
		}
		if err := tx.Put(records.VNIKey(n.VNI), []byte(nid)); err != nil {
			return err
		}
		if err := tx.Put(records.NameKey(info.Name), []byte(nid)); err != nil {
			return err
		}
		created = true
		return store.PutJSON(tx, records.NetworkKey(nid), n)
	})
	if err != nil {
		return nil, false, fmt.Errorf("record overlay network %s: %w", info.Name, err)
	}
	return n, created, nil
}

// planHost is this host's part of network n as the configuration asks.
func (d *Driver) planHost(n *records.Network, c *netConf, host string) (*records.HostNetwork, error) {
	iface, ip, err := d.underlay(c)
	if err != nil {
		return nil, err
	}
	br, vx := dataplane.Names(n.ID)
	h := &records.HostNetwork{Bridge: br, VXLAN: vx, Underlay: iface, LocalIP: ip.String(), MTU: c.MTU,
		Host: host, Name: n.Name, VNI: n.VNI, Port: n.Port, Subnets: n.Subnets, Gateways: n.Gateways,
		IPMasq: orDefault(c.IPMasq, true), Isolation: orDefault(c.Isolation, true)}
	dn, err := h.Dataplane(n.ID)
	if err != nil {
		return nil, err
	}
	if h.MTU, err = dataplane.EffectiveMTU(dn); err != nil {
		return nil, dataplaneError(err)
	}
	return h, nil
}

// dataplaneError makes a bad value or a conflict on this host a CNI
// error 7: the configuration is what has to change.
func dataplaneError(err error) error {
	if errors.Is(err, dataplane.ErrInvalid) || errors.Is(err, dataplane.ErrConflict) {
		return invalid("%v", err)
	}
	return err
}

// CreateNetwork implements driverapi.Driver, on each host's first ADD of
// the network: the cluster record with its VNI (made by the first host),
// this host's record, bridge, VXLAN device and firewall rules, and the
// forwarding entries of every endpoint joined on other hosts. A failure
// removes what this call made.
func (d *Driver) CreateNetwork(nid string, info driverapi.NetworkInfo) (err error) {
	c, err := parseConf(info.Config)
	if err != nil {
		return err
	}
	host, err := hostName(info.Config)
	if err != nil {
		return err
	}
	n, created, err := d.recordNetwork(nid, info, c)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			_ = d.forgetNetwork(nid, n.VNI) // best effort: err says what failed
		}
	}()
	h, err := d.planHost(n, c, host)
	if err != nil {
		return err
	}
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.putHostNetwork(nid, h); err != nil {
		return err
	}
	if err := d.setUpHost(nid, h); err != nil {
		_ = d.tearDownHost(nid, h)
		_ = d.hostStore.Update(func(tx store.Tx) error { return tx.Delete(records.HostNetworkKey(nid)) })
		return err
	}
	return nil
}

// setUpHost makes the network's data plane here (with the endpoints'
// veths plugged back when it is made anew) and its firewall rules (the
// published ports included), and programs the network's remote peers.
// The caller holds the host lock.
func (d *Driver) setUpHost(nid string, h *records.HostNetwork) error {
	dn, err := h.Dataplane(nid)
	if err != nil {
		return err
	}
	if err := dataplane.Ensure(dn); err != nil {
		return dataplaneError(err)
	}
	if err := d.replugVeths(nid, dn.Bridge); err != nil {
		return err
	}
	if err := enableForwarding(h); err != nil {
		return err
	}
	if h.IPMasq || h.Isolation {
		if err := d.ensureFirewall(h); err != nil {
			return err
		}
	}
	if err := d.republish(nid, h); err != nil {
		return err
	}
	return d.reconcilePeers(nid, h, dn)
}

// republish writes the ports the network's endpoints here publish, if
// any: a bridge made anew has lost its route_localnet.
func (d *Driver) republish(nid string, h *records.HostNetwork) error {
	mappings, err := d.ports().Network(nid)
	if err != nil || len(mappings) == 0 {
		return err
	}
	return d.syncPortsLocked(nid, h)
}

// replugVeths puts the host veths of the network's endpoints here back
// on its bridge, as Join made them (hairpin when the endpoint publishes
// ports): a bridge deleted by hand let go of them, and the one Ensure
// made anew has none.
func (d *Driver) replugVeths(nid, bridge string) error {
	veths, err := networkVeths(nid)
	if err != nil || len(veths) == 0 {
		return err
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	var errs []error
	for name, eid := range veths {
		l, err := netlink.LinkByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("find %s: %w", name, err))
			continue
		}
		if l.Attrs().MasterIndex == br.Attrs().Index {
			continue
		}
		r, err := d.ports().Of(eid)
		if err == nil {
			err = netlink.LinkSetMaster(l, br)
		}
		if err == nil && len(r.Ports) > 0 {
			err = netlink.LinkSetHairpin(l, true)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("plug %s into bridge %s: %w", name, bridge, err))
		}
	}
	return errors.Join(errs...)
}

// ensureFirewall writes the network's rules here, the shared chains and
// the jumps where they are missing.
func (d *Driver) ensureFirewall(h *records.HostNetwork) error {
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	if err := fw.EnsureNetwork(h.Firewall()); err != nil {
		return fmt.Errorf("firewall of overlay network %s: %w", h.Name, err)
	}
	return nil
}

// reconcilePeers programs exactly the network's endpoints joined on
// other hosts, as the cluster store has them now.
func (d *Driver) reconcilePeers(nid string, h *records.HostNetwork, dn dataplane.Network) error {
	peers, err := d.remotePeers(nid, h.Host)
	if err != nil {
		return err
	}
	if _, _, err := dataplane.Reconcile(dn, peers); err != nil {
		return fmt.Errorf("program the peers of overlay network %s: %w", h.Name, err)
	}
	return nil
}

// remotePeers are network nid's endpoints joined on hosts other than host.
func (d *Driver) remotePeers(nid, host string) ([]dataplane.Peer, error) {
	var out []dataplane.Peer
	err := d.store.View(func(tx store.Tx) error {
		return tx.Scan(records.PeerPrefix(nid), func(k string, v []byte) error {
			p := &records.Peer{}
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("%w: overlay peer %s: %v", store.ErrCorrupt, k, err)
			}
			if dp, ok := toDataplanePeer(p); ok && p.Host != host {
				out = append(out, dp)
			}
			return nil
		})
	})
	return out, err
}

// toDataplanePeer converts a record; ok is false for one that cannot be
// programmed (no MAC or VTEP), which is skipped rather than failing the
// network.
func toDataplanePeer(p *records.Peer) (dataplane.Peer, bool) {
	mac, err := net.ParseMAC(p.MAC)
	vtep := net.ParseIP(p.VTEP)
	if err != nil || vtep == nil {
		return dataplane.Peer{}, false
	}
	return dataplane.Peer{MAC: mac, IPs: p.ParseIPs(), VTEP: vtep}, true
}

// tearDownHost removes the network's firewall rules and data plane here.
func (d *Driver) tearDownHost(nid string, h *records.HostNetwork) error {
	return RemoveHostState(nid, h, d.firewall)
}

// RemoveHostState removes network nid's firewall rules and links on this
// host, as its record h describes them: the plugin's DeleteNetwork, and
// cnm-overlayd for a network deleted on another host. Without iptables
// only a network that masquerades or isolates fails: one without either
// has rules only once an endpoint published a port.
func RemoveHostState(nid string, h *records.HostNetwork, openFirewall func() (*firewall.Firewall, error)) error {
	var errs []error
	if fw, err := openFirewall(); err != nil {
		if h.IPMasq || h.Isolation {
			errs = append(errs, err)
		}
	} else if err := fw.RemoveNetwork(h.Firewall()); err != nil {
		errs = append(errs, err)
	}
	dn, err := h.Dataplane(nid)
	if err == nil {
		err = dataplane.Remove(dn)
	}
	return errors.Join(append(errs, err)...)
}

func (d *Driver) putHostNetwork(nid string, h *records.HostNetwork) error {
	err := d.hostStore.Update(func(tx store.Tx) error { return store.PutJSON(tx, records.HostNetworkKey(nid), h) })
	if err != nil {
		return fmt.Errorf("record overlay network %s on this host: %w", h.Name, err)
	}
	return nil
}

// hostNetwork is this host's record of network nid, nil when it has none.
func (d *Driver) hostNetwork(nid string) (*records.HostNetwork, error) {
	h := &records.HostNetwork{}
	err := d.hostStore.View(func(tx store.Tx) error { return store.GetJSON(tx, records.HostNetworkKey(nid), h) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("overlay network %s on this host: %w", nid, err)
	}
	return h, nil
}

// forgetNetwork removes network nid's cluster records: the network, its
// VNI (when still its own) and its peers.
func (d *Driver) forgetNetwork(nid string, vni uint32) error {
	return d.store.Update(func(tx store.Tx) error {
		var keys []string
		if err := tx.Scan(records.PeerPrefix(nid), func(k string, _ []byte) error {
			keys = append(keys, k)
			return nil
		}); err != nil {
			return err
		}
		n := &records.Network{}
		if err := store.GetJSON(tx, records.NetworkKey(nid), n); err == nil {
			vni = n.VNI
		}
		if holder, err := tx.Get(records.VNIKey(vni)); err == nil && string(holder) == nid {
			keys = append(keys, records.VNIKey(vni))
		}
		if n.Name != "" {
			if holder, err := tx.Get(records.NameKey(n.Name)); err == nil && string(holder) == nid {
				keys = append(keys, records.NameKey(n.Name))
			}
		}
		keys = append(keys, records.NetworkKey(nid))
		for _, k := range keys {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteNetwork implements driverapi.Driver, when the network is
// removed: this host's data plane, firewall rules and record, then the
// network's cluster records and VNI. What other hosts made for it stays
// on them (their daemon's to remove).
func (d *Driver) DeleteNetwork(nid string) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	h, err := d.hostNetwork(nid)
	if err == nil && h != nil {
		err = d.tearDownHost(nid, h)
		if err == nil {
			err = d.hostStore.Update(func(tx store.Tx) error { return tx.Delete(records.HostNetworkKey(nid)) })
		}
	}
	unlock()
	if err != nil {
		return err
	}
	return d.forgetNetwork(nid, 0)
}

// enableForwarding turns on forwarding in this namespace: the endpoints
// reach the outside through it.
func enableForwarding(h *records.HostNetwork) error {
	settings := []string{"net/ipv4/ip_forward"}
	for _, s := range h.Subnets {
		if ip, _, err := net.ParseCIDR(s); err == nil && ip.To4() == nil {
			settings = append(settings, "net/ipv6/conf/all/forwarding")
			break
		}
	}
	for _, key := range settings {
		path := filepath.Join("/proc/sys", key)
		if cur, err := os.ReadFile(path); err == nil && string(cur) == "1\n" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=1: %w", key, err)
		}
	}
	return nil
}

// Status implements driverapi.StatusReporter: a network that masquerades
// or isolates needs iptables.
func (d *Driver) Status(driverapi.NetworkInfo) error {
	_, err := d.firewall()
	return err
}
