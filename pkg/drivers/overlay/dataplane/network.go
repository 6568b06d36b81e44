package dataplane

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/nldump"
)

const (
	// DefaultPort is the IANA VXLAN port. Linux's own default is 8472,
	// so the port is always set on the device.
	DefaultPort = 4789
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1

	// What VXLAN adds to an inner frame: outer IP header, UDP (8),
	// VXLAN (8) and the inner Ethernet header (14).
	overheadIPv4 = 20 + 8 + 8 + 14
	overheadIPv6 = 40 + 8 + 8 + 14

	minMTU     = 68   // IPv4's minimum
	minMTUIPv6 = 1280 // below it the kernel disables IPv6 on a link
)

var (
	// ErrInvalid marks an error in the values given (a Network or a
	// Peer): the caller's configuration is wrong.
	ErrInvalid = errors.New("invalid overlay configuration")
	// ErrConflict marks something on this host that stands in the way:
	// a link of the name that is not the network's, another device with
	// the VNI, the UDP port taken.
	ErrConflict = errors.New("conflict on this host")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConflict, fmt.Sprintf(format, args...))
}

// Network is one overlay network's data plane on this host.
type Network struct {
	ID       string       // the CNM network ID; the links are marked with it
	Bridge   string       // bridge name (Names gives the usual one)
	VXLAN    string       // VXLAN device name
	VNI      uint32       // 1..MaxVNI
	Port     int          // UDP port; 0 means DefaultPort
	Underlay string       // the underlay interface, the VTEP's device
	LocalIP  net.IP       // the VTEP address, an address of Underlay
	MTU      int          // overlay MTU; 0: underlay MTU − 50 (IPv4 VTEP) or − 70 (IPv6)
	Gateways []*net.IPNet // addresses put on the bridge, the same on every host
}

// Names returns the usual bridge and VXLAN device names of network id:
// "ov-" and "vx-" followed by 10 hex digits of the ID (of its SHA-256
// when the ID does not start with 10 of them).
func Names(id string) (bridge, vxlan string) {
	short := strings.ToLower(id)
	if len(short) < 10 || !isHex(short[:10]) {
		sum := sha256.Sum256([]byte(id))
		short = hex.EncodeToString(sum[:5])
	}
	return "ov-" + short[:10], "vx-" + short[:10]
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// BridgeMAC is the MAC of network id's bridge, and so of its gateway:
// derived from the ID alone, it is the same on every host, and an
// endpoint that moves keeps resolving the gateway to it. It never
// crosses the tunnel, as ARP and neighbour discovery stop at the VXLAN
// device. Locally administered, unicast, and never Docker's 02:42 prefix
// of container MACs.
func BridgeMAC(id string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("overlay-bridge/" + id))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	if mac[0] == 0x02 && mac[1] == 0x42 {
		mac[1] = 0x43
	}
	return mac
}

// port is the UDP port the network's device uses.
func (n Network) port() int {
	if n.Port == 0 {
		return DefaultPort
	}
	return n.Port
}

// overhead is what encapsulation adds, by the VTEP's address family.
func (n Network) overhead() int {
	if n.LocalIP.To4() == nil {
		return overheadIPv6
	}
	return overheadIPv4
}

// validateNames checks what every function needs: the ID and the names.
func (n Network) validateNames() error {
	if n.ID == "" || strings.ContainsAny(n.ID, " \t\n/") {
		return invalid("network ID %q: must be non-empty, without spaces or slashes", n.ID)
	}
	for _, f := range []struct{ field, name string }{{"bridge", n.Bridge}, {"vxlan", n.VXLAN}} {
		if f.name == "" || len(f.name) > unix.IFNAMSIZ-1 || f.name == "." || f.name == ".." ||
			strings.ContainsAny(f.name, " \t\n/:") {
			return invalid("%s: %q is not a valid interface name (1 to 15 characters, no spaces, '/' or ':')", f.field, f.name)
		}
	}
	if n.Bridge == n.VXLAN {
		return invalid("bridge and vxlan: both named %q", n.Bridge)
	}
	return nil
}

