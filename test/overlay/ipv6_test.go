package overlay_test

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// mtuOf is the MTU of link name in n.
func mtuOf(n ns.NetNS, name string) int {
	GinkgoHelper()
	var mtu int
	in(n, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		return nil
	})
	return mtu
}

var _ = Describe("cnm-overlay with the real cnm-overlayd, on an IPv6 underlay", func() {
	It("sets the overlay MTU to the underlay's − 70, and connects containers across hosts with full-size packets", func() {
		w := newWorldWith(3, worldOptions{ipv6: true})
		w.startDaemons()
		var cs []*container
		for i, h := range w.hosts {
			cs = append(cs, h.add(net1, fmt.Sprintf("c%d", i+1), ""))
		}
		w.expectConverged(convergeWithin)
		nid := w.networkID(net1.name)
		const mtu = underlayMTU - 70
		for i, h := range w.hosts {
			hn := h.hostNetworks()[nid]
			Expect(hn.LocalIP).To(Equal(h.ip.String()), "the VTEP is the host's IPv6 underlay address")
			Expect(hn.MTU).To(Equal(mtu))
			Expect(mtuOf(h.ns, hn.Bridge)).To(Equal(mtu))
			Expect(mtuOf(h.ns, hn.VXLAN)).To(Equal(mtu))
			Expect(mtuOf(cs[i].ns, "eth0")).To(Equal(mtu))
		}
		for _, p := range w.peers()[nid] {
			Expect(p.VTEP).To(HavePrefix("fd00:77::"))
		}

		for _, a := range cs {
			for _, b := range cs {
				if a == b {
					continue
				}
				Expect(a.ping(b.ip, 0)).To(Succeed())
				Expect(a.ping(b.ip, mtu-28)).To(Succeed(), "a full-size packet with DF set, %s to %s", a.id, b.id)
			}
		}
		Expect(cs[0].ping(cs[1].ip, mtu-27)).NotTo(Succeed(), "one byte more does not fit the overlay MTU")
	})
})
