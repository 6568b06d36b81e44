package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// config is an Interface validated and in canonical form: 4-byte IPv4
// addresses, and every route with an explicit, masked destination.
type config struct {
	src, dst string
	mac      net.HardwareAddr
	addrs    []*net.IPNet
	routes   []Route
}

// newConfig validates ifc. Check has no use for SrcName, hence needSrc.
func newConfig(ifc Interface, needSrc bool) (config, error) {
	c := config{src: ifc.SrcName, dst: ifc.DstName, mac: ifc.MAC}
	if needSrc {
		if err := validName(ifc.SrcName); err != nil {
			return c, fmt.Errorf("source link: %w", err)
		}
	}
	if err := validName(ifc.DstName); err != nil {
		return c, fmt.Errorf("sandbox interface: %w", err)
	}
	if ifc.MAC != nil && len(ifc.MAC) == 0 {
		return c, errors.New("empty MAC address")
	}
	for _, a := range ifc.Addresses {
		ca, err := canonicalNet(a)
		if err != nil {
			return c, fmt.Errorf("address: %w", err)
		}
		c.addrs = append(c.addrs, ca)
	}
	for _, r := range ifc.Routes {
		cr, err := canonicalRoute(r)
		if err != nil {
			return c, fmt.Errorf("route %s: %w", r, err)
		}
		c.routes = append(c.routes, cr)
	}
	return c, nil
}

func canonicalRoute(r Route) (Route, error) {
	dst, err := routeDst(r)
	if err != nil {
		return Route{}, err
	}
	var gw net.IP
	if r.GW != nil {
		if gw = canonicalIP(r.GW); gw == nil {
			return Route{}, fmt.Errorf("invalid gateway %v", r.GW)
		}
	}
	return Route{Dst: dst, GW: gw}, nil
}

// Attach moves the link ifc.SrcName from the caller's current netns into
// the sandbox ref names and configures it there: it renames it DstName
// while it is down, sets MAC, adds Addresses (IPv6 ones with
// IFA_F_NODAD, so they are usable at once rather than after duplicate
// address detection), brings it up, adds Routes and brings lo up.
//
// If the sandbox already has an interface called DstName, Attach fails
// with an error wrapping ErrInterfaceExists and leaves that interface
// alone; a missing sandbox, or a path that holds another namespace than
// ref's, gives ErrNoSandbox. If anything fails once the
// link is in the sandbox, Attach deletes it (for a veth, with its peer),
// best effort; failures before the move leave the link where it was.
func Attach(ref Ref, ifc Interface) (*Attached, error) {
	nsPath := ref.Path
	c, err := newConfig(ifc, true)
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", ifc.SrcName, nsPath, err)
	}
	sbx, err := ref.open()
	if err != nil {
		return nil, err
	}
	defer sbx.Close()

	if !ifc.InSandbox {
		if err := moveLink(nsPath, sbx, c); err != nil {
			return nil, err
		}
	}
	var att *Attached
	entered := false
	err = doNetlink(sbx, func(h *netlink.Handle) error {
		entered = true
		var cfgErr error
		att, cfgErr = configureMoved(h, nsPath, c)
		return cfgErr
	})
	if err != nil && !entered {
		// Cleaning up needs the sandbox we just failed to enter.
		return nil, fmt.Errorf("configure %s in %s: %w (link left there)", c.src, nsPath, err)
	}
	return att, err
}

// moveLink moves c.src from the current netns into sbx.
func moveLink(nsPath string, sbx ns.NetNS, c config) error {
	link, err := netlink.LinkByName(c.src)
	if err != nil {
		return fmt.Errorf("find %s in the current netns: %w", c.src, err)
	}
	err = netlink.LinkSetNsFd(link, int(sbx.Fd()))
	if errors.Is(err, unix.EEXIST) {
		// The kernel refuses the move when the link's name is taken
		// in the sandbox; that is DstName itself when the two agree.
		if c.src == c.dst {
			err = ErrInterfaceExists
		} else {
			err = fmt.Errorf("an interface named %s is already there: %w", c.src, err)
		}
	}
	if err != nil {
		return fmt.Errorf("move %s into %s: %w", c.src, nsPath, err)
	}
	return nil
}

// configureMoved configures the link moved into the current netns (the
// sandbox), deleting it if that fails.
func configureMoved(h *netlink.Handle, nsPath string, c config) (*Attached, error) {
	link, err := h.LinkByName(c.src)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s after moving it: %w", c.src, nsPath, err)
	}
	att, err := configure(h, nsPath, link, c)
	if err != nil {
		// The index still names the link whether or not the rename happened.
		if delErr := h.LinkDel(link); delErr != nil && !isLinkGone(delErr) {
			err = errors.Join(err, fmt.Errorf("clean up: delete %s in %s: %w", c.src, nsPath, delErr))
		}
		return nil, err
	}
	return att, nil
}

