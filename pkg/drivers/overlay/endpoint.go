package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// macSalt keeps the MACs the overlay hashes from IPv6 addresses apart
// from the bridge driver's (endpointkit.MACFor); never the bridge's own
// (dataplane.BridgeMAC avoids 02:42).
var macSalt = []byte("overlay-endpoint/")

// CreateEndpoint implements driverapi.Driver: an overlay endpoint needs
// an address, and gets a MAC derived from it when it has none. The core
// keeps the MAC in the endpoint's record, so it follows the endpoint to
// every host it joins on.
func (d *Driver) CreateEndpoint(nid, eid string, ep driverapi.EndpointInfo, _ driverapi.Options) error {
	ifc := ep.Interface()
	if ifc == nil || len(ifc.Addresses()) == 0 {
		return invalid("ipam: a %s endpoint needs an address; configure ipam ranges", records.NetworkType)
	}
	if ifc.MacAddress() != nil {
		return nil
	}
	return endpointkit.AssignMAC(ifc, eid, macSalt)
}

// DeleteEndpoint implements driverapi.Driver: the reservation ends, so
// no host may forward to the endpoint any more, wherever it was joined.
func (d *Driver) DeleteEndpoint(nid, eid string) error {
	return d.store.Update(func(tx store.Tx) error { return tx.Delete(records.PeerKey(nid, eid)) })
}

// EndpointOperInfo implements driverapi.Driver: where the endpoint is
// joined, as the other hosts see it.
func (d *Driver) EndpointOperInfo(nid, eid string) (map[string]any, error) {
	p, err := d.peer(nid, eid)
	if err != nil || p == nil {
		return nil, err
	}
	return map[string]any{"host": p.Host, "vtep": p.VTEP}, nil
}

func (d *Driver) peer(nid, eid string) (*records.Peer, error) {
	p := &records.Peer{}
	err := d.store.View(func(tx store.Tx) error { return store.GetJSON(tx, records.PeerKey(nid, eid), p) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return p, err
}

// vethNames are the host end of an endpoint's veth (stable, unique per
// endpoint) and the name its sandbox end is made under when the request
// names no interface (endpointkit.SandboxEnd). Not cnm-bridge's "veth"
// prefix: its janitor claims the links named so.
func vethNames(eid string) (host, peer string) {
	return "ovh" + eid[:11], "ovs" + eid[:11]
}

// vethOwner is the mark of a host veth: its endpoint and network.
func vethOwner(eid, nid string) string { return "cnmnet:" + eid + "/" + nid }

// Join implements driverapi.Driver: a veth pair, made with its other end
// in the sandbox and its host end on the network's bridge, with the
// overlay's MTU and the endpoint's MAC; the endpoint's published ports
// on this host; the gateways; then the record that tells the other hosts
// the endpoint is here, and the removal of the entries this host had for
// it as a remote endpoint.
func (d *Driver) Join(nid, eid, sboxKey string, ji driverapi.JoinInfo, opts driverapi.Options) (err error) {
	ifc := ji.Interface()
	if ifc == nil || len(ifc.Addresses()) == 0 {
		return invalid("ipam: a %s endpoint needs an address", records.NetworkType)
	}
	c, err := parseConf(opts.Config)
	if err != nil {
		return err
	}
	published, err := hostports.Resolve(c.RuntimeConfig.PortMappings, "", ifc.Addresses())
	if err != nil {
		return err
	}
	h, dn, err := d.hostHere(nid)
	if err != nil {
		return err
	}
	if err := d.ports().Reserve(nid, eid, opts.Endpoint, published); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = d.releasePorts(nid, h, eid)
		}
	}()
	// A container reaching its own published port comes back in through
	// its own bridge port.
	_, temp := vethNames(eid)
	peer := endpointkit.SandboxEnd(opts.IfName, temp)
	host, err := createVeth(dn, eid, nid, sboxKey, peer, ifc.MacAddress(), len(published) > 0)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = endpointkit.DeleteLink(host.Attrs().Name)
		}
	}()
	if len(published) > 0 {
		if err := d.publish(nid, h, eid, published); err != nil {
			return err
		}
	}
	mac := ifc.MacAddress()
	if mac == nil {
		if mac, err = sandboxMAC(sboxKey, peer); err != nil {
			return err
		}
	}
	p := records.Peer{Network: nid, Endpoint: eid, Host: h.Host, VTEP: h.LocalIP, MAC: mac.String()}
	for _, a := range ifc.Addresses() {
		p.IPs = append(p.IPs, a.IP.String())
	}
	if err := d.announce(dn, p, opts.Endpoint); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = d.withdraw(nid, eid, h.Host)
		}
	}()
	return describeJoin(dn, h, ji, host, peer, opts.IfName)
}