// validate checks the values Ensure needs.
func (n Network) validate() error {
	if err := n.validateNames(); err != nil {
		return err
	}
	if n.VNI < 1 || n.VNI > MaxVNI {
		return invalid("vni: %d is out of range 1-%d", n.VNI, MaxVNI)
	}
	if n.Port < 0 || n.Port > 65535 {
		return invalid("port: %d is out of range 1-65535", n.Port)
	}
	if n.Underlay == "" {
		return invalid("underlay: no interface given")
	}
	if !usableUnicast(n.LocalIP) {
		return invalid("localIP: %v is not a unicast address", n.LocalIP)
	}
	if n.MTU != 0 && n.MTU < minMTU {
		return invalid("mtu: %d is below %d", n.MTU, minMTU)
	}
	for _, g := range n.Gateways {
		if g == nil || g.IP == nil || len(g.Mask) == 0 {
			return invalid("gateways: %v is not an address with a prefix", g)
		}
		if _, bits := g.Mask.Size(); bits == 0 || (g.IP.To4() != nil) != (bits == 32) {
			return invalid("gateways: %v has a mask of the wrong family", g)
		}
	}
	return nil
}

// usableUnicast says whether ip can be a VTEP or an endpoint's address.
func usableUnicast(ip net.IP) bool {
	return ip != nil && len(ip) != 0 && !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLoopback() &&
		!ip.Equal(net.IPv4bcast)
}

// Ownership of links: every link Ensure makes carries the alias
// "cnmnet:<network id>" (IFLA_IFALIAS, shown by `ip -d link`), the mark
// the bridge driver uses too. The kernel ignores IFLA_IFALIAS in
// RTM_NEWLINK, so the mark is set by a second call; a crash in between
// leaves a link that looks foreign and is refused, never deleted, which
// is the safe direction.
const ownerAliasPrefix = "cnmnet:"

func ownerAlias(id string) string { return ownerAliasPrefix + id }

func ownedBy(link netlink.Link, id string) bool { return link.Attrs().Alias == ownerAlias(id) }

// lookup returns the link called name, or nil when there is none.
func lookup(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return link, nil
}

// Ensure creates the network's data plane on this host or repairs it:
// the bridge with its MAC (BridgeMAC), MTU and gateway addresses, and the
// VXLAN device (the VNI, the port, the VTEP address and device, learning
// off, proxy on, the MTU) attached to the bridge, both up. It refuses,
// before making anything, a link of either name that is not marked as
// this network's, and another VXLAN device here with the VNI. A VXLAN
// device of the network whose VNI, port, VTEP or proxy flag differ is
// made anew, which drops its forwarding entries: reconcile the peers
// after Ensure. What one failed call created it removes again.
func Ensure(n Network) (err error) {
	if err := n.validate(); err != nil {
		return err
	}
	n.Port = n.port()
	under, err := underlay(n)
	if err != nil {
		return err
	}
	mtu, err := overlayMTU(n, under)
	if err != nil {
		return err
	}
	if err := checkConflicts(n); err != nil {
		return err
	}
	var created []netlink.Link
	defer func() {
		if err != nil {
			for _, l := range created {
				_ = netlink.LinkDel(l) // best effort: the error says what went wrong
			}
		}
	}()
	br, made, err := ensureBridge(n, mtu)
	if made {
		created = append(created, br)
	}
	if err != nil {
		return err
	}
	vx, made, err := ensureVXLAN(n, under, br, mtu)
	if made {
		created = append(created, vx)
	}
	if err != nil {
		return err
	}
	for _, g := range n.Gateways {
		if err := addAddress(br, g); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(vx); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return conflict("vxlan %s: UDP port %d is taken in this namespace by another socket or VXLAN device", n.VXLAN, n.Port)
		}
		return fmt.Errorf("set vxlan %s up: %w", n.VXLAN, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up: %w", n.Bridge, err)
	}
	return nil
}

// underlay finds the VTEP's device and checks the VTEP address is on it.
func underlay(n Network) (netlink.Link, error) {
	link, err := lookup(n.Underlay)
	if err != nil {
		return nil, err
	}
	if link == nil {
		return nil, invalid("underlay: no interface %q on this host", n.Underlay)
	}
	family := netlink.FAMILY_V4
	if n.LocalIP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", n.Underlay, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(n.LocalIP) {
			return link, nil
		}
	}
	return nil, invalid("localIP: %s is not an address of underlay %s", n.LocalIP, n.Underlay)
}

