package dataplane_test

import (
	"fmt"
	"net"
	"os/exec"
	"sort"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
)

// linkState is what a spec compares of a link: identity, mark, MAC,
// MTU, master, up, addresses.
func linkState(h *host, name string) string {
	GinkgoHelper()
	var s string
	in(h.ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		a := l.Attrs()
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var as []string
		for _, ad := range addrs {
			if ad.IP.IsGlobalUnicast() {
				as = append(as, ad.IPNet.String())
			}
		}
		sort.Strings(as)
		s = fmt.Sprintf("%d %s %q %s mtu=%d master=%d up=%v %v", a.Index, l.Type(), a.Alias, a.HardwareAddr, a.MTU,
			a.MasterIndex, a.Flags&net.FlagUp != 0, as)
		if vx, ok := l.(*netlink.Vxlan); ok {
			s += fmt.Sprintf(" vni=%d port=%d local=%s dev=%d learning=%v proxy=%v",
				vx.VxlanId, vx.Port, vx.SrcAddr, vx.VtepDevIndex, vx.Learning, vx.Proxy)
		}
		return nil
	})
	return s
}

func linkNames(h *host) []string {
	GinkgoHelper()
	var names []string
	in(h.ns, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	sort.Strings(names)
	return names
}

// ip runs the ip command in h.
func ip(h *host, args ...string) {
	GinkgoHelper()
	in(h.ns, func() error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
		return nil
	})
}

func check(h *host, n dataplane.Network) error {
	return inErr(h.ns, func() error { return dataplane.Check(n) })
}

func ensureErr(h *host, n dataplane.Network) error {
	return inErr(h.ns, func() error { return dataplane.Ensure(n) })
}