// hostHere is this host's record and data plane of network nid, the data
// plane made again when it is not whole.
func (d *Driver) hostHere(nid string) (*records.HostNetwork, dataplane.Network, error) {
	h, err := d.hostNetwork(nid)
	if err != nil {
		return nil, dataplane.Network{}, err
	}
	if h == nil {
		return nil, dataplane.Network{}, fmt.Errorf("overlay network %s has no host state here: remove the network and add it again", nid)
	}
	dn, err := h.Dataplane(nid)
	if err != nil {
		return nil, dn, err
	}
	return h, dn, d.repairHost(nid, h, dn)
}

// publish writes the network's port rules with the endpoint's ports, and
// then forgets the conntrack flows of those ports, so that a flow's next
// packet meets the rules. Forgetting is best effort, as in the reference
// portmap plugin: the ports work for every new flow.
func (d *Driver) publish(nid string, h *records.HostNetwork, eid string, published []hostports.Port) error {
	if err := d.syncPorts(nid, h); err != nil {
		return err
	}
	if fw, err := d.firewall(); err == nil {
		_ = fw.ForgetFlows((&hostports.Record{Endpoint: eid, Ports: published}).Mappings())
	}
	return nil
}

// announce records that the endpoint is here, and removes the entries
// this host had for it as a remote endpoint: an entry sending it to
// another host (it was there before) would take its traffic away. Under
// the host lock, as every change to the network's entries.
func (d *Driver) announce(dn dataplane.Network, p records.Peer, name string) error {
	if err := d.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, records.PeerKey(p.Network, p.Endpoint), p) }); err != nil {
		return fmt.Errorf("record overlay endpoint %s here: %w", name, err)
	}
	mac, _ := net.ParseMAC(p.MAC)
	if err := d.withLock(func() error {
		return dataplane.DeletePeer(dn, dataplane.Peer{MAC: mac, IPs: p.ParseIPs()})
	}); err != nil {
		return fmt.Errorf("remove this host's forwarding entries for endpoint %s: %w", name, err)
	}
	return nil
}

// withdraw deletes endpoint eid's peer record if it names host: one that
// names another host is the endpoint's new place.
func (d *Driver) withdraw(nid, eid, host string) error {
	return d.store.Update(func(tx store.Tx) error {
		p := &records.Peer{}
		err := store.GetJSON(tx, records.PeerKey(nid, eid), p)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.Host != host {
			return nil
		}
		return tx.Delete(records.PeerKey(nid, eid))
	})
}

func (d *Driver) withLock(f func() error) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// repairHost makes the network's data plane again when it is not whole
// (a bridge deleted by hand, say), and then its peers, which a VXLAN
// device made anew has lost.
func (d *Driver) repairHost(nid string, h *records.HostNetwork, dn dataplane.Network) error {
	if dataplane.Check(dn) == nil {
		return nil
	}
	return d.withLock(func() error { return d.setUpHost(nid, h) })
}

// sandboxMAC reads the MAC the kernel gave the sandbox end, peer.
func sandboxMAC(sboxKey, peer string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := ns.WithNetNSPath(sboxKey, func(ns.NetNS) error {
		l, err := netlink.LinkByName(peer)
		if err != nil {
			return fmt.Errorf("find %s in the sandbox: %w", peer, err)
		}
		mac = l.Attrs().HardwareAddr
		return nil
	})
	return mac, err
}

// describeJoin tells the core the names, gateways and host interfaces.
func describeJoin(dn dataplane.Network, h *records.HostNetwork, ji driverapi.JoinInfo, host netlink.Link, peer, ifName string) error {
	if err := endpointkit.SetGateways(ji, h.Gateways); err != nil {
		return err
	}
	if err := ji.AddHostInterface(h.Bridge, dataplane.BridgeMAC(dn.ID)); err != nil {
		return err
	}
	if err := ji.AddHostInterface(host.Attrs().Name, host.Attrs().HardwareAddr); err != nil {
		return err
	}
	return ji.SetNamesInSandbox(peer, ifName)
}

// createVeth makes the endpoint's veth pair (endpointkit.VethPair) with
// the bridge's MTU, its host end marked as the endpoint's, hairpin when
// asked, up.
func createVeth(n dataplane.Network, eid, nid, sboxKey, peer string, mac net.HardwareAddr, hairpin bool) (netlink.Link, error) {
	host, _ := vethNames(eid)
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	link, err := endpointkit.VethPair(endpointkit.Veth{
		Bridge: br, Host: host, Peer: peer, Sandbox: sboxKey, MAC: mac,
	})
	if err != nil {
		return nil, err
	}
	err = netlink.LinkSetAlias(link, vethOwner(eid, nid))
	if err == nil && hairpin {
		err = netlink.LinkSetHairpin(link, true)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		_ = endpointkit.DeleteLink(host)
		return nil, fmt.Errorf("set up veth %s: %w", host, err)
	}
	return link, nil
}

