package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// ports is what the driver keeps of a joined endpoint that publishes
// ports; an endpoint that publishes none has no record.
type ports struct {
	Network  string          `json:"network"`  // nid
	Endpoint string          `json:"endpoint"` // eid, named in the rules' comments
	Ports    []publishedPort `json:"ports"`
	// Name is the endpoint's name (cnmctl endpoint ls), for the message
	// that refuses its ports to another endpoint.
	Name string `json:"name,omitempty"`
}

func portsKey(eid string) string { return "endpoints/" + eid }

// hostPortKey reserves a host port; the port comes before the address so
// that one scan finds every address a port is bound on.
func hostPortKey(p publishedPort) string {
	return "hostports/" + p.Protocol + "/" + strconv.Itoa(p.HostPort) + "/" + hostIPKey(p)
}

func hostIPKey(p publishedPort) string {
	if p.HostIP != "" {
		return p.HostIP
	}
	return "any" + family(net.ParseIP(p.ContainerIP))
}

// CreateEndpoint implements driverapi.Driver: a bridge endpoint needs an
// address, and gets a MAC derived from it when it has none.
func (d *Driver) CreateEndpoint(nid, eid string, ep driverapi.EndpointInfo, _ driverapi.Options) error {
	ifc := ep.Interface()
	if ifc == nil || len(ifc.Addresses()) == 0 {
		return invalid("ipam: a %s endpoint needs an address; configure ipam ranges", NetworkType)
	}
	if ifc.MacAddress() != nil {
		return nil
	}
	return endpointkit.AssignMAC(ifc, eid, nil)
}

// DeleteEndpoint implements driverapi.Driver; Leave already released all
// the endpoint's host resources.
func (d *Driver) DeleteEndpoint(string, string) error { return nil }

// EndpointOperInfo implements driverapi.Driver: the published ports.
func (d *Driver) EndpointOperInfo(_, eid string) (map[string]any, error) {
	p, err := d.ports(eid)
	if err != nil {
		return nil, err
	}
	return map[string]any{"portMappings": p.Ports}, nil
}

// Join implements driverapi.Driver: a veth pair with its host end on the
// bridge, the other end for the core to move into the sandbox, the
// gateway, and the endpoint's published ports.
func (d *Driver) Join(nid, eid, sboxKey string, ji driverapi.JoinInfo, opts driverapi.Options) (err error) {
	n, err := d.network(nid)
	if err != nil {
		return err
	}
	if err := d.repairNetwork(n); err != nil {
		return err
	}
	if err := d.pinOldBridgeMAC(n); err != nil {
		return err
	}
	ifc := ji.Interface()
	if ifc == nil {
		return invalid("ipam: a %s endpoint needs an address", NetworkType)
	}
	c, err := parseConf(opts.Config)
	if err != nil {
		return err
	}
	// The network was made by an earlier ADD; a bad value is refused all
	// the same, not silently ignored.
	if err := c.validateNetwork(); err != nil {
		return err
	}
	published, err := resolvePorts(c.RuntimeConfig.PortMappings, n.HostBindingIPv4, ifc.Addresses())
	if err != nil {
		return err
	}
	if err := d.reservePorts(nid, eid, opts.Endpoint, published); err != nil {
		return err
	}
	fault.Point("bridge:ports-reserved")
	defer func() {
		if err != nil {
			_ = d.releasePorts(n, eid)
		}
	}()

	// A container reaching its own published port comes back in through
	// its own bridge port.
	hairpin := n.Hairpin || len(published) > 0
	host, err := createVeth(n, eid, sboxKey, ifc.MacAddress(), hairpin)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = endpointkit.DeleteLink(host.Attrs().Name)
		}
	}()
	fault.Point("bridge:veth")
	if len(published) > 0 {
		if err := d.syncPorts(n); err != nil {
			return err
		}
		fault.Point("bridge:published")
		// After the rules, so that a flow's next packet meets them.
		// Best effort, as in the reference portmap plugin: the ports
		// work for every new flow, and failing the ADD would not help
		// the old ones.
		if fw, err := d.firewall(); err == nil {
			_ = fw.ForgetFlows(firewallPorts(&ports{Endpoint: eid, Ports: published}))
		}
	}
	_, peer := vethNames(eid)
	return describeJoin(n, ji, host, peer, opts.IfName)
}