// overlayMTU is the MTU asked for, or the largest the underlay carries.
func overlayMTU(n Network, under netlink.Link) (int, error) {
	most := under.Attrs().MTU - n.overhead()
	if n.MTU == 0 && most < minMTU {
		return 0, invalid("underlay: MTU %d of %s leaves no room for VXLAN", under.Attrs().MTU, n.Underlay)
	}
	if n.MTU > most {
		return 0, invalid("mtu: %d is more than underlay %s carries (%d, its MTU %d less %d for VXLAN)",
			n.MTU, n.Underlay, most, under.Attrs().MTU, n.overhead())
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = most
	}
	for _, g := range n.Gateways {
		if g.IP.To4() == nil && mtu < minMTUIPv6 {
			return 0, invalid("mtu: %d is below IPv6's minimum %d, and gateway %v is IPv6", mtu, minMTUIPv6, g)
		}
	}
	return mtu, nil
}

// checkConflicts refuses links of the network's names that are not its
// own, and another VXLAN device with the VNI (the kernel refuses a second
// device with a VNI on one port; another port would work, but two
// networks of one VNI on one host are a configuration error).
func checkConflicts(n Network) error {
	links, err := nldump.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		switch a.Name {
		case n.Bridge:
			if _, ok := l.(*netlink.Bridge); !ok || !ownedBy(l, n.ID) {
				return conflict("bridge: a %s link %q exists that is not network %s's (alias %q)", l.Type(), a.Name, n.ID, a.Alias)
			}
		case n.VXLAN:
			if _, ok := l.(*netlink.Vxlan); !ok || !ownedBy(l, n.ID) {
				return conflict("vxlan: a %s link %q exists that is not network %s's (alias %q)", l.Type(), a.Name, n.ID, a.Alias)
			}
		}
		if vx, ok := l.(*netlink.Vxlan); ok && a.Name != n.VXLAN && uint32(vx.VxlanId) == n.VNI {
			return conflict("vni: %d is taken on this host by VXLAN device %s (port %d)", n.VNI, a.Name, vx.Port)
		}
	}
	return nil
}

// createMarked adds link and marks it as the network's; a link that
// cannot be marked is deleted again, as nothing else would delete it.
func createMarked(link netlink.Link, id string) (netlink.Link, error) {
	name := link.Attrs().Name
	if err := netlink.LinkAdd(link); err != nil {
		return nil, fmt.Errorf("create %s %s: %w", link.Type(), name, err)
	}
	made, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(made, ownerAlias(id)); err != nil {
		_ = netlink.LinkDel(made)
		return nil, fmt.Errorf("mark %s as network %s's: %w", name, id, err)
	}
	made.Attrs().Alias = ownerAlias(id)
	return made, nil
}

// ensureBridge makes the bridge or repairs the one the network has.
// made says the link is new (the caller removes it if Ensure fails).
func ensureBridge(n Network, mtu int) (link netlink.Link, made bool, err error) {
	mac := BridgeMAC(n.ID)
	link, err = lookup(n.Bridge)
	if err != nil {
		return nil, false, err
	}
	if link == nil {
		// A bridge given a MAC keeps it; one without takes its lowest
		// port's and changes it as ports come and go.
		link, err = createMarked(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{
			Name: n.Bridge, MTU: mtu, TxQLen: -1, HardwareAddr: mac}}, n.ID)
		return link, link != nil, err
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return nil, false, fmt.Errorf("set MAC of bridge %s: %w", n.Bridge, err)
		}
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, false, fmt.Errorf("set MTU of bridge %s: %w", n.Bridge, err)
		}
	}
	return link, false, nil
}

