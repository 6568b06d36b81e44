package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	// ErrNoSandbox means the netns path is empty, does not exist or is
	// not a network namespace.
	ErrNoSandbox = errors.New("sandbox does not exist")
	// ErrInterfaceExists is returned by Attach when the sandbox already
	// has an interface of the requested name; CNI ADD must then fail.
	ErrInterfaceExists = errors.New("interface already exists in sandbox")
	// ErrInterfaceNotFound is returned by Check when the sandbox has no
	// interface of the requested name.
	ErrInterfaceNotFound = errors.New("interface not found in sandbox")
)

// Route is a route to add in the sandbox through the interface.
type Route struct {
	// Dst is the destination. Nil means the default route of GW's
	// family; 0.0.0.0/0 and ::/0 mean the same. Host bits are ignored.
	Dst *net.IPNet
	// GW is the next hop. Nil makes a link-scope route: Dst is reached
	// directly through the interface.
	GW net.IP
}

// String formats r the way Check reports it, e.g. "0.0.0.0/0 via 10.0.0.1"
// or "10.1.0.0/16 on link".
func (r Route) String() string {
	dst := "default"
	if d, err := routeDst(r); err == nil {
		dst = d.String()
	} else if r.Dst != nil {
		dst = r.Dst.String()
	}
	if r.GW == nil {
		return dst + " on link"
	}
	return dst + " via " + r.GW.String()
}

// Interface is what the core configures in a sandbox.
type Interface struct {
	// InSandbox says SrcName was created inside the sandbox already and
	// needs no move.
	InSandbox bool
	// SrcName is the link's name in the caller's current netns.
	SrcName string
	// DstName is the link's name inside the sandbox (CNI_IFNAME).
	DstName string
	// MAC is set on the link if non-nil.
	MAC       net.HardwareAddr
	Addresses []*net.IPNet
	Routes    []Route
}

// Attached describes the interface as configured in the sandbox.
type Attached struct {
	Name  string
	MAC   net.HardwareAddr
	Index int
	// SkippedRoutes are the default routes not added because the sandbox
	// had one of that family through another interface already.
	SkippedRoutes []Route
}

// Exists reports whether nsPath names a live network namespace: false for
// "", a missing path, or a file that is not a network namespace.
func Exists(nsPath string) bool {
	sbx, err := openSandbox(nsPath)
	if err != nil {
		return false
	}
	_ = sbx.Close()
	return true
}

// LoopbackUp brings lo up in the sandbox, for a sandbox joined without an
// interface (the null driver).
func LoopbackUp(ref Ref) error {
	nsPath := ref.Path
	sbx, err := ref.open()
	if err != nil {
		return err
	}
	defer sbx.Close()
	return doNetlink(sbx, func(h *netlink.Handle) error {
		return loopbackUp(h, nsPath)
	})
}

// Detach deletes the link called name in the sandbox; deleting one end of
// a veth pair deletes the other. It is idempotent, as CNI DEL must be: an
// empty path, a sandbox that is gone or no longer a network namespace, or
// a missing link all return nil. So does a path that now holds another
// namespace than ref's (or a ref with no identity, which cannot be told
// from one): nothing in it is touched.
func Detach(ref Ref, name string) error {
	nsPath := ref.Path
	if nsPath == "" {
		return nil
	}
	if name == "" {
		return errors.New("detach: no interface name given")
	}
	sbx, err := ref.open()
	if errors.Is(err, ErrNoSandbox) {
		return nil
	}
	if err != nil {
		return err
	}
	defer sbx.Close()
	return doNetlink(sbx, func(h *netlink.Handle) error {
		link, err := h.LinkByName(name)
		if isLinkGone(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, nsPath, err)
		}
		if err := h.LinkDel(link); err != nil && !isLinkGone(err) {
			return fmt.Errorf("delete %s in %s: %w", name, nsPath, err)
		}
		return nil
	})
}

// openSandbox opens the network namespace at nsPath. Every way of it not
// being there wraps ErrNoSandbox, so callers can tell "gone" from "broken".
func openSandbox(nsPath string) (ns.NetNS, error) {
	if nsPath == "" {
		return nil, fmt.Errorf("%w: no netns path given", ErrNoSandbox)
	}
	sbx, err := ns.GetNS(nsPath)
	if err != nil {
		if isNSGone(err) {
			return nil, fmt.Errorf("%w: %w", ErrNoSandbox, err)
		}
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	if err := requireNetNS(sbx); err != nil {
		_ = sbx.Close()
		return nil, err
	}
	return sbx, nil
}

// requireNetNS rejects namespace files of other types: ns.GetNS accepts
// anything on nsfs or procfs, such as /proc/<pid>/ns/mnt.
func requireNetNS(sbx ns.NetNS) error {
	typ, err := unix.IoctlRetInt(int(sbx.Fd()), unix.NS_GET_NSTYPE)
	if errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("%w: %s is not a namespace", ErrNoSandbox, sbx.Path())
	}
	if err != nil {
		return fmt.Errorf("query namespace type of %s: %w", sbx.Path(), err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("%w: %s is not a network namespace", ErrNoSandbox, sbx.Path())
	}
	return nil
}

// isNSGone reports whether err from ns.GetNS means the namespace is not
// there: the path is missing, or the bind mount was removed and left a
// plain file behind.
func isNSGone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	return errors.As(err, &notExist) || errors.As(err, &notNS) || errors.Is(err, os.ErrNotExist)
}

// validName applies the kernel's rules for interface names, so a bad
// CNI_IFNAME gets a clear error rather than EINVAL.
func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}
