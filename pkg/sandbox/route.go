package sandbox

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// AddRoute adds r through the interface called name in the sandbox ref
// names, if its path still holds the namespace that was joined (else the
// error wraps ErrNoSandbox). A route that is there already is not an
// error; a default route of a family the sandbox has one of through
// another interface gives ErrDefaultTaken, and nothing changes.
func AddRoute(ref Ref, name string, r Route) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	cr, err := canonicalRoute(r)
	if err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	sbx, err := ref.open()
	if err != nil {
		return err
	}
	defer sbx.Close()
	return doNetlink(sbx, func(h *netlink.Handle) error {
		link, err := h.LinkByName(name)
		if isLinkGone(err) {
			return fmt.Errorf("add route %s: interface %s in %s: %w", cr, name, ref.Path, ErrInterfaceNotFound)
		}
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, ref.Path, err)
		}
		if err := addRoute(h, link, cr); err != nil {
			return fmt.Errorf("add route %s to %s in %s: %w", cr, name, ref.Path, err)
		}
		return nil
	})
}
