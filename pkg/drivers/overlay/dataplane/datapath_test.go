package dataplane_test

import (
	"net"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/test/testns"
)

// peerAll programs, on every host of the containers, the containers of
// the other hosts as peers of n.
func peerAll(n func(*host) dataplane.Network, cs ...*container) {
	GinkgoHelper()
	for _, c := range cs {
		for _, o := range cs {
			if o.host != c.host {
				c.host.setPeer(n(c.host), o.peer())
			}
		}
	}
}

var _ = Describe("an overlay network across three hosts", func() {
	const underlayMTU = 1400 // below 1500: the case that black-holes when the MTU is not derived
	var (
		w          *world
		h1, h2, h3 *host
		c1, c2, c3 *container
	)
	netA := func(h *host) dataplane.Network {
		n := h.network(idA, 4242, "10.77.0.1/24", "fd00:77::1/64")
		n.MTU = 0 // from the underlay
		return n
	}

	BeforeEach(func() {
		w = newWorld(3, underlayMTU)
		h1, h2, h3 = w.hosts[0], w.hosts[1], w.hosts[2]
		for _, h := range w.hosts {
			h.ensure(netA(h))
		}
		c1 = newContainer(h1, netA(h1), "02:00:0a:4d:00:0b", false, "10.77.0.11/24", "fd00:77::11/64")
		c2 = newContainer(h2, netA(h2), "02:00:0a:4d:00:0c", false, "10.77.0.12/24", "fd00:77::12/64")
		c3 = newContainer(h3, netA(h3), "02:00:0a:4d:00:0d", false, "10.77.0.13/24", "fd00:77::13/64")
		peerAll(netA, c1, c2, c3)
	})

	It("carries IPv4 and IPv6 between containers on different hosts, and each reaches its own host's gateway", func() {
		for _, from := range []*container{c1, c2, c3} {
			for _, to := range []*container{c1, c2, c3} {
				if from == to {
					continue
				}
				for _, ip := range to.ips {
					Expect(from.ping(ip, 0)).To(Succeed())
				}
			}
			Expect(from.ping(net.ParseIP("10.77.0.1"), 0)).To(Succeed())
			Expect(from.ping(net.ParseIP("fd00:77::1"), 0)).To(Succeed())
		}
		Expect(peerStrings(h1.peers(netA(h1))...)).To(Equal(peerStrings(c2.peer(), c3.peer())))
	})

	It("gives the overlay the underlay's MTU less 50 and carries a full-size packet with DF set", func() {
		mtu := underlayMTU - 50
		in(h1.ns, func() error {
			got, err := dataplane.EffectiveMTU(netA(h1))
			Expect(got).To(Equal(mtu))
			return err
		})
		for _, name := range []string{netA(h1).Bridge, netA(h1).VXLAN} {
			in(h1.ns, func() error {
				l, err := netlink.LinkByName(name)
				if err == nil {
					Expect(l.Attrs().MTU).To(Equal(mtu), name)
				}
				return err
			})
		}
		Expect(c1.ping(c2.ips[0], mtu-20-8)).To(Succeed()) // IPv4 and ICMP headers
		Expect(c1.ping(c3.ips[1], mtu-40-8)).To(Succeed()) // IPv6 and ICMPv6 headers
		Expect(c1.ping(c2.ips[0], mtu-20-8+1)).To(MatchError(ContainSubstring("message too long")), "the MTU is the largest")
	})

	It("reaches a moved peer at its new place at once, from every host, with its address and MAC", func() {
		// c2 and c1 talk to c3 first: their neighbour caches hold c3's
		// MAC, and h2's bridge learns it on the VXLAN port.
		Expect(c2.ping(c3.ips[0], 0)).To(Succeed())
		Expect(c1.ping(c3.ips[0], 0)).To(Succeed())
		Expect(h2.bridgeEntry(netA(h2), c3.mac)).To(Equal(netA(h2).VXLAN))
		c4 := newContainer(h3, netA(h3), "02:00:0a:4d:00:0e", false, "10.77.0.14/24")
		for _, h := range []*host{h1, h2} {
			h.setPeer(netA(h), c4.peer())
		}

		// c3 moves to h2, silent (it sends nothing until spoken to).
		old := c3.peer()
		Expect(testns.Remove(c3.ns)).To(Succeed())
		moved := newContainer(h2, netA(h2), c3.mac.String(), true, "10.77.0.13/24", "fd00:77::13/64")
		h1.setPeer(netA(h1), moved.peer())
		h3.setPeer(netA(h3), moved.peer())
		h2.deletePeer(netA(h2), old)
		Expect(h2.bridgeEntry(netA(h2), c3.mac)).To(BeEmpty(), "the entry h2's bridge learnt on the tunnel is purged")

		Expect(c2.ping(moved.ips[0], 0)).To(Succeed(), "a local container with the MAC cached reaches it on its new port")
		Expect(c1.ping(moved.ips[0], 0)).To(Succeed())
		moved.speak()
		Expect(c1.ping(moved.ips[1], 0)).To(Succeed())
		Expect(c4.ping(moved.ips[0], 0)).To(Succeed(), "reached from its old host too")

		fdb, _ := h1.vxlanEntries(netA(h1))
		Expect(fdb).To(ContainElement(c3.mac.String()+" "+h2.ip.String()), "replaced in place")
		Expect(fdb).NotTo(ContainElement(c3.mac.String() + " " + h3.ip.String()))
		fdb, neigh := h2.vxlanEntries(netA(h2))
		Expect(fdb).NotTo(ContainElement(HavePrefix(c3.mac.String())))
		Expect(neigh).NotTo(ContainElement(HaveSuffix(c3.mac.String())))
	})

	It("makes a deleted peer unreachable and leaves no entry for it", func() {
		Expect(c1.ping(c2.ips[0], 0)).To(Succeed())
		Expect(h1.bridgeEntry(netA(h1), c2.mac)).To(Equal(netA(h1).VXLAN))
		h1.deletePeer(netA(h1), c2.peer())

		fdb, neigh := h1.vxlanEntries(netA(h1))
		Expect(fdb).To(ConsistOf(c3.mac.String() + " " + h3.ip.String()))
		Expect(neigh).To(ConsistOf("10.77.0.13 "+c3.mac.String(), "fd00:77::13 "+c3.mac.String()))
		Expect(h1.bridgeEntry(netA(h1), c2.mac)).To(BeEmpty())
		Expect(peerStrings(h1.peers(netA(h1))...)).To(Equal(peerStrings(c3.peer())))
		Expect(c1.unreachable(c2.ips[1])).To(BeTrue())

		By("deleting it again, or deleting a peer of a network gone from the host")
		h1.deletePeer(netA(h1), c2.peer())
		gone := netA(h1)
		gone.ID, gone.VXLAN, gone.Bridge = idC, "vx-gone", "ov-gone"
		h1.deletePeer(gone, c2.peer())

		By("leaving a peer that has moved since")
		h1.deletePeer(netA(h1), dataplane.Peer{MAC: c3.mac, IPs: c3.ips, VTEP: h2.ip})
		Expect(c1.ping(c3.ips[0], 0)).To(Succeed())
	})

	It("refuses peers the device cannot carry, naming what is wrong", func() {
		n := netA(h1)
		for _, p := range []dataplane.Peer{
			{MAC: mac("01:00:5e:00:00:01"), VTEP: h2.ip},
			{MAC: c2.mac, VTEP: h2.ip6},
			{MAC: c2.mac, VTEP: h1.ip},
			{MAC: c2.mac, VTEP: h2.ip, IPs: []net.IP{net.ParseIP("224.0.0.1")}},
		} {
			err := inErr(h1.ns, func() error { return dataplane.SetPeer(n, p) })
			Expect(err).To(MatchError(dataplane.ErrInvalid), p.String())
			Expect(err.Error()).To(ContainSubstring("peer"))
		}
		_, _, err := reconcile(h1, n, []dataplane.Peer{c2.peer(), {MAC: c2.mac, VTEP: h3.ip}})
		Expect(err).To(MatchError(ContainSubstring("is at both")))
	})

	It("reconciles: removes stale entries a crash left, repoints moved ones, adds missing ones", func() {
		n := netA(h1)
		stale := mac("02:00:0a:4d:00:63")
		in(h1.ns, func() error {
			vx, err := netlink.LinkByName(n.VXLAN)
			if err != nil {
				return err
			}
			fdb := func(m net.HardwareAddr, dst string) *netlink.Neigh {
				return &netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
					State: netlink.NUD_PERMANENT, HardwareAddr: m, IP: net.ParseIP(dst)}
			}
			neigh := func(ip string, m net.HardwareAddr) *netlink.Neigh {
				return &netlink.Neigh{LinkIndex: vx.Attrs().Index, State: netlink.NUD_PERMANENT,
					IP: net.ParseIP(ip), HardwareAddr: m}
			}
			for _, step := range []func() error{
				func() error { return netlink.NeighAdd(fdb(stale, "192.168.77.99")) },             // a vanished host's
				func() error { return netlink.NeighAdd(neigh("10.77.0.99", stale)) },              // and its addresses
				func() error { return netlink.NeighAdd(neigh("fd00:77::99", stale)) },             //
				func() error { return netlink.NeighAppend(fdb(make([]byte, 6), "192.168.77.2")) }, // a flooding entry
				func() error { return netlink.NeighAppend(fdb(make([]byte, 6), "192.168.77.3")) }, // with two destinations
				func() error { return netlink.NeighSet(fdb(c3.mac, "192.168.77.2")) },             // a missed move
				func() error { return netlink.NeighDel(neigh("fd00:77::13", nil)) },               // a missed add
			} {
				if err := step(); err != nil {
					return err
				}
			}
			return nil
		})
		Expect(c1.unreachable(c3.ips[0])).To(BeTrue(), "c3 is pointed at the wrong host")

		want := []dataplane.Peer{c2.peer(), c3.peer()}
		added, removed, err := reconcile(h1, n, want)
		Expect(err).NotTo(HaveOccurred())
		Expect(added).To(Equal(2), "c3's FDB entry repointed, its IPv6 neighbour entry made")
		Expect(removed).To(Equal(5), "the stale FDB entry and its two addresses, the flooding entry's two destinations")
		Expect(peerStrings(h1.peers(n)...)).To(Equal(peerStrings(want...)))
		for _, ip := range append(c2.ips, c3.ips...) {
			Expect(c1.ping(ip, 0)).To(Succeed())
		}

		added, removed, err = reconcile(h1, n, want)
		Expect(err).NotTo(HaveOccurred())
		Expect([]int{added, removed}).To(Equal([]int{0, 0}), "nothing drifted")

		By("to no peers at all")
		_, removed, err = reconcile(h1, n, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(removed).To(BeNumerically(">=", 6))
		Expect(h1.peers(n)).To(BeEmpty())
		Expect(h1.bridgeEntry(n, c2.mac)).To(BeEmpty(), "nor what the bridge learnt on the tunnel")
	})

	It("keeps two networks with different VNIs apart, even on one subnet", func() {
		netB := func(h *host) dataplane.Network { return h.network(idB, 4343, "10.77.0.1/24") }
		h1.ensure(netB(h1))
		h2.ensure(netB(h2))
		b1 := newContainer(h1, netB(h1), "02:00:0a:4d:01:15", false, "10.77.0.21/24")
		b2 := newContainer(h2, netB(h2), "02:00:0a:4d:01:16", false, "10.77.0.22/24")
		peerAll(netB, b1, b2)
		Expect(b1.ping(b2.ips[0], 0)).To(Succeed())
		Expect(c1.ping(c2.ips[0], 0)).To(Succeed())

		Expect(c1.unreachable(b2.ips[0])).To(BeTrue(), "not resolved: b2 is no peer of network A")
		// Even programmed as a peer of A, b2 is not reached: the packet
		// reaches h2 with A's VNI, on A's bridge.
		h1.setPeer(netA(h1), b2.peer())
		Expect(c1.unreachable(b2.ips[0])).To(BeTrue())

		Expect(peerStrings(h1.peers(netB(h1))...)).To(Equal(peerStrings(b2.peer())))
		_, _, err := reconcile(h1, netA(h1), nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(peerStrings(h1.peers(netB(h1))...)).To(Equal(peerStrings(b2.peer())), "A's reconcile leaves B's entries")
		Expect(b1.ping(b2.ips[0], 0)).To(Succeed())
	})

	It("runs over an IPv6 underlay, with the MTU less 70", func() {
		net6 := func(h *host) dataplane.Network {
			n := h.network(idC, 4444, "10.78.0.1/24")
			n.LocalIP = h.ip6
			return n
		}
		h1.ensure(net6(h1))
		h3.ensure(net6(h3))
		in(h1.ns, func() error {
			mtu, err := dataplane.EffectiveMTU(net6(h1))
			Expect(mtu).To(Equal(underlayMTU - 70))
			return err
		})
		d1 := newContainer(h1, net6(h1), "02:00:0a:4e:00:0b", false, "10.78.0.11/24")
		d3 := newContainer(h3, net6(h3), "02:00:0a:4e:00:0d", false, "10.78.0.13/24")
		h1.setPeer(net6(h1), dataplane.Peer{MAC: d3.mac, IPs: d3.ips, VTEP: h3.ip6})
		h3.setPeer(net6(h3), dataplane.Peer{MAC: d1.mac, IPs: d1.ips, VTEP: h1.ip6})
		Expect(d1.ping(d3.ips[0], underlayMTU-70-28)).To(Succeed())
		Expect(d3.ping(d1.ips[0], 0)).To(Succeed())
		in(h1.ns, func() error { return dataplane.Check(net6(h1)) })
	})
})

func reconcile(h *host, n dataplane.Network, want []dataplane.Peer) (added, removed int, err error) {
	err = inErr(h.ns, func() error {
		var err error
		added, removed, err = dataplane.Reconcile(n, want)
		return err
	})
	return added, removed, err
}
