package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
)

// ensureBridge makes the network's bridge, marked as the network's and
// with its own MAC (bridgeMAC), or adopts a bridge that exists already,
// and sets its MTU, gateway addresses and state. It records in n whether
// the bridge is cnmnet's, the MAC it pinned, and which addresses cnmnet
// added to an adopted one, for releaseBridge.
func ensureBridge(n *network) error {
	// A MAC given at creation is one the kernel keeps: without it, a
	// bridge takes the lowest MAC of its ports and changes it as ports
	// come and go, and every endpoint's neighbour entry for the gateway
	// goes stale until it is resolved again, tens of seconds later.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge, MTU: n.MTU, TxQLen: -1,
		HardwareAddr: bridgeMAC(n.ID)}}
	err := netlink.LinkAdd(br)
	created := err == nil
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
	}
	link, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return invalid("bridge: %s exists and is a %s, not a bridge", n.Bridge, link.Type())
	}
	if created {
		if err := markOwned(link, n.ID); err != nil {
			_ = netlink.LinkDel(link) // unmarked, nothing else would delete it
			return err
		}
	}
	// A bridge marked as this network's was made by an earlier call that
	// did not finish; any other existing bridge is someone else's.
	if ownedBy(link, n.ID) {
		n.Origin, n.AddedAddrs = originCreated, nil
		n.MAC = ""
		if err := keepBridgeMAC(link, n, created); err != nil {
			return err
		}
	} else {
		// Its MAC is its owner's to set or to leave to the kernel.
		n.Origin, n.MAC = originAdopted, ""
	}
	if link.Attrs().MTU != n.MTU {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("set MTU of bridge %s: %w", n.Bridge, err)
		}
	}
	if n.Promisc {
		if err := netlink.SetPromiscOn(link); err != nil {
			return fmt.Errorf("set bridge %s promiscuous: %w", n.Bridge, err)
		}
	}
	if n.IsGateway {
		for _, g := range n.Gateways {
			added, err := addAddress(link, g)
			if err != nil {
				return err
			}
			if added && n.Origin == originAdopted {
				n.noteAdded(g)
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set bridge %s up: %w", n.Bridge, err)
	}
	return nil
}

// keepBridgeMAC pins the MAC of a bridge cnmnet made and records it in
// n. One created with its MAC (just now, or by an earlier call that did
// not finish) keeps it already. One made before cnmnet set a MAC has the
// MAC of one of its ports, which its endpoints have resolved the gateway
// to: setting that same MAC pins it, as any explicitly set MAC is, so
// that it stops following the ports without changing now.
func keepBridgeMAC(link netlink.Link, n *network, created bool) error {
	if n.MAC != "" {
		return nil
	}
	mac := link.Attrs().HardwareAddr
	if !created && !bytes.Equal(mac, bridgeMAC(n.ID)) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("pin MAC %s of bridge %s: %w", mac, n.Bridge, err)
		}
	}
	n.MAC = mac.String()
	return nil
}

// addAddress puts cidr on link; added is false when the link had it.
func addAddress(link netlink.Link, cidr string) (added bool, err error) {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return false, fmt.Errorf("gateway %s: %w", cidr, err)
	}
	if addr.IP.To4() == nil {
		addr.Flags = unix.IFA_F_NODAD
	}
	err = netlink.AddrAdd(link, addr)
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("add %s to bridge %s: %w", cidr, link.Attrs().Name, err)
	}
	return true, nil
}

// enableForwarding turns on forwarding in the host namespace the plugin
// runs in. The bridge's route_localnet is left to syncPorts: it is on
// only while the network publishes a port on 127.0.0.1.
func enableForwarding(n *network) error {
	settings := map[string]string{
		"net/ipv4/ip_forward": "1",
	}
	if n.hasIPv6() {
		settings["net/ipv6/conf/all/forwarding"] = "1"
	}
	for key, value := range settings {
		if err := endpointkit.SetSysctl(key, value); err != nil {
			return err
		}
	}
	return nil
}

// vethNames are the host end (stable, unique per endpoint) and the name
// the sandbox end is made under when the request names no interface
// (endpointkit.SandboxEnd).
func vethNames(eid string) (host, peer string) {
	return "veth" + eid[:11], "vtmp" + eid[:11]
}

// createVeth makes the endpoint's veth pair (endpointkit.VethPair), its
// host end marked as the endpoint's, with the network's port flags, up.
func createVeth(n *network, br netlink.Link, eid, sboxKey, peer string, mac net.HardwareAddr, hairpin bool) (netlink.Link, error) {
	host, _ := vethNames(eid)
	link, err := endpointkit.VethPair(endpointkit.Veth{
		Bridge: br, MTU: n.MTU, Host: host, Peer: peer, Sandbox: sboxKey, MAC: mac,
	})
	if err != nil {
		return nil, err
	}
	err = markOwned(link, vethOwner(eid, n.ID))
	if err == nil {
		err = configurePort(link, n, hairpin)
	}
	if err != nil {
		_ = endpointkit.DeleteLink(host)
		return nil, err
	}
	return link, nil
}

// configurePort sets the bridge-port flags of a host veth and brings it up.
func configurePort(link netlink.Link, n *network, hairpin bool) error {
	name := link.Attrs().Name
	if hairpin {
		if err := netlink.LinkSetHairpin(link, true); err != nil {
			return fmt.Errorf("set hairpin on %s: %w", name, err)
		}
	}
	if !n.ICC {
		// Isolated ports reach only non-isolated ones: the bridge itself
		// (the gateway) and the outside, never each other.
		if err := netlink.LinkSetIsolated(link, true); err != nil {
			return fmt.Errorf("isolate port %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