func configure(h *netlink.Handle, nsPath string, link netlink.Link, c config) (*Attached, error) {
	if err := rename(h, nsPath, link, c); err != nil {
		return nil, err
	}
	if c.mac != nil && !bytes.Equal(link.Attrs().HardwareAddr, c.mac) {
		if err := h.LinkSetHardwareAddr(link, c.mac); err != nil {
			return nil, fmt.Errorf("set MAC %s on %s in %s: %w", c.mac, c.dst, nsPath, err)
		}
	}
	for _, a := range c.addrs {
		if err := addAddress(h, link, a); err != nil {
			return nil, fmt.Errorf("add address %s to %s in %s: %w", a, c.dst, nsPath, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up in %s: %w", c.dst, nsPath, err)
	}
	var skipped []Route
	for _, r := range c.routes {
		err := addRoute(h, link, r)
		if errors.Is(err, ErrDefaultTaken) {
			// The sandbox has its default route through another network's
			// interface: as in CNM, one gateway per family, the first.
			skipped = append(skipped, r)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("add route %s to %s in %s: %w", r, c.dst, nsPath, err)
		}
	}
	if err := loopbackUp(h, nsPath); err != nil {
		return nil, err
	}
	att := &Attached{Name: c.dst, MAC: c.mac, Index: link.Attrs().Index}
	if c.mac == nil {
		// The kernel chose the MAC: read it back.
		var err error
		if att, err = describe(h, nsPath, link.Attrs().Index); err != nil {
			return nil, err
		}
	}
	att.SkippedRoutes = skipped
	return att, nil
}

// ErrDefaultTaken means the sandbox has a default route of that family
// already, through another interface.
var ErrDefaultTaken = errors.New("the sandbox has a default route already")

// rename gives the link its sandbox name. The kernel renames only links
// that are down: a move or a creation leaves it down, anything else is
// brought down first. A link made under its sandbox name needs neither.
func rename(h *netlink.Handle, nsPath string, link netlink.Link, c config) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		if err := h.LinkSetDown(link); err != nil {
			return fmt.Errorf("set %s down in %s: %w", c.src, nsPath, err)
		}
	}
	if c.src == c.dst {
		return nil
	}
	err := h.LinkSetName(link, c.dst)
	if errors.Is(err, unix.EEXIST) {
		err = ErrInterfaceExists
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s in %s: %w", c.src, c.dst, nsPath, err)
	}
	return nil
}

func addAddress(h *netlink.Handle, link netlink.Link, a *net.IPNet) error {
	addr := &netlink.Addr{IPNet: a}
	v6 := a.IP.To4() == nil
	if v6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	err := h.AddrAdd(link, addr)
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil // listed twice
	case v6 && errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (is IPv6 disabled in the sandbox?)", err)
	}
	return err
}

// addRoute adds r through link. The route may exist already: a link-scope
// route to an address's subnet duplicates the kernel's prefix route.
func addRoute(h *netlink.Handle, link netlink.Link, r Route) error {
	nr := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: r.Dst, Gw: r.GW}
	if r.GW == nil {
		nr.Scope = netlink.SCOPE_LINK
	}
	err := h.RouteAdd(nr)
	if errors.Is(err, unix.EEXIST) {
		if present, listErr := hasRoute(h, link, r); listErr == nil && present {
			return nil
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			return ErrDefaultTaken
		}
		return fmt.Errorf("a different route to %s exists: %w", r.Dst, err)
	}
	return err
}

func hasRoute(h *netlink.Handle, link netlink.Link, r Route) (bool, error) {
	routes, err := listRoutes(h, link)
	if err != nil {
		return false, err
	}
	for _, kr := range routes {
		if routeMatches(kr, r.Dst, r.GW) {
			return true, nil
		}
	}
	return false, nil
}

// describe reads back the configured link: a rename or MAC change is not
// reflected in the netlink.Link we hold.
func describe(h *netlink.Handle, nsPath string, index int) (*Attached, error) {
	link, err := h.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("read back link %d in %s: %w", index, nsPath, err)
	}
	attrs := link.Attrs()
	return &Attached{Name: attrs.Name, MAC: attrs.HardwareAddr, Index: attrs.Index}, nil
}