// Leave implements driverapi.Driver: the veth goes (its sandbox end with
// it), then the endpoint's published ports here, and its record when it
// still names this host; one that names another host is the endpoint's
// new place.
func (d *Driver) Leave(nid, eid string) error {
	host, _ := vethNames(eid)
	if err := endpointkit.DeleteLink(host); err != nil {
		return err
	}
	h, err := d.hostNetwork(nid)
	if err != nil {
		return err
	}
	if err := d.releasePorts(nid, h, eid); err != nil {
		return err
	}
	if h == nil {
		return nil
	}
	return d.withdraw(nid, eid, h.Host)
}

// CheckEndpoint implements driverapi.Checker: the network's data plane
// here (bridge, VXLAN device with its VNI and port, addresses), the
// endpoint's veth on the bridge and up, its record naming this host, the
// firewall rules, and this host's forwarding entries for every endpoint
// of the network on other hosts.
func (d *Driver) CheckEndpoint(nid, eid, _ string) error {
	h, err := d.hostNetwork(nid)
	if err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("overlay network %s has no host state here", nid)
	}
	dn, err := h.Dataplane(nid)
	if err != nil {
		return err
	}
	var problems []string
	if err := dataplane.Check(dn); err != nil {
		problems = append(problems, err.Error())
	}
	if p := checkVeth(dn, eid); p != "" {
		problems = append(problems, p)
	}
	if p, err := d.peer(nid, eid); err != nil {
		return err
	} else if p == nil || p.Host != h.Host {
		problems = append(problems, fmt.Sprintf("the cluster store does not record endpoint %s as joined on this host (%s)", eid, h.Host))
	}
	// The network's port chain holds every endpoint's ports here:
	// checked against the endpoint's alone, a neighbour's would be
	// unexpected.
	mappings, err := d.ports().Network(nid)
	if err != nil {
		return err
	}
	if h.IPMasq || h.Isolation || len(mappings) > 0 {
		fw, err := d.firewall()
		if err != nil {
			return err
		}
		if err := fw.Check(h.Firewall(), mappings); err != nil {
			problems = append(problems, err.Error())
		}
	}
	missing, err := d.missingPeers(nid, h, dn)
	if err != nil {
		return err
	}
	problems = append(problems, missing...)
	if len(problems) > 0 {
		return fmt.Errorf("overlay endpoint %s: %s", eid, strings.Join(problems, "; "))
	}
	return nil
}

// checkVeth says what is wrong with the endpoint's host veth, "" if nothing.
func checkVeth(dn dataplane.Network, eid string) string {
	host, _ := vethNames(eid)
	veth, err := netlink.LinkByName(host)
	if err != nil {
		return fmt.Sprintf("host veth %s: %v", host, err)
	}
	br, err := netlink.LinkByName(dn.Bridge)
	switch {
	case err != nil:
		return "" // dataplane.Check names it
	case veth.Attrs().MasterIndex != br.Attrs().Index:
		return fmt.Sprintf("host veth %s is not on bridge %s", host, dn.Bridge)
	case veth.Attrs().Flags&net.FlagUp == 0:
		return fmt.Sprintf("host veth %s is down", host)
	}
	return ""
}

// missingPeers names the endpoints on other hosts that this host does
// not forward to, or forwards to the wrong place.
func (d *Driver) missingPeers(nid string, h *records.HostNetwork, dn dataplane.Network) ([]string, error) {
	want, err := d.remotePeers(nid, h.Host)
	if err != nil {
		return nil, err
	}
	have, err := dataplane.Peers(dn)
	if err != nil {
		return []string{fmt.Sprintf("forwarding entries: %v", err)}, nil
	}
	var problems []string
	for _, w := range want {
		i := slices.IndexFunc(have, func(p dataplane.Peer) bool { return bytes.Equal(p.MAC, w.MAC) })
		if i < 0 || !have[i].VTEP.Equal(w.VTEP) {
			problems = append(problems, fmt.Sprintf("no forwarding entry for %s", w))
			continue
		}
		for _, ip := range w.IPs {
			if !slices.ContainsFunc(have[i].IPs, ip.Equal) {
				problems = append(problems, fmt.Sprintf("no neighbour entry for %s of %s", ip, w.MAC))
			}
		}
	}
	return problems, nil
}
