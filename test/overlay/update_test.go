package overlay_test

import (
	"net"

	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
)

// with is net1 with more keys.
func with(more map[string]any) network {
	n := net1
	n.more = more
	return n
}

// mtuOf is the MTU of link name in h's namespace.
func (h *host) mtuOf(name string) int {
	GinkgoHelper()
	mtu := 0
	in(h.ns, func() error {
		l, err := netlink.LinkByName(name)
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	})
	return mtu
}

var _ = Describe("an overlay network's configuration edited on a host that has it", func() {
	It("applies ipMasq at the next ADD there, and back", func() {
		w := newWorld(1)
		h := w.hosts[0]
		newOutside(h)
		c := h.add(net1, "c", "")
		Expect(c.ping(net.ParseIP("172.30.0.2"), 0)).To(Succeed())

		h.add(with(map[string]any{"ipMasq": false}), "plain", "")
		Expect(h.hostNetworks()[w.networkID(net1.name)].IPMasq).To(BeFalse())
		Expect(c.unreachable(net.ParseIP("172.30.0.2"))).To(BeTrue(), "no longer masqueraded: the outside cannot answer")

		h.add(net1, "again", "")
		Expect(c.ping(net.ParseIP("172.30.0.2"), 0)).To(Succeed())
		Expect(c.check(net1, "")).To(Succeed())
	})

	It("applies mtu to the bridge, the VXLAN device and new endpoints, and a full-size packet crosses", func() {
		w := newWorld(2)
		a, b := w.hosts[0], w.hosts[1]
		old := a.add(net1, "old", "")
		far := b.add(net1, "far", "")
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		Expect(a.mtuOf(br)).To(Equal(underlayMTU - 50))

		small := with(map[string]any{"mtu": 1400})
		c := a.add(small, "new", "")
		w.sync()
		Expect(a.mtuOf(br)).To(Equal(1400))
		Expect(a.mtuOf(vx)).To(Equal(1400))
		Expect(a.hostNetworks()[nid].MTU).To(Equal(1400))
		Expect(c.ping(far.ip, 1400-28)).To(Succeed(), "IPv4 and ICMP headers")
		Expect(old.ping(far.ip, 0)).To(Succeed())
		Expect(c.check(small, "")).To(Succeed())
	})

	It("undoes the edit when the ADD that brought it fails after all", func() {
		w := newWorld(1)
		h := w.hosts[0]
		h.add(net1, "first", "")
		nid := w.networkID(net1.name)
		br, _ := dataplane.Names(nid)
		before := h.hostNetworks()[nid]
		bad := with(map[string]any{"mtu": 1400, "ipMasq": false, "runtimeConfig": map[string]any{
			"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 0}}}})
		err := h.newContainer("bad").tryAdd(bad, "")
		Expect(cniCode(err)).To(Equal(uint(7)), "%v", err)
		Expect(h.hostNetworks()[nid]).To(Equal(before))
		Expect(h.mtuOf(br)).To(Equal(underlayMTU - 50))
	})

	It("follows a new underlay address: the VXLAN device uses it, the endpoints' records name it, and the other hosts reach them there", func() {
		w := newWorld(2)
		a, b := w.hosts[0], w.hosts[1]
		onA := a.add(net1, "on-a", "")
		onB := b.add(net1, "on-b", "")
		w.sync()
		Expect(onA.ping(onB.ip, 0)).To(Succeed())
		nid := w.networkID(net1.name)

		By("host A's underlay address changes (a new lease)")
		newIP := net.ParseIP("192.168.77.101")
		in(a.ns, func() error {
			eth, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			// The old one first: deleting a primary address deletes its
			// secondaries with it.
			old, _ := netlink.ParseAddr(a.ip.String() + "/24")
			if err := netlink.AddrDel(eth, old); err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr(newIP.String() + "/24")
			if err := netlink.AddrAdd(eth, addr); err != nil {
				return err
			}
			return netlink.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP("192.168.77.254")})
		})
		a.ip = newIP

		next := a.add(net1, "next", "")
		Expect(a.hostNetworks()[nid].LocalIP).To(Equal(newIP.String()))
		for _, p := range w.peers()[nid] {
			if p.Host == a.name {
				Expect(p.VTEP).To(Equal(newIP.String()), "%+v", p)
			}
		}
		w.sync()
		Expect(b.programmed(nid)).To(ContainElements(onA.mac+"@"+newIP.String(), next.mac+"@"+newIP.String()))
		Expect(onB.ping(onA.ip, 0)).To(Succeed(), "an endpoint joined before the change")
		Expect(onB.ping(next.ip, 0)).To(Succeed())
		Expect(onA.ping(onB.ip, 0)).To(Succeed(), "and A's forwarding entries came back with its new device")
		Expect(onA.check(net1, "")).To(Succeed())
	})
})
