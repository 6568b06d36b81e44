package sandbox

import (
	"bytes"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Check verifies that the sandbox ref names has the interface ifc.DstName,
// up, with ifc.MAC (if set), every address of ifc.Addresses and every
// route of ifc.Routes (same destination and gateway). Other addresses and
// routes are allowed: chained plugins may add them. ifc.SrcName is not
// used. The error names every difference, e.g.
// "interface eth0 in /var/run/netns/x: address 10.0.0.5/24 missing; MAC is
// 02:00:00:00:00:01, expected 02:00:00:00:00:02". A missing sandbox wraps
// ErrNoSandbox (and ErrReplaced when the path holds another namespace),
// a missing interface ErrInterfaceNotFound.
func Check(ref Ref, ifc Interface) error {
	nsPath := ref.Path
	c, err := newConfig(ifc, false)
	if err != nil {
		return fmt.Errorf("check %s in %s: %w", ifc.DstName, nsPath, err)
	}
	sbx, err := ref.openToRead()
	if err != nil {
		return err
	}
	defer sbx.Close()
	return doNetlink(sbx, func(h *netlink.Handle) error {
		return checkInterface(h, nsPath, c)
	})
}

func checkInterface(h *netlink.Handle, nsPath string, c config) error {
	link, err := h.LinkByName(c.dst)
	if isLinkGone(err) {
		return fmt.Errorf("interface %s in %s: %w", c.dst, nsPath, ErrInterfaceNotFound)
	}
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", c.dst, nsPath, err)
	}
	diffs := linkDiffs(link.Attrs(), c)
	addrDiffs, err := addressDiffs(h, link, c.addrs)
	if err != nil {
		return fmt.Errorf("list addresses of %s in %s: %w", c.dst, nsPath, err)
	}
	routeDiffs, err := routeDiffs(h, link, c.routes)
	if err != nil {
		return fmt.Errorf("list routes of %s in %s: %w", c.dst, nsPath, err)
	}
	diffs = append(append(diffs, addrDiffs...), routeDiffs...)
	if len(diffs) > 0 {
		return fmt.Errorf("interface %s in %s: %s", c.dst, nsPath, strings.Join(diffs, "; "))
	}
	return nil
}

func linkDiffs(attrs *netlink.LinkAttrs, c config) []string {
	var diffs []string
	if attrs.Flags&net.FlagUp == 0 {
		diffs = append(diffs, "is down")
	}
	if c.mac != nil && !bytes.Equal(attrs.HardwareAddr, c.mac) {
		diffs = append(diffs, fmt.Sprintf("MAC is %s, expected %s", attrs.HardwareAddr, c.mac))
	}
	return diffs
}

func addressDiffs(h *netlink.Handle, link netlink.Link, want []*net.IPNet) ([]string, error) {
	if len(want) == 0 {
		return nil, nil
	}
	have, err := listAddrs(h, link)
	if err != nil {
		return nil, err
	}
	var diffs []string
	for _, w := range want {
		if d := addressDiff(have, w); d != "" {
			diffs = append(diffs, d)
		}
	}
	return diffs, nil
}

// addressDiff describes how w is missing from have, or returns "".
func addressDiff(have []netlink.Addr, w *net.IPNet) string {
	var otherPrefix []string
	for _, a := range have {
		switch {
		case !a.IP.Equal(w.IP):
		case !sameNet(a.IPNet, w):
			otherPrefix = append(otherPrefix, a.IPNet.String())
		case a.Flags&unix.IFA_F_DADFAILED != 0:
			return fmt.Sprintf("address %s failed duplicate address detection", w)
		default:
			return ""
		}
	}
	if len(otherPrefix) > 0 {
		return fmt.Sprintf("address %s missing (has %s)", w, strings.Join(otherPrefix, ", "))
	}
	return fmt.Sprintf("address %s missing", w)
}

func routeDiffs(h *netlink.Handle, link netlink.Link, want []Route) ([]string, error) {
	if len(want) == 0 {
		return nil, nil
	}
	have, err := listRoutes(h, link)
	if err != nil {
		return nil, err
	}
	var diffs []string
	for _, w := range want {
		if d := routeDiff(have, w); d != "" {
			diffs = append(diffs, d)
		}
	}
	return diffs, nil
}

// routeDiff describes how w is missing from have, or returns "".
func routeDiff(have []netlink.Route, w Route) string {
	var otherGW []string
	for _, kr := range have {
		if routeMatches(kr, w.Dst, w.GW) {
			return ""
		}
		if sameNet(kernelDst(kr), w.Dst) {
			otherGW = append(otherGW, Route{Dst: w.Dst, GW: kr.Gw}.String())
		}
	}
	if len(otherGW) > 0 {
		return fmt.Sprintf("route %s missing (has %s)", w, strings.Join(otherGW, ", "))
	}
	return fmt.Sprintf("route %s missing", w)
}
