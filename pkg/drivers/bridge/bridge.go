package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/nldump"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// NetworkType is the CNI "type" the bridge driver serves.
const NetworkType = "cnm-bridge"

// Driver is the bridge driver of one plugin invocation.
type Driver struct {
	store store.Store
	// fw is made on first use: DEL of an endpoint without published
	// ports must work on a host without iptables.
	fw    firewaller
	fwErr error
}

// firewaller is what the driver needs of package firewall.
type firewaller interface {
	EnsureNetwork(firewall.Network) error
	SetPorts(firewall.Network, []firewall.PortMapping) error
	RemoveNetwork(firewall.Network) error
	Check(firewall.Network, []firewall.PortMapping) error
	CheckMissing(firewall.Network, []firewall.PortMapping) error
	PublishedBy(firewall.Network) ([]string, error)
	ForgetFlows([]firewall.PortMapping) error
}

var (
	_ driverapi.Driver          = (*Driver)(nil)
	_ driverapi.Checker         = (*Driver)(nil)
	_ driverapi.StatusReporter  = (*Driver)(nil)
	_ driverapi.ConfigValidator = (*Driver)(nil)
)

// Register registers the bridge driver with r.
func Register(r driverapi.Registerer) error {
	d := &Driver{store: r.DriverStore(NetworkType)}
	return r.RegisterDriver(NetworkType, d, driverapi.Capability{Scope: driverapi.LocalScope})
}

// Type implements driverapi.Driver.
func (d *Driver) Type() string { return NetworkType }

// firewall returns the driver's firewall, or why there is none: a
// plain error naming the binary missing from PATH, which the core
// answers with 999 for ADD, DEL and CHECK. STATUS answers 50 for it, as
// for every driver status error: "cannot serve an ADD" is what 50 means,
// and only STATUS asks that.
func (d *Driver) firewall() (firewaller, error) {
	if d.fw == nil && d.fwErr == nil {
		d.fw, d.fwErr = firewall.New()
		if d.fwErr != nil {
			d.fw = nil
		}
	}
	return d.fw, d.fwErr
}

// network is what the driver keeps of a network.
type network struct {
	ID              string   `json:"id"`
	Name            string   `json:"name"`
	Bridge          string   `json:"bridge"`
	MTU             int      `json:"mtu"`
	Subnets         []string `json:"subnets"`
	Gateways        []string `json:"gateways,omitempty"`
	IsGateway       bool     `json:"isGateway"`
	IPMasq          bool     `json:"ipMasq"`
	Isolation       bool     `json:"isolation"`
	ICC             bool     `json:"icc"`
	Hairpin         bool     `json:"hairpin"`
	Promisc         bool     `json:"promisc"`
	HostBindingIPv4 string   `json:"hostBindingIPv4,omitempty"`
	// MTUDefault: no mtu key gave MTU, the host's when the network was
	// made; it is kept until a configuration names one.
	MTUDefault bool `json:"mtuDefault,omitempty"`
	// Origin is originCreated or originAdopted; "" in a record written
	// before ownership was tracked. Whether the bridge is deleted goes by
	// its alias all the same (see releaseBridge).
	Origin string `json:"origin,omitempty"`
	// AddedAddrs are the gateway addresses cnmnet put on an adopted
	// bridge: the only ones it removes from it. Those the bridge had
	// before are its owner's.
	AddedAddrs []string `json:"addedAddrs,omitempty"`
	// MAC is the MAC cnmnet pinned on the bridge it made (see
	// keepBridgeMAC); "" for an adopted bridge, and for one made before
	// cnmnet pinned it, until its next Join.
	MAC string `json:"mac,omitempty"`
}

func networkKey(nid string) string { return "networks/" + nid }

func (n *network) firewallNetwork() firewall.Network {
	fn := firewall.Network{Name: n.Name, Bridge: n.Bridge, IPMasq: n.IPMasq, Isolation: n.Isolation, ICC: n.ICC}
	for _, s := range n.Subnets {
		if _, sn, err := net.ParseCIDR(s); err == nil {
			fn.Subnets = append(fn.Subnets, sn)
		}
	}
	return fn
}

func (n *network) hasIPv6() bool {
	for _, s := range n.Subnets {
		if ip, _, err := net.ParseCIDR(s); err == nil && ip.To4() == nil {
			return true
		}
	}
	return false
}

func (d *Driver) putNetwork(n *network) error {
	if err := d.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, networkKey(n.ID), n) }); err != nil {
		return fmt.Errorf("record bridge network %s: %w", n.Name, err)
	}
	return nil
}

func (d *Driver) network(nid string) (*network, error) {
	n := &network{}
	err := d.store.View(func(tx store.Tx) error { return store.GetJSON(tx, networkKey(nid), n) })
	if err != nil {
		return nil, fmt.Errorf("bridge network %s: %w", nid, err)
	}
	return n, nil
}

// defaultBridgeName derives a stable name of at most 15 characters from
// the network name.
func defaultBridgeName(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "cnm-" + hex.EncodeToString(sum[:])[:11]
}

