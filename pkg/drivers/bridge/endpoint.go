package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/pkg/store"
)

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
	p, err := d.ports().Of(eid)
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
	br, err := d.bridgeOf(n)
	if err != nil {
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
	published, err := hostports.Resolve(c.RuntimeConfig.PortMappings, n.HostBindingIPv4, ifc.Addresses())
	if err != nil {
		return err
	}
	if err := d.ports().Reserve(nid, eid, opts.Endpoint, published); err != nil {
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
	_, temp := vethNames(eid)
	peer := endpointkit.SandboxEnd(opts.IfName, temp)
	host, err := createVeth(n, br, eid, sboxKey, peer, ifc.MacAddress(), hairpin)
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
			_ = fw.ForgetFlows((&hostports.Record{Endpoint: eid, Ports: published}).Mappings())
		}
	}
	return describeJoin(n, ji, br, host, peer, opts.IfName)
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
func describeJoin(n *network, ji driverapi.JoinInfo, br, host netlink.Link, peer, ifName string) error {
	if n.IsGateway {
		if err := endpointkit.SetGateways(ji, n.Gateways); err != nil {
			return err
		}
	}
	if err := ji.AddHostInterface(n.Bridge, br.Attrs().HardwareAddr); err != nil {
		return err
	}
	if err := ji.AddHostInterface(host.Attrs().Name, host.Attrs().HardwareAddr); err != nil {
		return err
	}
	return ji.SetNamesInSandbox(peer, ifName)
}

// releasePorts rewrites the network's port rules without the endpoint's
// published ports, then forgets them: in that order, so that a process
// killed in between leaves the record for the next DEL to finish with.
func (d *Driver) releasePorts(n *network, eid string) error {
	p, err := d.ports().Of(eid)
	if err != nil || len(p.Ports) == 0 {
		return err
	}
	if err := d.syncPorts(n, eid); err != nil {
		return err
	}
	fault.Point("bridge:ports-released")
	return d.ports().Forget(eid)
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
	mappings, err := d.ports().Network(n.ID, leftOut...)
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	return hostports.Publish(fw, n.firewallNetwork(), mappings, n.Origin == originAdopted)
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
	mappings, err := d.ports().Network(nid)
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	return fw.Check(n.firewallNetwork(), mappings)
}

// ports is the book of the endpoints' published ports, in the driver's
// store.
func (d *Driver) ports() hostports.Book {
	return hostports.Book{Store: d.store, NetworkName: func(tx store.Tx, nid string) string {
		n := &network{}
		if store.GetJSON(tx, networkKey(nid), n) != nil {
			return ""
		}
		return n.Name
	}}
}
