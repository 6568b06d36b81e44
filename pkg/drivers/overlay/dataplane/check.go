package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/nldump"
)

// Check verifies the network's data plane on this host: the underlay
// device with the VTEP address; the bridge, the network's, up, with its
// MAC, MTU and gateway addresses; the VXLAN device, the network's, with
// its VNI, port, VTEP address and device, learning off, proxy on, its
// MTU, attached to the bridge and up. The error names everything that
// is wrong. The forwarding entries are Peers' to compare.
func Check(n Network) error {
	if err := n.validate(); err != nil {
		return err
	}
	n.Port = n.port()
	var c checker
	under, err := lookup(n.Underlay)
	if err != nil {
		return err
	}
	mtu := n.MTU
	switch {
	case under == nil:
		c.add("underlay %s is missing", n.Underlay)
	case !hasAddress(under, n.LocalIP):
		c.add("underlay %s does not have the VTEP address %s", n.Underlay, n.LocalIP)
	}
	if mtu == 0 && under != nil {
		mtu = under.Attrs().MTU - n.overhead()
	}
	br, err := lookup(n.Bridge)
	if err != nil {
		return err
	}
	c.bridge(n, br, mtu)
	vx, err := lookup(n.VXLAN)
	if err != nil {
		return err
	}
	c.vxlan(n, vx, br, under, mtu)
	if len(c.problems) == 0 {
		return nil
	}
	return fmt.Errorf("overlay network %s on this host: %s", n.ID, strings.Join(c.problems, "; "))
}

type checker struct{ problems []string }

func (c *checker) add(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *checker) bridge(n Network, link netlink.Link, mtu int) {
	if link == nil {
		c.add("bridge %s is missing", n.Bridge)
		return
	}
	a := link.Attrs()
	if _, ok := link.(*netlink.Bridge); !ok {
		c.add("%s is a %s, not a bridge", n.Bridge, link.Type())
		return
	}
	if !ownedBy(link, n.ID) {
		c.add("bridge %s is not the network's (alias %q)", n.Bridge, a.Alias)
		return
	}
	if a.Flags&net.FlagUp == 0 {
		c.add("bridge %s is down", n.Bridge)
	}
	if mac := BridgeMAC(n.ID); !bytes.Equal(a.HardwareAddr, mac) {
		c.add("bridge %s has MAC %s, want %s", n.Bridge, a.HardwareAddr, mac)
	}
	if mtu != 0 && a.MTU != mtu {
		c.add("bridge %s has MTU %d, want %d", n.Bridge, a.MTU, mtu)
	}
	for _, g := range n.Gateways {
		if !hasPrefix(link, g) {
			c.add("bridge %s lacks gateway %s", n.Bridge, g)
		}
	}
}

func (c *checker) vxlan(n Network, link, br, under netlink.Link, mtu int) {
	if link == nil {
		c.add("vxlan %s is missing", n.VXLAN)
		return
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		c.add("%s is a %s, not a VXLAN device", n.VXLAN, link.Type())
		return
	}
	if !ownedBy(link, n.ID) {
		c.add("vxlan %s is not the network's (alias %q)", n.VXLAN, vx.Alias)
		return
	}
	if vx.VxlanId != int(n.VNI) {
		c.add("vxlan %s has VNI %d, want %d", n.VXLAN, vx.VxlanId, n.VNI)
	}
	if vx.Port != n.Port {
		c.add("vxlan %s has port %d, want %d", n.VXLAN, vx.Port, n.Port)
	}
	if !vx.SrcAddr.Equal(n.LocalIP) {
		c.add("vxlan %s has local address %v, want %s", n.VXLAN, vx.SrcAddr, n.LocalIP)
	}
	if under != nil && vx.VtepDevIndex != under.Attrs().Index {
		c.add("vxlan %s is not on underlay %s", n.VXLAN, n.Underlay)
	}
	if vx.Learning {
		c.add("vxlan %s has learning on, want off", n.VXLAN)
	}
	if !vx.Proxy {
		c.add("vxlan %s has proxy off, want on", n.VXLAN)
	}
	if mtu != 0 && vx.MTU != mtu {
		c.add("vxlan %s has MTU %d, want %d", n.VXLAN, vx.MTU, mtu)
	}
	if br == nil || vx.MasterIndex != br.Attrs().Index {
		c.add("vxlan %s is not attached to bridge %s", n.VXLAN, n.Bridge)
	}
	if vx.Flags&net.FlagUp == 0 {
		c.add("vxlan %s is down", n.VXLAN)
	}
}

func hasAddress(link netlink.Link, ip net.IP) bool {
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func hasPrefix(link netlink.Link, g *net.IPNet) bool {
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IP.Equal(g.IP) && maskOnes(a.Mask) == maskOnes(g.Mask) {
			return true
		}
	}
	return false
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}