// pinOldBridgeMAC pins the MAC of a bridge cnmnet made before it set
// one (see keepBridgeMAC), once: the network's record then has it, and
// later Joins cost nothing.
func (d *Driver) pinOldBridgeMAC(n *network) error {
	if n.Origin != originCreated || n.MAC != "" {
		return nil
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	if !ownedBy(br, n.ID) {
		return nil
	}
	if err := keepBridgeMAC(br, n, false); err != nil {
		return err
	}
	return d.putNetwork(n)
}

// describeJoin tells the core the names, gateways and host interfaces.
func describeJoin(n *network, ji driverapi.JoinInfo, host netlink.Link, peer, ifName string) error {
	if n.IsGateway {
		if err := endpointkit.SetGateways(ji, n.Gateways); err != nil {
			return err
		}
	}
	if br, err := netlink.LinkByName(n.Bridge); err == nil {
		if err := ji.AddHostInterface(n.Bridge, br.Attrs().HardwareAddr); err != nil {
			return err
		}
	}
	if err := ji.AddHostInterface(host.Attrs().Name, host.Attrs().HardwareAddr); err != nil {
		return err
	}
	return ji.SetNamesInSandbox(peer, ifName)
}

// reservePorts records the endpoint's published ports, refusing any host
// port another endpoint already publishes on an overlapping address.
func (d *Driver) reservePorts(nid, eid, name string, published []publishedPort) error {
	if len(published) == 0 {
		return nil
	}
	return d.store.Update(func(tx store.Tx) error {
		for _, p := range published {
			if holder, err := portHolder(tx, p); err != nil {
				return err
			} else if holder != "" && holder != eid {
				return types.NewError(driverapi.CodePortInUse, fmt.Sprintf(
					"runtimeConfig.portMappings: %s port %d on %s is already published by endpoint %s",
					p.Protocol, p.HostPort, hostIPKey(p), endpointName(tx, holder)), "")
			}
			if err := tx.Put(hostPortKey(p), []byte(eid)); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, portsKey(eid), ports{Network: nid, Endpoint: eid, Ports: published, Name: name})
	})
}

// endpointName names endpoint eid as cnmctl endpoint ls does, "<name> of
// network <network>", from its ports record; by its ID if the record
// predates names.
func endpointName(tx store.Tx, eid string) string {
	p, n := &ports{}, &network{}
	if store.GetJSON(tx, portsKey(eid), p) != nil || p.Name == "" {
		return "with ID " + eid
	}
	if store.GetJSON(tx, networkKey(p.Network), n) != nil {
		return p.Name
	}
	return p.Name + " of network " + n.Name
}

// portHolder returns the endpoint publishing p's host port on an address
// that overlaps p's, or "".
func portHolder(tx store.Tx, p publishedPort) (string, error) {
	holder := ""
	prefix := "hostports/" + p.Protocol + "/" + strconv.Itoa(p.HostPort) + "/"
	mine := hostIPKey(p)
	fam := family(net.ParseIP(p.ContainerIP))
	err := tx.Scan(prefix, func(k string, v []byte) error {
		theirs := k[len(prefix):]
		if theirs == mine || theirs == "any"+fam || mine == "any"+fam && family(net.ParseIP(theirs)) == fam {
			holder = string(v)
		}
		return nil
	})
	return holder, err
}

func (d *Driver) ports(eid string) (*ports, error) {
	p := &ports{}
	err := d.store.View(func(tx store.Tx) error { return store.GetJSON(tx, portsKey(eid), p) })
	if errors.Is(err, store.ErrNotFound) {
		return &ports{}, nil
	}
	return p, err
}

// releasePorts rewrites the network's port rules without the endpoint's
// published ports, then forgets them: in that order, so that a process
// killed in between leaves the record for the next DEL to finish with.
func (d *Driver) releasePorts(n *network, eid string) error {
	p, err := d.ports(eid)
	if err != nil || len(p.Ports) == 0 {
		return err
	}
	if err := d.syncPorts(n, eid); err != nil {
		return err
	}
	fault.Point("bridge:ports-released")
	return d.store.Update(func(tx store.Tx) error {
		for _, pp := range p.Ports {
			if holder, err := tx.Get(hostPortKey(pp)); err == nil && string(holder) == eid {
				if err := tx.Delete(hostPortKey(pp)); err != nil {
					return err
				}
			}
		}
		return tx.Delete(portsKey(eid))
	})
}

// syncPorts makes the network's DNAT rules exactly the published ports
// of its endpoints, but those of the endpoints left out, in one firewall
// operation, and the bridge's route_localnet on exactly while one of them
// is reachable on 127.0.0.1: switched on before the rules, off after.
func (d *Driver) syncPorts(n *network, leftOut ...string) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	return d.syncPortsLocked(n, leftOut...)
}