// CreateNetwork implements driverapi.Driver: the bridge, its gateway
// addresses, forwarding, and the network's firewall rules. It is
// idempotent, and a failure leaves nothing it created behind; a bridge
// that existed before is used, never deleted.
func (d *Driver) CreateNetwork(nid string, info driverapi.NetworkInfo) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := d.planNetwork(nid, info)
	if err != nil {
		return err
	}
	// An earlier call that did not finish may have added addresses to an
	// adopted bridge: they are still cnmnet's to remove.
	if prev, err := d.network(nid); err == nil && prev.Bridge == n.Bridge {
		n.AddedAddrs = prev.AddedAddrs
	}
	if err := d.putNetwork(n); err != nil {
		return err
	}
	if err := d.setUpHost(n); err != nil {
		// Undo, best effort: the network is not ready, so nothing uses
		// it. As in DeleteNetwork, only what cnmnet made goes.
		if fw, ferr := d.firewall(); ferr == nil {
			_ = fw.RemoveNetwork(n.firewallNetwork())
		}
		_ = releaseBridge(n)
		_ = d.store.Update(func(tx store.Tx) error { return tx.Delete(networkKey(nid)) })
		return err
	}
	return nil
}

// setUpHost makes or adopts the network's bridge and records which, then
// makes forwarding and the firewall rules, idempotently.
func (d *Driver) setUpHost(n *network) error {
	err := ensureBridge(n)
	// Recorded even on failure: addresses added to an adopted bridge
	// before the failure are cnmnet's to remove.
	if perr := d.putNetwork(n); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	fault.Point("bridge:bridged")
	if err := enableForwarding(n); err != nil {
		return err
	}
	return d.ensureFirewall(n)
}

// planNetwork validates the configuration against the host and the other
// bridge networks, and returns the network to make.
func (d *Driver) planNetwork(nid string, info driverapi.NetworkInfo) (*network, error) {
	c, err := parseConfValid(info.Config)
	if err != nil {
		return nil, err
	}
	if len(info.Pools) == 0 && info.DelegatedIPAM != "" {
		return nil, invalid("ipam: %s gave the first endpoint of network %s no address; a %s network needs one", info.DelegatedIPAM, info.Name, NetworkType)
	}
	if len(info.Pools) == 0 {
		return nil, invalid("ipam: a %s network needs address ranges", NetworkType)
	}
	n := &network{
		ID:              nid,
		Name:            info.Name,
		Bridge:          defaultBridgeName(info.Name),
		MTU:             c.MTU,
		IsGateway:       orDefault(c.IsGateway, true),
		IPMasq:          orDefault(c.IPMasq, true),
		Isolation:       orDefault(c.Isolation, true),
		ICC:             orDefault(c.EnableICC, true),
		Hairpin:         c.HairpinMode,
		Promisc:         c.PromiscMode,
		HostBindingIPv4: c.HostBindingIPv4,
	}
	if c.Bridge != nil {
		n.Bridge = *c.Bridge
	}
	for _, p := range info.Pools {
		n.Subnets = append(n.Subnets, p.Subnet.String())
		if p.Gateway != nil {
			n.Gateways = append(n.Gateways, gatewayCIDR(p))
		}
	}
	if n.MTU == 0 {
		n.MTU, n.MTUDefault = defaultRouteMTU(), true
	}
	if err := d.checkConflicts(n); err != nil {
		return nil, err
	}
	return n, nil
}

// gatewayCIDR is the pool's gateway with the subnet's prefix, as it goes
// on the bridge.
func gatewayCIDR(p driverapi.Pool) string {
	return (&net.IPNet{IP: p.Gateway, Mask: p.Subnet.Mask}).String()
}

// checkConflicts refuses a network whose bridge or subnets another bridge
// network of this host already has.
func (d *Driver) checkConflicts(n *network) error {
	return d.store.View(func(tx store.Tx) error {
		return tx.Scan("networks/", func(_ string, v []byte) error {
			other := &network{}
			if err := json.Unmarshal(v, other); err != nil {
				return fmt.Errorf("%w: bridge network record: %v", store.ErrCorrupt, err)
			}
			if other.ID == n.ID {
				return nil
			}
			if other.Bridge == n.Bridge {
				return invalid("bridge: %s is the bridge of network %s; give this network another bridge, or remove that network first: cnmctl network rm %s", n.Bridge, other.Name, other.Name)
			}
			for _, a := range n.Subnets {
				for _, b := range other.Subnets {
					if overlap(a, b) {
						return invalid("ipam: subnet %s overlaps %s of network %s; give this network another subnet, or remove that network first: cnmctl network rm %s", a, b, other.Name, other.Name)
					}
				}
			}
			return nil
		})
	})
}

func overlap(a, b string) bool {
	_, na, err1 := net.ParseCIDR(a)
	_, nb, err2 := net.ParseCIDR(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return na.Contains(nb.IP) || nb.Contains(na.IP)
}

// defaultRouteMTU is the MTU of the link of the host's default route, or
// 1500 when there is none.
func defaultRouteMTU() int {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err == nil {
		for _, r := range routes {
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
				return l.Attrs().MTU
			}
		}
	}
	return 1500
}

