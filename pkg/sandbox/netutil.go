package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/nldump"
)

// doNetlink runs fn in the sandbox with one netlink socket of the
// sandbox's for all its requests: netlink's package functions open and
// close a socket per request, about ten system calls each.
func doNetlink(sbx ns.NetNS, fn func(h *netlink.Handle) error) error {
	return sbx.Do(func(ns.NetNS) error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open a netlink socket: %w", err)
		}
		defer h.Close()
		return fn(h)
	})
}

func listAddrs(h *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	return nldump.Retry(func() ([]netlink.Addr, error) {
		return h.AddrList(link, netlink.FAMILY_ALL)
	})
}

// listRoutes lists the main-table routes through link.
func listRoutes(h *netlink.Handle, link netlink.Link) ([]netlink.Route, error) {
	return nldump.Retry(func() ([]netlink.Route, error) {
		return h.RouteList(link, netlink.FAMILY_ALL)
	})
}

// isLinkGone reports whether err means the link does not exist (any more).
func isLinkGone(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound) || errors.Is(err, unix.ENODEV)
}

// loopbackUp brings lo up in the current netns.
func loopbackUp(h *netlink.Handle, nsPath string) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", nsPath, err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil // an earlier attachment brought it up
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", nsPath, err)
	}
	return nil
}

// canonicalIP returns ip in 4-byte form for IPv4 and 16-byte form
// otherwise, or nil if ip is not an address.
func canonicalIP(ip net.IP) net.IP {
	if ip4 := ip.To4(); ip4 != nil {
		return ip4
	}
	return ip.To16()
}

// canonicalNet returns n with IP and mask of the same, canonical length,
// so prefix lengths and comparisons come out right whichever form the
// caller built n in (netlink sizes the prefix from the mask alone).
func canonicalNet(n *net.IPNet) (*net.IPNet, error) {
	if n == nil {
		return nil, errors.New("nil address")
	}
	ip := canonicalIP(n.IP)
	if ip == nil {
		return nil, fmt.Errorf("invalid IP in %v", n)
	}
	mask := n.Mask
	if len(ip) == net.IPv4len && len(mask) == net.IPv6len && bytes.Equal(mask[:12], net.CIDRMask(96, 128)[:12]) {
		mask = mask[12:]
	}
	if ones, bits := mask.Size(); bits != 8*len(ip) || (ones == 0 && bits == 0) {
		return nil, fmt.Errorf("invalid mask in %v", n)
	}
	return &net.IPNet{IP: ip, Mask: mask}, nil
}

// routeDst returns the canonical destination network of r: Dst with its
// host bits cleared, or the default route of GW's family if Dst is nil.
func routeDst(r Route) (*net.IPNet, error) {
	if r.Dst == nil {
		gw := canonicalIP(r.GW)
		if gw == nil {
			return nil, errors.New("route has neither destination nor gateway")
		}
		return &net.IPNet{IP: make(net.IP, len(gw)), Mask: net.CIDRMask(0, 8*len(gw))}, nil
	}
	dst, err := canonicalNet(r.Dst)
	if err != nil {
		return nil, fmt.Errorf("route destination: %w", err)
	}
	dst.IP = dst.IP.Mask(dst.Mask)
	return dst, nil
}

// sameNet reports whether a and b are the same address and prefix length.
func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	ca, errA := canonicalNet(a)
	cb, errB := canonicalNet(b)
	if errA != nil || errB != nil {
		return false
	}
	onesA, _ := ca.Mask.Size()
	onesB, _ := cb.Mask.Size()
	return ca.IP.Equal(cb.IP) && onesA == onesB
}

// routeMatches reports whether the kernel route kr goes to dst via gw
// (nil gw: no gateway). Other attributes (metric, source, protocol) may
// differ, so a route added by a chained plugin or the kernel counts too.
func routeMatches(kr netlink.Route, dst *net.IPNet, gw net.IP) bool {
	if !sameNet(kernelDst(kr), dst) {
		return false
	}
	via, _ := kr.Via.(*netlink.Via)
	if gw == nil {
		return kr.Gw == nil && via == nil
	}
	// An IPv4 route through an IPv6 gateway comes back as RTA_VIA.
	return gw.Equal(kr.Gw) || (via != nil && gw.Equal(via.Addr))
}

// kernelDst returns kr's destination, filling in the default route that
// older netlink versions report as nil.
func kernelDst(kr netlink.Route) *net.IPNet {
	if kr.Dst != nil {
		return kr.Dst
	}
	size := net.IPv6len
	if kr.Family == netlink.FAMILY_V4 {
		size = net.IPv4len
	}
	return &net.IPNet{IP: make(net.IP, size), Mask: net.CIDRMask(0, 8*size)}
}