// syncPortsLocked is syncPorts for a caller holding the host lock: the
// ports are read from the store and written to the firewall with no
// other sync in between, so the last write is of the latest state.
func (d *Driver) syncPortsLocked(n *network, leftOut ...string) error {
	mappings, err := d.networkPorts(n.ID, leftOut)
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	localnet := onLoopback(mappings)
	if localnet {
		if err := setRouteLocalnet(n.Bridge, true); err != nil {
			return err
		}
	}
	if err := fw.SetPorts(n.firewallNetwork(), mappings); err != nil {
		return fmt.Errorf("publish ports of network %s: %w", n.Name, err)
	}
	// An adopted bridge's route_localnet may be its owner's: cnmnet
	// turns it on when needed but never off (CNM-INPUT still guards it).
	if !localnet && n.Origin != originAdopted {
		return setRouteLocalnet(n.Bridge, false)
	}
	return nil
}

// onLoopback reports whether a mapping publishes an IPv4 port on the
// host's 127.0.0.0/8: bound to every address, or to a loopback one.
func onLoopback(mappings []firewall.PortMapping) bool {
	for _, m := range mappings {
		if m.ContainerIP.To4() == nil {
			continue
		}
		if m.HostIP == nil || m.HostIP.IsUnspecified() || m.HostIP.IsLoopback() {
			return true
		}
	}
	return false
}

// networkPorts lists the published ports of the endpoints of network nid
// but those left out.
func (d *Driver) networkPorts(nid string, leftOut []string) ([]firewall.PortMapping, error) {
	var out []firewall.PortMapping
	err := d.store.View(func(tx store.Tx) error {
		return tx.Scan("endpoints/", func(_ string, v []byte) error {
			p := &ports{}
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("%w: bridge endpoint record: %v", store.ErrCorrupt, err)
			}
			if p.Network == nid && !slices.Contains(leftOut, p.Endpoint) {
				out = append(out, firewallPorts(p)...)
			}
			return nil
		})
	})
	return out, err
}

func firewallPorts(p *ports) []firewall.PortMapping {
	var out []firewall.PortMapping
	for _, pp := range p.Ports {
		out = append(out, firewall.PortMapping{
			Protocol:      pp.Protocol,
			HostIP:        net.ParseIP(pp.HostIP),
			HostPort:      pp.HostPort,
			ContainerIP:   net.ParseIP(pp.ContainerIP),
			ContainerPort: pp.ContainerPort,
			Endpoint:      p.Endpoint,
		})
	}
	return out
}

// Leave implements driverapi.Driver: the host veth (and with it the
// sandbox end) and the endpoint's published ports go.
func (d *Driver) Leave(nid, eid string) error {
	host, _ := vethNames(eid)
	if err := endpointkit.DeleteLink(host); err != nil {
		return err
	}
	n, err := d.network(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the network is gone, and its rules with it
	}
	if err != nil {
		return err
	}
	return d.releasePorts(n, eid)
}

// CheckEndpoint implements driverapi.Checker: the bridge is up, the host
// veth is on it, and the network's and endpoint's rules are in place.
func (d *Driver) CheckEndpoint(nid, eid, _ string) error {
	n, err := d.network(nid)
	if err != nil {
		return err
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("bridge %s is down", n.Bridge)
	}
	host, _ := vethNames(eid)
	veth, err := netlink.LinkByName(host)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", host, err)
	}
	if veth.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %s is not on bridge %s", host, n.Bridge)
	}
	// The network's port chain holds every endpoint's ports: checked
	// against the endpoint's alone, a neighbour's would be unexpected.
	mappings, err := d.networkPorts(nid, nil)
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	return fw.Check(n.firewallNetwork(), mappings)
}
