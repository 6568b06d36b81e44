package endpointkit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
)

// maxMACTries bounds the MACs tried for one endpoint: from IPv4 the first
// is unique; from IPv6 a clash of 32 hashed bits is rare, eight in a row
// is not going to happen.
const maxMACTries = 8

// AssignMAC gives ifc, which has none, a MAC derived from its addresses
// (MACFor with salt), trying another while the network's other endpoints
// hold one.
func AssignMAC(ifc driverapi.InterfaceInfo, eid string, salt []byte) error {
	for try := range maxMACTries {
		err := ifc.SetMacAddress(MACFor(ifc.Addresses(), try, salt))
		if !errors.Is(err, driverapi.ErrMACInUse) {
			return err
		}
	}
	return fmt.Errorf("endpoint %s: no free MAC after %d tries", eid, maxMACTries)
}

// MACFor derives a locally administered MAC (02:42 and 32 bits) from an
// endpoint's addresses, as libnetwork does. The IPv4 address itself is
// unique in the network, so its MAC is; an IPv6 address has more than 32
// bits, so they are hashed (with salt, a driver's own, first; its low 32
// bits alone repeat across a /64), try making another candidate when one
// is taken.
func MACFor(addrs []*net.IPNet, try int, salt []byte) net.HardwareAddr {
	if try == 0 {
		for _, a := range addrs {
			if v4 := a.IP.To4(); v4 != nil {
				return net.HardwareAddr{0x02, 0x42, v4[0], v4[1], v4[2], v4[3]}
			}
		}
	}
	h := sha256.New()
	h.Write(salt)
	for _, a := range addrs {
		h.Write(a.IP.To16())
	}
	h.Write([]byte{byte(try)})
	sum := h.Sum(nil)
	return net.HardwareAddr{0x02, 0x42, sum[0], sum[1], sum[2], sum[3]}
}

// SetGateways tells the core the gateways (CIDRs) of the subnets the
// endpoint has an address in: another subnet's gateway is not on its
// link.
func SetGateways(ji driverapi.JoinInfo, gateways []string) error {
	for _, g := range gateways {
		ip, subnet, err := net.ParseCIDR(g)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", g, err)
		}
		if !hasAddressIn(ji.Interface(), subnet) {
			continue
		}
		if ip.To4() != nil {
			err = ji.SetGateway(ip)
		} else {
			err = ji.SetGatewayIPv6(ip)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func hasAddressIn(ifc driverapi.InterfaceInfo, subnet *net.IPNet) bool {
	if ifc == nil {
		return false
	}
	for _, a := range ifc.Addresses() {
		if subnet.Contains(a.IP) {
			return true
		}
	}
	return false
}

// DeleteLink removes a link; a missing one is not an error.
func DeleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// SetRouteLocalnet sets the bridge's route_localnet sysctl, which the
// host's own connections to a published port on 127.0.0.1 need (their
// packets leave by the bridge with a loopback source, and the replies
// come back to a loopback destination). It also lets the containers on
// the bridge send to the host's loopback, which the firewall's CNM-INPUT
// rule drops; it is on only while needed all the same. A bridge that is
// gone has nothing to set: the driver syncs the ports of the one it
// makes again.
func SetRouteLocalnet(bridge string, on bool) error {
	value := "0"
	if on {
		value = "1"
	}
	err := SetSysctl("net/ipv4/conf/"+bridge+"/route_localnet", value)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// SetSysctl writes value to /proc/sys/key unless it holds it already.
func SetSysctl(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	if cur, err := os.ReadFile(path); err == nil && string(cur) == value+"\n" {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// SandboxEnd is the name a veth's sandbox end is made under: the
// interface's own, ifName, so that the core need not rename it in the
// sandbox (a rename waits for an RCU grace period with RTNL held,
// holding up every other plugin's link changes); temp when the request
// names none.
func SandboxEnd(ifName, temp string) string {
	if ifName != "" {
		return ifName
	}
	return temp
}

// Veth is a veth pair for VethPair to make.
type Veth struct {
	// Bridge is what the host end is plugged into.
	Bridge netlink.Link
	// MTU is the pair's; 0 is the bridge's.
	MTU int
	// Host is the host end's name.
	Host string
	// Peer is the sandbox end's name, made in place in the sandbox at
	// Sandbox with MAC (nil: the kernel's one).
	Peer, Sandbox string
	MAC           net.HardwareAddr
}

// VethPair makes v in one request: the sandbox end is made in place,
// since moving a link between namespaces costs the kernel about 15 ms. A
// peer named as the sandbox's interface will be needs no rename there;
// if the sandbox has a link of that name already, VethPair fails with an
// error wrapping sandbox.ErrInterfaceExists, and nothing is made. It
// returns the host end, down and unmarked (the kernel takes no ifalias
// at creation): the driver's to finish, and to delete if it cannot.
func VethPair(v Veth) (netlink.Link, error) {
	mtu := v.MTU
	if mtu == 0 {
		mtu = v.Bridge.Attrs().MTU
	}
	sbx, err := ns.GetNS(v.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("open sandbox %s: %w", v.Sandbox, err)
	}
	defer sbx.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: v.Host, MTU: mtu, MasterIndex: v.Bridge.Attrs().Index, TxQLen: -1},
		PeerName:         v.Peer,
		PeerHardwareAddr: v.MAC,
		PeerNamespace:    netlink.NsFd(int(sbx.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, vethError(v, err)
	}
	link, err := netlink.LinkByName(v.Host)
	if err != nil {
		_ = DeleteLink(v.Host)
		return nil, fmt.Errorf("find veth %s: %w", v.Host, err)
	}
	return link, nil
}

// vethError names the link whose name made the veth's creation fail: the
// kernel says only EEXIST, for the host end's name here or the peer's in
// the sandbox.
func vethError(v Veth, err error) error {
	if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create veth %s: %w", v.Host, err)
	}
	if _, lerr := netlink.LinkByName(v.Host); lerr == nil {
		return fmt.Errorf("create veth %s: a link of that name exists on the host: %w", v.Host, err)
	}
	return fmt.Errorf("create veth %s: %s in %s: %w", v.Host, v.Peer, v.Sandbox, sandbox.ErrInterfaceExists)
}