// bridgeOf is the network's bridge, made again first if it is gone: what
// a Join plugs its veth into, looked up once.
func (d *Driver) bridgeOf(n *network) (netlink.Link, error) {
	if br, err := netlink.LinkByName(n.Bridge); err == nil {
		return br, nil
	}
	if err := d.repairNetwork(n); err != nil {
		return nil, err
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	return br, nil
}

// repairNetwork brings back a network's bridge, and with it the
// network's rules, when someone deleted the bridge by hand: the network
// is still in the store, so the core will not create it again. The
// bridge it makes is cnmnet's, even if the one deleted was adopted.
func (d *Driver) repairNetwork(n *network) error {
	if _, err := netlink.LinkByName(n.Bridge); err == nil {
		return nil
	}
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := netlink.LinkByName(n.Bridge); err == nil {
		return nil // another process repaired it while we waited
	}
	if err := d.setUpHost(n); err != nil {
		return err
	}
	if err := d.reattachPorts(n); err != nil {
		return err
	}
	return d.syncPortsLocked(n)
}

// reattachPorts plugs the network's host veths, which a deleted bridge
// let go of, into the bridge made again, with their port flags.
func (d *Driver) reattachPorts(n *network) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	return d.eachHostVeth(n, func(l netlink.Link, hairpin bool) error {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			return nil
		}
		err := netlink.LinkSetMaster(l, br)
		if err == nil {
			err = configurePort(l, n, hairpin)
		}
		if err != nil {
			return fmt.Errorf("plug %s into bridge %s: %w", l.Attrs().Name, n.Bridge, err)
		}
		return nil
	})
}

// eachHostVeth calls fn with each host veth of the network's endpoints
// (found by their mark) and whether its port is to be hairpin (with
// hairpinMode, or when its endpoint publishes ports, as Join makes it),
// and collects the errors.
func (d *Driver) eachHostVeth(n *network, fn func(l netlink.Link, hairpin bool) error) error {
	links, err := nldump.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		eid, nid, _ := vethMark(l)
		if nid != n.ID || !ownedHostVeth(l) {
			continue
		}
		p, err := d.ports().Of(eid)
		if err == nil {
			err = fn(l, n.Hairpin || len(p.Ports) > 0)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DeleteNetwork implements driverapi.Driver: the firewall chains, and
// the bridge if cnmnet made it, else the addresses cnmnet added to it.
func (d *Driver) DeleteNetwork(nid string) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := d.network(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	if err := fw.RemoveNetwork(n.firewallNetwork()); err != nil {
		return fmt.Errorf("firewall of network %s: %w", n.Name, err)
	}
	if err := releaseBridge(n); err != nil {
		return err
	}
	return d.store.Update(func(tx store.Tx) error { return tx.Delete(networkKey(nid)) })
}

// ValidateConfig implements driverapi.ConfigValidator: the keys that
// shape a network, checked before the core records or touches anything.
func (d *Driver) ValidateConfig(config []byte) error {
	_, err := parseConfValid(config)
	return err
}

// Status implements driverapi.StatusReporter: the bridge driver cannot
// serve an ADD without iptables, nor, for a network that exists, while
// its firewall rules are missing (a firewall reload removed them):
// endpoints would get no forwarding, masquerade or published ports. An
// ADD that publishes a port puts them back, as does cnmctl check
// --repair. It reads the rules once per family of the network.
func (d *Driver) Status(info driverapi.NetworkInfo) error {
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	n, err := d.networkNamed(info.Name)
	if err != nil || n == nil {
		return err
	}
	mappings, err := d.ports().Network(n.ID)
	if err != nil {
		return err
	}
	if err := fw.CheckMissing(n.firewallNetwork(), mappings); err != nil {
		return fmt.Errorf("firewall: %w (cnmctl check --repair, or the next ADD that publishes a port, restores it)", err)
	}
	return nil
}

// networkNamed returns the network called name, or nil when the driver
// has none.
func (d *Driver) networkNamed(name string) (*network, error) {
	var found *network
	err := d.store.View(func(tx store.Tx) error {
		return tx.Scan("networks/", func(_ string, v []byte) error {
			n := &network{}
			if err := json.Unmarshal(v, n); err != nil {
				return fmt.Errorf("%w: bridge network record: %v", store.ErrCorrupt, err)
			}
			if n.Name == name {
				found = n
			}
			return nil
		})
	})
	return found, err
}

// bridgeMAC is the MAC of the bridge cnmnet makes for network nid: locally
// administered, unicast, stable for the network, and outside the
// 02:42:… range of the endpoints' MACs (macFor).
func bridgeMAC(nid string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("bridge/" + nid))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	if mac[0] == 0x02 && mac[1] == 0x42 {
		mac[1] = 0x43
	}
	return mac
}
