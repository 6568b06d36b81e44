package bridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Ownership of host links. cnmnet marks every link it creates with its
// alias (IFLA_IFALIAS, shown by `ip -d link`): "cnmnet:<network id>" on
// a bridge, "cnmnet:<endpoint id>" on a host veth. Only links so marked
// are ever deleted by network removal, the undo of a failed ADD or the
// janitor; a bridge that was on the host before, and whatever else is
// plugged into a bridge (a VM's tap, say), are left alone.
const ownerAliasPrefix = "cnmnet:"

// Origins of a network's bridge, as the driver's record keeps them.
const (
	originCreated = "created" // made by cnmnet, marked as the network's
	originAdopted = "adopted" // on the host before; never deleted
)

// isHostVethName says whether name is one vethNames makes for a host
// end: veth and 11 lowercase hex digits.
func isHostVethName(name string) bool {
	id, ok := strings.CutPrefix(name, "veth")
	if !ok || len(id) != 11 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func ownerAlias(id string) string { return ownerAliasPrefix + id }

// markOwned marks a link cnmnet has just created as the object id's.
// The kernel ignores IFLA_IFALIAS in RTM_NEWLINK, hence a second call: a
// crash in between leaves a link that looks foreign, so it is leaked,
// never deleted, which is the safe direction.
func markOwned(link netlink.Link, id string) error {
	if err := netlink.LinkSetAlias(link, ownerAlias(id)); err != nil {
		return fmt.Errorf("mark %s as cnmnet's: %w", link.Attrs().Name, err)
	}
	link.Attrs().Alias = ownerAlias(id)
	return nil
}

// ownedBy says whether link carries the mark of the object id.
func ownedBy(link netlink.Link, id string) bool {
	return link.Attrs().Alias == ownerAlias(id)
}

// ownedHostVeth says whether link is the host end of a veth cnmnet made
// for an endpoint: named like one, and marked with that endpoint's ID.
func ownedHostVeth(link netlink.Link) bool {
	name := link.Attrs().Name
	if link.Type() != "veth" || !isHostVethName(name) {
		return false
	}
	eid, _, ok := vethMark(link)
	if !ok || len(eid) < 11 {
		return false
	}
	host, _ := vethNames(eid)
	return host == name
}

// vethOwner is the mark of a host veth: its endpoint, and the network
// whose bridge it belongs on, so that a bridge made again can take its
// ports back.
func vethOwner(eid, nid string) string { return eid + "/" + nid }

// vethMark reads a host veth's mark; nid is "" in a mark without one.
func vethMark(link netlink.Link) (eid, nid string, ok bool) {
	rest, ok := strings.CutPrefix(link.Attrs().Alias, ownerAliasPrefix)
	if !ok {
		return "", "", false
	}
	eid, nid, _ = strings.Cut(rest, "/")
	return eid, nid, true
}

// releaseBridge removes what cnmnet made of the network's bridge: the
// bridge itself when its alias marks it as this network's, else only the
// gateway addresses cnmnet added to it. A bridge from a record written
// before ownership was tracked, and not marked, is left whole: leaked
// rather than deleted. An adopted bridge keeps the MTU, up state and
// promiscuity cnmnet may have set: they cannot be told apart from what
// its owner wants.
func releaseBridge(n *network) error {
	link, err := netlink.LinkByName(n.Bridge)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil // not the bridge cnmnet made or adopted
	}
	if ownedBy(link, n.ID) {
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete bridge %s: %w", n.Bridge, err)
		}
		return nil
	}
	for _, cidr := range n.AddedAddrs {
		if err := delAddress(link, cidr); err != nil {
			return err
		}
	}
	return nil
}

// delAddress removes an address from a link; a missing one is not an
// error.
func delAddress(link netlink.Link, cidr string) error {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("gateway %s: %w", cidr, err)
	}
	if err := netlink.AddrDel(link, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from bridge %s: %w", cidr, link.Attrs().Name, err)
	}
	return nil
}

// noteAdded records that cnmnet put cidr on the network's adopted bridge.
func (n *network) noteAdded(cidr string) {
	if !slices.Contains(n.AddedAddrs, cidr) {
		n.AddedAddrs = append(n.AddedAddrs, cidr)
	}
}
