package overlay_test

import (
	"encoding/json"
	"net"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
)

var _ = Describe("cnm-overlay configuration and lifecycle", func() {
	DescribeTable("refuses a bad value with error 7 naming the key, creating nothing",
		func(more map[string]any, key string) {
			w := newWorld(1)
			h := w.hosts[0]
			links, kv := h.links(), w.dump()
			c := h.newContainer("bad")
			err := c.tryAdd(network{name: "bad", subnet: "10.209.0.0/24", more: more}, "")
			Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
			Expect(err.Error()).To(ContainSubstring(key + ":"))
			Expect(h.links()).To(Equal(links))
			Expect(w.dump()).To(Equal(kv))
			Expect(linksOf(c)).To(ConsistOf("lo"))
		},
		Entry("vni 0", map[string]any{"vni": 0}, "vni"),
		Entry("vni above 24 bits", map[string]any{"vni": 1 << 24}, "vni"),
		Entry("vxlanPort 0", map[string]any{"vxlanPort": 0}, "vxlanPort"),
		Entry("vxlanPort above 65535", map[string]any{"vxlanPort": 65536}, "vxlanPort"),
		Entry("an unknown underlay interface", map[string]any{"underlayInterface": "nope0"}, "underlayInterface"),
		Entry("an mtu above what the underlay carries", map[string]any{"mtu": underlayMTU - 49}, "mtu"),
		Entry("an underlay address not on this host", map[string]any{"underlayAddress": "192.168.99.9"}, "underlayAddress"),
	)

	It("shows its part on each host in cnmctl network inspect: VNI, port, devices, VTEP, and the endpoints forwarded to", func() {
		w := newWorld(2)
		a, b := w.hosts[0], w.hosts[1]
		a.add(net1, "on-a", "")
		b.add(net1, "on-b", "")
		w.sync()
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		out, code := a.cnmctl("network", "inspect", net1.name)
		Expect(code).To(BeZero(), "%s", out)
		var v struct {
			Host map[string]any `json:"host"`
		}
		Expect(json.Unmarshal(out, &v)).To(Succeed(), "%s", out)
		Expect(v.Host).To(HaveKeyWithValue("vni", BeNumerically(">=", 4096)))
		Expect(v.Host).To(HaveKeyWithValue("vxlanPort", BeNumerically("==", 4789)))
		Expect(v.Host).To(HaveKeyWithValue("bridge", br))
		Expect(v.Host).To(HaveKeyWithValue("vxlan", vx))
		Expect(v.Host).To(HaveKeyWithValue("underlayAddress", a.ip.String()))
		Expect(v.Host).To(HaveKeyWithValue("host", a.name))
		Expect(v.Host).To(HaveKeyWithValue("remoteEndpointsProgrammed", BeNumerically("==", 1)))
	})

	It("refuses a VNI another network holds, and a change of a network's VNI, creating nothing", func() {
		w := newWorld(1)
		h := w.hosts[0]
		first := network{name: "first", subnet: "10.210.0.0/24", more: map[string]any{"vni": 5000}}
		h.add(first, "one", "")
		links, kv := h.links(), w.dump()

		c := h.newContainer("two")
		err := c.tryAdd(network{name: "second", subnet: "10.211.0.0/24", more: map[string]any{"vni": 5000}}, "")
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("vni: 5000 is taken by network first"))
		err = c.tryAdd(network{name: "first", subnet: "10.210.0.0/24", more: map[string]any{"vni": 5001}}, "")
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("vni: network first has VNI 5000"))
		Expect(h.links()).To(Equal(links))
		Expect(w.dump()).To(Equal(kv))
	})

	It("leaves no link and no peer record after DEL", func() {
		w := newWorld(1)
		h := w.hosts[0]
		c1 := h.add(net1, "c1", "")
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		c2 := h.add(net1, "c2", "")
		Expect(w.peers()[nid]).To(HaveLen(2))
		Expect(c2.del(net1, "")).To(Succeed())
		Expect(c1.del(net1, "")).To(Succeed())
		Expect(h.links()).To(ConsistOf("lo", "eth0", br, vx), "the network's host state stays until it is removed")
		Expect(w.peers()[nid]).To(BeEmpty())
		Expect(linksOf(c1)).To(ConsistOf("lo"))
		Expect(c1.del(net1, "")).To(Succeed(), "DEL again")
	})

	It("removes the network's host state here, its records and its VNI when the network goes", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		c1 := h1.add(net1, "c1", "")
		c2 := h2.add(net1, "c2", "")
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		Expect(w.dump()).To(HaveKeyWithValue(records.StorePrefix+records.NameKey(net1.name), nid), "the name's index")
		Expect(h1.iptablesSave()).To(ContainSubstring("cnm:" + net1.name))
		Expect(c1.del(net1, "")).To(Succeed())
		Expect(c2.del(net1, "")).To(Succeed())

		Expect(h1.removeNetwork(net1.name)).To(Succeed())
		Expect(h1.links()).To(ConsistOf("lo", "eth0"))
		Expect(h1.iptablesSave()).NotTo(ContainSubstring("cnm:" + net1.name))
		kv := w.dump()
		Expect(keysWith(kv, "drivers/cnm-overlay/")).To(BeEmpty(), "the network, its VNI and its peers")
		Expect(keysWith(kv, "hosts/node-1/hostdrivers/cnm-overlay/")).To(BeEmpty())
		// Other hosts' part stays, for their daemon to remove.
		Expect(h2.links()).To(ContainElements(br, vx))

		By("a network made again under the name starts afresh")
		again := h1.add(net1, "again", "")
		Expect(again.ping(net.ParseIP("10.201.0.1"), 0)).To(Succeed())
	})

	It("passes CHECK, and names a missing forwarding entry and a veth off the bridge", func() {
		w := newWorld(2)
		c1 := w.hosts[0].add(net1, "c1", "")
		c2 := w.hosts[1].add(net1, "c2", "")
		w.sync()
		Expect(c1.check(net1, "")).To(Succeed())
		nid := w.networkID(net1.name)

		mac, err := net.ParseMAC(c2.mac)
		Expect(err).NotTo(HaveOccurred())
		h1 := w.hosts[0]
		in(h1.ns, func() error {
			return dataplane.DeletePeer(dataplaneNetwork(nid, h1.hostNetworks()[nid]), dataplane.Peer{MAC: mac})
		})
		err = c1.check(net1, "")
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("no forwarding entry for " + c2.mac))
		w.sync()
		Expect(c1.check(net1, "")).To(Succeed())

		var veth string
		for _, l := range h1.links() {
			if strings.HasPrefix(l, "ovh") {
				veth = l
			}
		}
		Expect(veth).NotTo(BeEmpty())
		in(h1.ns, func() error { return setNoMaster(veth) })
		err = c1.check(net1, "")
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("host veth " + veth + " is not on bridge"))

		// Removed, it takes the sandbox's end with it, which the core's
		// own check of the sandbox names first.
		in(h1.ns, func() error { return deleteLink(veth) })
		err = c1.check(net1, "")
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("eth0"))
	})
})
