package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Netlink requests the netlink package has no call for.

// setLearningOff turns a VXLAN device's learning off in place. Only the
// one attribute is sent: the kernel refuses a change request that
// carries the proxy flag, the port or another VNI, which a full
// LinkModify would.
func setLearningOff(link netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("vxlan"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_VXLAN_LEARNING, nl.Uint8Attr(0))
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("turn learning off on vxlan %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// getNeigh asks the kernel for one neighbour or FDB entry (RTM_GETNEIGH
// without NLM_F_DUMP): an entry costs one message however many entries
// the host has. It returns nil when there is no such entry.
func getNeigh(family, index, flags int, attrs ...*nl.RtAttr) (*netlink.Neigh, error) {
	// Built in zeroed memory: Ndmsg is sent as its bytes, padding
	// included, and the kernel refuses a get whose padding is not zero
	// (a struct copied from the stack may carry garbage there).
	msg := new(netlink.Ndmsg)
	msg.Family, msg.Index, msg.Flags = uint8(family), uint32(index), uint8(flags)
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(msg)
	for _, a := range attrs {
		req.AddData(a)
	}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	return netlink.NeighDeserialize(msgs[0])
}

// getIPNeigh returns the neighbour entry for ip on the link, or nil.
func getIPNeigh(index int, ip net.IP) (*netlink.Neigh, error) {
	family, raw := unix.AF_INET6, ip.To16()
	if v4 := ip.To4(); v4 != nil {
		family, raw = unix.AF_INET, v4
	}
	return getNeigh(family, index, 0, nl.NewRtAttr(unix.NDA_DST, raw))
}

// getVXLANFDB returns the VXLAN device's own FDB entry for mac (its
// first destination), or nil.
func getVXLANFDB(index int, mac net.HardwareAddr) (*netlink.Neigh, error) {
	return getNeigh(unix.AF_BRIDGE, index, netlink.NTF_SELF, nl.NewRtAttr(unix.NDA_LLADDR, mac))
}

// getBridgeFDB returns the bridge's entry for mac (VLAN 0), on whichever
// port, or nil.
func getBridgeFDB(bridgeIndex int, mac net.HardwareAddr) (*netlink.Neigh, error) {
	return getNeigh(unix.AF_BRIDGE, 0, 0,
		nl.NewRtAttr(unix.NDA_LLADDR, mac), nl.NewRtAttr(unix.NDA_MASTER, nl.Uint32Attr(uint32(bridgeIndex))))
}