var _ = Describe("a network's links on one host", func() {
	var (
		h *host
		n dataplane.Network
	)
	BeforeEach(func() {
		h = newWorld(1, 1500).hosts[0]
		n = h.network(idA, 4242, "10.77.0.1/24", "fd00:77::1/64")
		n.Port = 0 // the default, set explicitly on the device
	})

	It("makes a bridge with the network's MAC and a VXLAN device as configured, and a second Ensure changes nothing", func() {
		before := linkNames(h)
		h.ensure(n)
		Expect(linkNames(h)).To(ConsistOf(append(before, n.Bridge, n.VXLAN)))
		br, vx := linkState(h, n.Bridge), linkState(h, n.VXLAN)
		var brIndex, ethIndex int
		in(h.ns, func() error {
			b, err := netlink.LinkByName(n.Bridge)
			if err != nil {
				return err
			}
			e, err := netlink.LinkByName("eth0")
			brIndex, ethIndex = b.Attrs().Index, e.Attrs().Index
			return err
		})
		Expect(br).To(HaveSuffix(fmt.Sprintf(` bridge "cnmnet:%s" %s mtu=1450 master=0 up=true [10.77.0.1/24 fd00:77::1/64]`,
			idA, dataplane.BridgeMAC(idA))))
		Expect(vx).To(ContainSubstring(fmt.Sprintf(` vxlan "cnmnet:%s" `, idA)))
		Expect(vx).To(HaveSuffix(fmt.Sprintf(` mtu=1450 master=%d up=true [] vni=4242 port=4789 local=192.168.77.1 dev=%d learning=false proxy=true`,
			brIndex, ethIndex)))
		Expect(check(h, n)).To(Succeed())

		peer := dataplane.Peer{MAC: mac("02:00:0a:4d:00:0c"), IPs: []net.IP{net.ParseIP("10.77.0.12")}, VTEP: net.ParseIP("192.168.77.2")}
		h.setPeer(n, peer)
		h.ensure(n)
		Expect(linkState(h, n.Bridge)).To(Equal(br))
		Expect(linkState(h, n.VXLAN)).To(Equal(vx))
		Expect(peerStrings(h.peers(n)...)).To(Equal(peerStrings(peer)), "the forwarding entries stay")
	})

	It("gives the same bridge MAC on every host and names the links after the ID", func() {
		Expect(dataplane.BridgeMAC(idA)).To(Equal(dataplane.BridgeMAC(idA)))
		Expect(dataplane.BridgeMAC(idA)).NotTo(Equal(dataplane.BridgeMAC(idB)))
		Expect(dataplane.BridgeMAC(idA)[0]&0x03).To(Equal(byte(0x02)), "locally administered unicast")
		br, vx := dataplane.Names(idA)
		Expect([]string{br, vx}).To(Equal([]string{"ov-a1b2c3d4e5", "vx-a1b2c3d4e5"}))
		br, _ = dataplane.Names("my-network")
		Expect(br).To(MatchRegexp(`^ov-[0-9a-f]{10}$`))
	})

	DescribeTable("refuses, before making anything, a link of its names that is not the network's",
		func(name func(dataplane.Network) string, makeLink func(string) netlink.Link) {
			taken := name(n)
			in(h.ns, func() error { return netlink.LinkAdd(makeLink(taken)) })
			before, was := linkNames(h), linkState(h, taken)
			err := ensureErr(h, n)
			Expect(err).To(MatchError(dataplane.ErrConflict))
			Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("%q exists that is not network %s's", taken, idA))))
			Expect(linkNames(h)).To(Equal(before))
			Expect(linkState(h, taken)).To(Equal(was))

			By("and Remove leaves it alone")
			in(h.ns, func() error { return dataplane.Remove(n) })
			Expect(linkState(h, taken)).To(Equal(was))
		},
		Entry("an unmarked bridge of the bridge's name", func(n dataplane.Network) string { return n.Bridge },
			func(s string) netlink.Link { return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s}} }),
		Entry("a veth of the bridge's name", func(n dataplane.Network) string { return n.Bridge },
			func(s string) netlink.Link {
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s}, PeerName: "p" + s[1:]}
			}),
		Entry("a veth of the VXLAN device's name", func(n dataplane.Network) string { return n.VXLAN },
			func(s string) netlink.Link {
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s}, PeerName: "p" + s[1:]}
			}),
	)

	It("refuses a bridge marked as another network's", func() {
		other := n
		other.ID, other.VNI = idB, 4343
		h.ensure(other)
		n.Bridge = other.Bridge
		err := ensureErr(h, n)
		Expect(err).To(MatchError(dataplane.ErrConflict))
		Expect(err).To(MatchError(ContainSubstring(`alias "cnmnet:` + idB)))
		Expect(check(h, other)).To(Succeed())
	})

	It("refuses a VNI another VXLAN device has, on any port, naming the device, and makes nothing", func() {
		before := linkNames(h)
		for _, port := range []int{4789, 8472} {
			in(h.ns, func() error {
				return netlink.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, VxlanId: 4242, Port: port})
			})
			err := ensureErr(h, n)
			Expect(err).To(MatchError(dataplane.ErrConflict))
			Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("vni: 4242 is taken on this host by VXLAN device other0 (port %d)", port))))
			Expect(linkNames(h)).To(ConsistOf(append(before, "other0")))
			ip(h, "link", "del", "other0")
		}
	})

	It("refuses a UDP port a socket holds, and removes what it made", func() {
		before := linkNames(h)
		var sock int
		in(h.ns, func() error {
			var err error
			sock, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			return unix.Bind(sock, &unix.SockaddrInet4{Port: 4789})
		})
		DeferCleanup(unix.Close, sock)
		err := ensureErr(h, n)
		Expect(err).To(MatchError(dataplane.ErrConflict))
		Expect(err).To(MatchError(ContainSubstring("UDP port 4789 is taken")))
		Expect(linkNames(h)).To(Equal(before))
	})

	DescribeTable("refuses bad values, naming the field, and makes nothing",
		func(change func(*dataplane.Network), field string) {
			before := linkNames(h)
			change(&n)
			err := ensureErr(h, n)
			Expect(err).To(MatchError(dataplane.ErrInvalid))
			Expect(err).To(MatchError(ContainSubstring(field)))
			Expect(linkNames(h)).To(Equal(before))
		},
		Entry("VNI 0", func(n *dataplane.Network) { n.VNI = 0 }, "vni: 0"),
		Entry("VNI above 24 bits", func(n *dataplane.Network) { n.VNI = 1 << 24 }, "vni: 16777216"),
		Entry("a port out of range", func(n *dataplane.Network) { n.Port = 70000 }, "port: 70000"),
		Entry("an unknown underlay interface", func(n *dataplane.Network) { n.Underlay = "nope0" }, `underlay: no interface "nope0"`),
		Entry("a VTEP address not on the underlay", func(n *dataplane.Network) { n.LocalIP = net.ParseIP("192.168.77.9") },
			"localIP: 192.168.77.9 is not an address of underlay eth0"),
		Entry("no VTEP address", func(n *dataplane.Network) { n.LocalIP = nil }, "localIP"),
		Entry("an MTU the underlay cannot carry", func(n *dataplane.Network) { n.MTU = 1451 }, "mtu: 1451 is more than underlay eth0 carries (1450"),
		Entry("an MTU too small for IPv6", func(n *dataplane.Network) { n.MTU = 1200 }, "mtu: 1200 is below IPv6's minimum"),
		Entry("a name too long", func(n *dataplane.Network) { n.Bridge = "ov-0123456789abc" }, "bridge: \"ov-0123456789abc\""),
		Entry("one name for both", func(n *dataplane.Network) { n.VXLAN = n.Bridge }, "bridge and vxlan"),
		Entry("no ID", func(n *dataplane.Network) { n.ID = "" }, "network ID"),
	)

	It("Remove leaves only what was there, and may be repeated", func() {
		before := linkNames(h)
		h.ensure(n)
		in(h.ns, func() error { return dataplane.Remove(n) })
		Expect(linkNames(h)).To(Equal(before))
		in(h.ns, func() error { return dataplane.Remove(n) })
	})

	It("Check names what is wrong, and Ensure repairs it", func() {
		h.ensure(n)
		vxIndex := func() int {
			var i int
			in(h.ns, func() error {
				l, err := netlink.LinkByName(n.VXLAN)
				if err == nil {
					i = l.Attrs().Index
				}
				return err
			})
			return i
		}

		By("learning turned on: repaired in place, the entries kept")
		peer := dataplane.Peer{MAC: mac("02:00:0a:4d:00:0c"), IPs: []net.IP{net.ParseIP("10.77.0.12")}, VTEP: net.ParseIP("192.168.77.2")}
		h.setPeer(n, peer)
		index := vxIndex()
		ip(h, "link", "set", n.VXLAN, "type", "vxlan", "learning")
		Expect(check(h, n)).To(MatchError(ContainSubstring("vxlan " + n.VXLAN + " has learning on, want off")))
		h.ensure(n)
		Expect(check(h, n)).To(Succeed())
		Expect(vxIndex()).To(Equal(index))
		Expect(h.peers(n)).To(HaveLen(1))

		By("the VXLAN device detached and down, the bridge down, a gateway gone, the bridge's MAC changed")
		ip(h, "link", "set", n.VXLAN, "nomaster")
		ip(h, "link", "set", n.VXLAN, "down")
		ip(h, "link", "set", n.Bridge, "down")
		ip(h, "link", "set", n.Bridge, "address", "02:00:00:00:00:01")
		ip(h, "addr", "del", "10.77.0.1/24", "dev", n.Bridge)
		err := check(h, n)
		Expect(err).To(HaveOccurred())
		for _, want := range []string{
			"vxlan " + n.VXLAN + " is not attached to bridge " + n.Bridge,
			"vxlan " + n.VXLAN + " is down",
			"bridge " + n.Bridge + " is down",
			"bridge " + n.Bridge + " has MAC 02:00:00:00:00:01, want " + dataplane.BridgeMAC(idA).String(),
			"bridge " + n.Bridge + " lacks gateway 10.77.0.1/24",
			// The kernel drops a link's IPv6 addresses when it goes down.
			"bridge " + n.Bridge + " lacks gateway fd00:77::1/64",
		} {
			Expect(err.Error()).To(ContainSubstring(want))
		}
		h.ensure(n)
		Expect(check(h, n)).To(Succeed())

		By("the VXLAN device missing")
		ip(h, "link", "del", n.VXLAN)
		Expect(check(h, n)).To(MatchError(ContainSubstring("vxlan " + n.VXLAN + " is missing")))
		h.ensure(n)
		Expect(check(h, n)).To(Succeed())

		By("a VXLAN device of the network with another VNI: made anew")
		ip(h, "link", "del", n.VXLAN)
		in(h.ns, func() error {
			l := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: n.VXLAN}, VxlanId: 99, Port: 4789}
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
			return netlink.LinkSetAlias(l, "cnmnet:"+idA)
		})
		Expect(check(h, n)).To(MatchError(ContainSubstring("has VNI 99, want 4242")))
		h.ensure(n)
		Expect(check(h, n)).To(Succeed())

		By("the VTEP address gone from the underlay")
		ip(h, "addr", "del", "192.168.77.1/24", "dev", "eth0")
		Expect(check(h, n)).To(MatchError(ContainSubstring("underlay eth0 does not have the VTEP address 192.168.77.1")))
	})
})