// vxlanSpec is the VXLAN device the network wants.
func vxlanSpec(n Network, under, br netlink.Link, mtu int) *netlink.Vxlan {
	return &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: n.VXLAN, MTU: mtu, TxQLen: -1, MasterIndex: br.Attrs().Index},
		VxlanId:   int(n.VNI),
		// The device binds its socket and checks VNIs in the namespace
		// it is made in: this one, next to the underlay device.
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      n.LocalIP,
		Port:         n.Port,
		// Learning off: every remote endpoint is programmed, and a
		// learnt entry would outlive a move (and make the kernel drop
		// packets that disagree with a permanent one).
		Learning: false,
		// Proxy: the device answers ARP and neighbour solicitations from
		// its neighbour table, so neither crosses the tunnel.
		Proxy: true,
	}
}

// vxlanDiffers names what of an existing VXLAN device cannot be changed
// in place (the kernel refuses to change VNI, port, VTEP and proxy).
func vxlanDiffers(have, want *netlink.Vxlan) string {
	switch {
	case have.FlowBased:
		return "it is flow-based"
	case have.VxlanId != want.VxlanId:
		return fmt.Sprintf("VNI %d, want %d", have.VxlanId, want.VxlanId)
	case have.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", have.Port, want.Port)
	case !have.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local address %v, want %v", have.SrcAddr, want.SrcAddr)
	case have.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay device index %d, want %d", have.VtepDevIndex, want.VtepDevIndex)
	case have.Group != nil && !have.Group.IsUnspecified():
		return fmt.Sprintf("remote or group %v, want none", have.Group)
	case !have.Proxy:
		return "proxy off"
	}
	return ""
}

// ensureVXLAN makes the VXLAN device or repairs the one the network has.
func ensureVXLAN(n Network, under, br netlink.Link, mtu int) (link netlink.Link, made bool, err error) {
	want := vxlanSpec(n, under, br, mtu)
	link, err = lookup(n.VXLAN)
	if err != nil {
		return nil, false, err
	}
	if have, ok := link.(*netlink.Vxlan); ok && vxlanDiffers(have, want) != "" {
		// Ours (checkConflicts saw the mark): made anew.
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			return nil, false, fmt.Errorf("delete vxlan %s to make it anew (%s): %w", n.VXLAN, vxlanDiffers(have, want), err)
		}
		link = nil
	}
	if link == nil {
		link, err = createMarked(want, n.ID)
		return link, link != nil, err
	}
	have := link.(*netlink.Vxlan)
	if have.Learning {
		if err := setLearningOff(link); err != nil {
			return nil, false, err
		}
	}
	if have.MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, false, fmt.Errorf("set MTU of vxlan %s: %w", n.VXLAN, err)
		}
	}
	if have.MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return nil, false, fmt.Errorf("attach vxlan %s to bridge %s: %w", n.VXLAN, n.Bridge, err)
		}
	}
	return link, false, nil
}

// addAddress puts g on the bridge unless it is there; IPv6 without DAD,
// as every host's bridge has the same gateway address.
func addAddress(br netlink.Link, g *net.IPNet) error {
	addr := &netlink.Addr{IPNet: g}
	if g.IP.To4() == nil {
		addr.Flags = unix.IFA_F_NODAD
	}
	err := netlink.AddrAdd(br, addr)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add gateway %s to bridge %s: %w", g, br.Attrs().Name, err)
	}
	return nil
}

// Remove deletes the network's VXLAN device and bridge when they are
// marked as its own (their forwarding entries go with them); links of
// those names that are not, and links already gone, are left alone.
func Remove(n Network) error {
	if err := n.validateNames(); err != nil {
		return err
	}
	var errs []error
	for _, name := range []string{n.VXLAN, n.Bridge} {
		link, err := lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if link == nil || !ownedBy(link, n.ID) {
			continue
		}
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// EffectiveMTU is the overlay MTU Ensure gives the bridge and the VXLAN
// device, and so the one the endpoints' veths want: n.MTU, or the
// underlay's MTU less the encapsulation when n.MTU is 0.
func EffectiveMTU(n Network) (int, error) {
	if err := n.validate(); err != nil {
		return 0, err
	}
	under, err := lookup(n.Underlay)
	if err != nil {
		return 0, err
	}
	if under == nil {
		return 0, invalid("underlay: no interface %q on this host", n.Underlay)
	}
	return overlayMTU(n, under)
}
