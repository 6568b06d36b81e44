package overlay_test

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

var net1 = network{name: "ov1", subnet: "10.201.0.0/24"}

var _ = Describe("cnm-overlay on the data path", func() {
	It("connects containers on different hosts, and a new host's first container reaches every endpoint at once", func() {
		w := newWorld(2)
		c1 := w.hosts[0].add(net1, "c1", "")
		c2 := w.hosts[1].add(net1, "c2", "")
		w.sync()
		Expect(c1.ping(c2.ip, 0)).To(Succeed())
		Expect(c2.ping(c1.ip, 0)).To(Succeed())

		h3 := w.addHost()
		start := time.Now()
		c3 := h3.add(net1, "c3", "")
		GinkgoWriter.Printf("first ADD on a new host: %v\n", time.Since(start))
		// Programmed by its CreateNetwork, before any daemon: the new
		// host forwards to every endpoint that was there.
		nid := w.networkID(net1.name)
		Expect(h3.programmed(nid)).To(ConsistOf(c1.mac+"@192.168.77.1", c2.mac+"@192.168.77.2"))
		Expect(c1.unreachable(c3.ip)).To(BeTrue(), "the other hosts have not learnt c3 yet")
		// The others learn c3 as their daemon would; the new host is not
		// touched again.
		w.sync(w.hosts[0], w.hosts[1])
		Expect(c3.ping(c1.ip, 0)).To(Succeed())
		Expect(c3.ping(c2.ip, 0)).To(Succeed())
		Expect(c1.ping(c3.ip, 0)).To(Succeed())

		By("a full-size packet with DF set crosses the tunnel")
		mtu := h3.hostNetworks()[nid].MTU
		Expect(mtu).To(Equal(underlayMTU - 50))
		Expect(c3.ping(c1.ip, mtu-28)).To(Succeed())
		Expect(c1.ping(c3.ip, mtu-28)).To(Succeed())
		Expect(c1.ping(c3.ip, mtu-27)).NotTo(Succeed(), "one byte more does not fit the overlay MTU")
	})

	It("moves a persistent endpoint from host A to host B with its address and MAC, reached from C", func() {
		w := newWorld(3)
		a, b, cHost := w.hosts[0], w.hosts[1], w.hosts[2]
		onC := cHost.add(net1, "on-c", "")
		x := a.add(net1, "x-on-a", "CNM_ENDPOINT=x")
		w.sync()
		Expect(onC.ping(x.ip, 0)).To(Succeed())
		nid := w.networkID(net1.name)

		Expect(x.del(net1, "CNM_ENDPOINT=x")).To(Succeed())
		Expect(w.peers()[nid]).To(HaveLen(1), "only on-c is joined: x's record went with its Leave on A")
		moved := b.add(net1, "x-on-b", "CNM_ENDPOINT=x")
		Expect(moved.ip).To(Equal(x.ip))
		Expect(moved.mac).To(Equal(x.mac))
		Expect(w.peers()[nid]).To(ContainElement(SatisfyAll(
			HaveField("MAC", x.mac), HaveField("Host", b.name), HaveField("VTEP", b.ip.String()))))
		Expect(a.links()).NotTo(ContainElement(HavePrefix("ovh")))

		w.sync()
		Expect(cHost.programmed(nid)).To(ContainElement(x.mac + "@" + b.ip.String()))
		Expect(onC.ping(moved.ip, 0)).To(Succeed())
		Expect(moved.ping(onC.ip, 0)).To(Succeed())
	})

	It("reaches the outside from each endpoint's own host, masqueraded there", func() {
		w := newWorld(2)
		for i, h := range w.hosts {
			newOutside(h)
			c := h.add(net1, fmt.Sprintf("c%d", i), "")
			// The outside has no route to the overlay: only a
			// masqueraded flow is answered.
			Expect(c.ping(net.ParseIP("172.30.0.2"), 0)).To(Succeed())
			Expect(dial(c.ns, "172.30.0.2:8080")).To(Equal("172.30.0.1"))
			// The gateway, on every host's bridge, is answered by the
			// endpoint's own host.
			Expect(c.ping(net.ParseIP("10.201.0.1"), 0)).To(Succeed())
		}

		By("without ipMasq the outside cannot answer: masquerading is what reaches it")
		plain := network{name: "plain", subnet: "10.204.0.0/24", more: map[string]any{"ipMasq": false}}
		c := w.hosts[0].add(plain, "plain", "")
		Expect(c.unreachable(net.ParseIP("172.30.0.2"))).To(BeTrue())
	})

	It("gives each network one VNI, the same on every host, under concurrent first ADDs", func() {
		w := newWorld(3)
		nets := []network{net1, {name: "ov2", subnet: "10.202.0.0/24"}}
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i, h := range w.hosts {
			for j, n := range nets {
				c := h.newContainer(fmt.Sprintf("c%d-%d", i, j))
				wg.Add(1)
				go func() {
					defer GinkgoRecover()
					defer wg.Done()
					errs <- c.tryAdd(n, "")
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		vnis := map[string]uint32{}
		for _, h := range w.hosts {
			for nid, hn := range h.hostNetworks() {
				if v, ok := vnis[nid]; ok {
					Expect(hn.VNI).To(Equal(v), "network %s on %s", nid, h.name)
				}
				vnis[nid] = hn.VNI
			}
		}
		Expect(vnis).To(HaveLen(2))
		Expect(keysWith(w.dump(), "drivers/cnm-overlay/vnis/")).To(HaveLen(2))
		var got []uint32
		for _, v := range vnis {
			got = append(got, v)
		}
		Expect(got[0]).NotTo(Equal(got[1]))
	})

	It("isolates two overlay networks from each other", func() {
		w := newWorld(2)
		net2 := network{name: "ov2", subnet: "10.202.0.0/24"}
		a1 := w.hosts[0].add(net1, "a1", "")
		b1 := w.hosts[1].add(net1, "b1", "")
		a2 := w.hosts[0].add(net2, "a2", "")
		b2 := w.hosts[1].add(net2, "b2", "")
		w.sync()
		Expect(a1.ping(b1.ip, 0)).To(Succeed())
		Expect(a2.ping(b2.ip, 0)).To(Succeed())
		vnis := []uint32{}
		for _, hn := range w.hosts[0].hostNetworks() {
			vnis = append(vnis, hn.VNI)
		}
		Expect(vnis).To(ConsistOf(uint32(4096), uint32(4097)), "each network has a VNI of its own")
		Expect(a1.unreachable(a2.ip)).To(BeTrue(), "routed on one host between the two bridges")
		Expect(a1.unreachable(b2.ip)).To(BeTrue())
		Expect(b2.unreachable(a1.ip)).To(BeTrue())

		By("a network without isolation is reached through the host's routing: isolation is what blocks")
		net3 := network{name: "ov3", subnet: "10.203.0.0/24", more: map[string]any{"isolation": false}}
		a3 := w.hosts[0].add(net3, "a3", "")
		Expect(a1.ping(a3.ip, 0)).To(Succeed())
	})
})

// newOutside makes a namespace standing for what lies beyond host h: a
// veth from h (172.30.0.1/30) to it (172.30.0.2/30, a TCP server on
// port 8080), and no route back to the overlay.
func newOutside(h *host) {
	GinkgoHelper()
	outside := testns.New()
	in(h.ns, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "out0"}, PeerName: "eth0",
			PeerNamespace: netlink.NsFd(int(outside.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return addrUp("out0", "172.30.0.1/30")
	})
	in(outside, func() error {
		if err := addrUp("eth0", "172.30.0.2/30"); err != nil {
			return err
		}
		return upLoopback()
	})
	serve(outside, "172.30.0.2:8080")
}

func addrUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}
