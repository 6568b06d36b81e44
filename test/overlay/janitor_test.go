package overlay_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
)

var _ = Describe("cnmctl check of an overlay network", func() {
	putPeer := func(w *world, p records.Peer) {
		GinkgoHelper()
		b, err := json.Marshal(p)
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = w.cli.Put(ctx, prefix+"/data/"+records.StorePrefix+records.PeerKey(p.Network, p.Endpoint), string(b))
		Expect(err).NotTo(HaveOccurred())
	}
	// addForeign puts a veth named like a host end of the overlay's on
	// the bridge, with alias as its mark.
	addForeign := func(h *host, bridge, name, alias string) {
		GinkgoHelper()
		in(h.ns, func() error {
			br, err := netlink.LinkByName(bridge)
			if err != nil {
				return err
			}
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: "p" + name[3:]}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			if alias == "" {
				return nil
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			return netlink.LinkSetAlias(l, alias)
		})
	}

	It("lists, in the driver, the veths and peer records of endpoints not given and a broken data plane, and removes only them", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		c1 := h1.add(net1, "c1", "")
		c2 := h2.add(net1, "c2", "")
		c3 := h1.add(net1, "c3", "")
		w.sync()
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		eid1, eid3 := endpointID(h1, "c1"), endpointID(h1, "c3")
		addForeign(h1, br, "ovh0123456789a", "")
		other := strings.Repeat("b", 64)
		addForeign(h1, br, "ovh"+other[:11], "cnmnet:"+other+"/"+strings.Repeat("c", 64))
		crashed := strings.Repeat("d", 64)
		putPeer(w, records.Peer{Network: nid, Endpoint: crashed, Host: h1.name, VTEP: h1.ip.String(), MAC: "02:42:0a:c9:00:63", IPs: []string{"10.201.0.99"}})
		eid2 := endpointID(h2, "c2")

		var orphans []driverapi.Orphan
		h1.janitor(func(j driverapi.Janitor) error {
			var err error
			// c1 as the core passes an endpoint joined on another host
			// now: left out.
			orphans, err = j.Orphans(nid, []string{eid3})
			return err
		})
		Expect(orphans).To(ConsistOf(
			driverapi.Orphan{Kind: "link", Name: hostVeth(eid1)},
			driverapi.Orphan{Kind: "peer", Name: records.PeerKey(nid, eid1)},
			driverapi.Orphan{Kind: "peer", Name: records.PeerKey(nid, crashed)}),
			"not c2's record, which names node-2, nor a link not marked as the network's")
		h1.janitor(func(j driverapi.Janitor) error { return j.RemoveOrphans(nid, orphans) })
		Expect(h1.links()).NotTo(ContainElement(hostVeth(eid1)))
		Expect(h1.links()).To(ContainElements(br, vx, hostVeth(eid3), "ovh0123456789a", "ovh"+other[:11]))
		Expect(linksOf(c1)).To(ConsistOf("lo"))
		Expect(keysWith(w.dump(), records.StorePrefix+records.PeerPrefix(nid))).To(ConsistOf(
			records.StorePrefix+records.PeerKey(nid, eid2), records.StorePrefix+records.PeerKey(nid, eid3)))
		h1.janitor(func(j driverapi.Janitor) error {
			var err error
			orphans, err = j.Orphans(nid, []string{eid3})
			return err
		})
		Expect(orphans).To(BeEmpty())

		By("a VXLAN device deleted by hand")
		in(h1.ns, func() error { return deleteLink(vx) })
		Expect(c3.unreachable(c2.ip)).To(BeTrue())
		h1.janitor(func(j driverapi.Janitor) error {
			var err error
			orphans, err = j.Orphans(nid, []string{eid3})
			return err
		})
		Expect(orphans).To(ConsistOf(MatchFields(IgnoreExtras, Fields{"Kind": Equal("link"), "Name": Equal(vx), "Problem": ContainSubstring(vx)})))
		h1.janitor(func(j driverapi.Janitor) error { return j.RemoveOrphans(nid, orphans) })
		Expect(c3.ping(c2.ip, 0)).To(Succeed(), "made again, with its peers")
		Expect(c3.check(net1, "")).To(Succeed())
	})

	// Through cnmctl: the core's audit asks the janitor of a network
	// whose host state is made here (Ready, per host in a cluster store).
	It("reports the veth and peer record an endpoint removed elsewhere leaves, removes only them, and never a foreign link", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		c1 := h1.add(net1, "c1", "")
		c2 := h2.add(net1, "c2", "")
		c3 := h1.add(net1, "c3", "")
		w.sync()
		nid := w.networkID(net1.name)
		br, vx := dataplane.Names(nid)
		found, code := h1.check(false)
		Expect(found).To(BeEmpty())
		Expect(code).To(BeZero())

		By("links named like ours that are not this network's")
		addForeign(h1, br, "ovh0123456789a", "")
		other := strings.Repeat("b", 64)
		addForeign(h1, br, "ovh"+other[:11], "cnmnet:"+other+"/"+strings.Repeat("c", 64))

		By("c1's endpoint removed by force from the other host, and a peer record a crash left")
		eid1, name1 := endpointOf(h2, "c1")
		out, code := h2.cnmctl("endpoint", "rm", "--force", "--network", net1.name, name1)
		Expect(code).To(BeZero(), "%s", out)
		Expect(h1.links()).To(ContainElement(hostVeth(eid1)), "nothing of it was touched on node-1")
		crashed := strings.Repeat("d", 64)
		putPeer(w, records.Peer{Network: nid, Endpoint: crashed, Host: h1.name, VTEP: h1.ip.String(), MAC: "02:42:0a:c9:00:63", IPs: []string{"10.201.0.99"}})
		elsewhere := strings.Repeat("e", 64)
		putPeer(w, records.Peer{Network: nid, Endpoint: elsewhere, Host: h2.name, VTEP: h2.ip.String(), MAC: "02:42:0a:c9:00:64", IPs: []string{"10.201.0.100"}})

		found, code = h1.check(false)
		Expect(code).To(Equal(3))
		Expect(objects(found)).To(ConsistOf("link "+hostVeth(eid1), "peer "+records.PeerKey(nid, crashed)))
		for _, f := range found {
			Expect(f).To(MatchFields(IgnoreExtras, Fields{"Network": Equal(net1.name), "Problem": Equal("owned by no endpoint"), "Repaired": BeFalse()}))
		}

		found, code = h1.check(true)
		Expect(code).To(BeZero())
		Expect(objects(found)).To(ConsistOf("link "+hostVeth(eid1), "peer "+records.PeerKey(nid, crashed)))
		for _, f := range found {
			Expect(f.Repaired).To(BeTrue(), "%+v", f)
		}
		links := h1.links()
		Expect(links).NotTo(ContainElement(hostVeth(eid1)))
		Expect(links).To(ContainElements(br, vx, hostVeth(endpointID(h1, "c3")), "ovh0123456789a", "ovh"+other[:11]))
		Expect(linksOf(c1)).To(ConsistOf("lo"), "the sandbox's end went with the host veth")
		kv := w.dump()
		Expect(kv).NotTo(HaveKey(records.StorePrefix + records.PeerKey(nid, crashed)))
		Expect(kv).To(HaveKey(records.StorePrefix + records.PeerKey(nid, elsewhere)))
		Expect(kv).To(HaveKey(records.StorePrefix + records.PeerKey(nid, endpointID(h1, "c3"))))

		found, code = h1.check(false)
		Expect(found).To(BeEmpty())
		Expect(code).To(BeZero())
		w.sync() // the daemon's part: the other host's peer record is programmed here
		Expect(c3.ping(c2.ip, 0)).To(Succeed())
		Expect(c3.check(net1, "")).To(Succeed())
	})

	It("reports a VXLAN device deleted by hand and makes it again, after which traffic flows", func() {
		w := newWorld(2)
		h1 := w.hosts[0]
		c1 := h1.add(net1, "c1", "")
		c2 := w.hosts[1].add(net1, "c2", "")
		w.sync()
		Expect(c1.ping(c2.ip, 0)).To(Succeed())
		nid := w.networkID(net1.name)
		_, vx := dataplane.Names(nid)

		in(h1.ns, func() error { return deleteLink(vx) })
		Expect(c1.unreachable(c2.ip)).To(BeTrue())
		found, code := h1.check(false)
		Expect(code).To(Equal(3))
		Expect(found).To(ConsistOf(MatchFields(IgnoreExtras, Fields{
			"Kind": Equal("link"), "Object": Equal(vx), "Problem": ContainSubstring(vx), "Repaired": BeFalse()})))

		found, code = h1.check(true)
		Expect(code).To(BeZero())
		Expect(found).To(ConsistOf(MatchFields(IgnoreExtras, Fields{"Object": Equal(vx), "Repaired": BeTrue()})))
		Expect(h1.links()).To(ContainElement(vx))
		Expect(c1.ping(c2.ip, 0)).To(Succeed(), "the peers are programmed again")
		Expect(c1.check(net1, "")).To(Succeed())
		found, _ = h1.check(false)
		Expect(found).To(BeEmpty())
	})

	It("makes a bridge deleted by hand again with the endpoints' veths on it, at the next ADD and by --repair", func() {
		w := newWorld(2)
		h1 := w.hosts[0]
		c1 := h1.add(publishing(8080), "c1", "")
		c2 := w.hosts[1].add(net1, "c2", "")
		w.sync()
		Expect(c1.ping(c2.ip, 0)).To(Succeed())
		nid := w.networkID(net1.name)
		br, _ := dataplane.Names(nid)
		eid1 := endpointID(h1, "c1")
		serve(c1.ns, ":80")
		Expect(dial(h1.ns, "127.0.0.1:8080")).NotTo(BeEmpty())

		By("cnmctl check --repair")
		in(h1.ns, func() error { return deleteLink(br) })
		Expect(c1.unreachable(c2.ip)).To(BeTrue())
		found, code := h1.check(true)
		Expect(code).To(BeZero(), "%+v", found)
		Expect(h1.masterOf(hostVeth(eid1))).To(Equal(br))
		Expect(h1.hairpin(hostVeth(eid1))).To(BeTrue(), "it publishes a port")
		Expect(c1.ping(c2.ip, 0)).To(Succeed())
		Expect(c1.check(publishing(8080), "")).To(Succeed())
		Expect(dial(h1.ns, "127.0.0.1:8080")).NotTo(BeEmpty(), "its port on loopback too")

		By("the next ADD")
		in(h1.ns, func() error { return deleteLink(br) })
		c3 := h1.add(net1, "c3", "")
		Expect(h1.masterOf(hostVeth(eid1))).To(Equal(br))
		Expect(c1.ping(c2.ip, 0)).To(Succeed())
		Expect(c3.ping(c1.ip, 0)).To(Succeed())
		Expect(dial(h1.ns, "127.0.0.1:8080")).NotTo(BeEmpty())
	})

	It("collects on GC the veth and peer record of an attachment the runtime no longer lists", func() {
		w := newWorld(1)
		h1 := w.hosts[0]
		c1 := h1.add(net1, "c1", "")
		keep := h1.add(net1, "keep", "")
		nid := w.networkID(net1.name)
		eid1, eidKeep := endpointID(h1, "c1"), endpointID(h1, "keep")

		valid := []map[string]string{{"containerID": "keep", "ifname": "eth0"}}
		_, err := h1.exec("GC", c1, "", h1.conf(net1, map[string]any{"cni.dev/valid-attachments": valid}))
		Expect(err).NotTo(HaveOccurred())
		Expect(h1.links()).NotTo(ContainElement(hostVeth(eid1)))
		Expect(h1.links()).To(ContainElement(hostVeth(eidKeep)))
		Expect(linksOf(c1)).To(ConsistOf("lo"))
		kv := w.dump()
		Expect(kv).NotTo(HaveKey(records.StorePrefix + records.PeerKey(nid, eid1)))
		Expect(kv).To(HaveKey(records.StorePrefix + records.PeerKey(nid, eidKeep)))
		Expect(keep.ping(net.ParseIP("10.201.0.1"), 0)).To(Succeed())
	})
})

// endpointOf is the ID and name of the endpoint joined for container id.
func endpointOf(h *host, id string) (eid, name string) {
	GinkgoHelper()
	out, code := h.cnmctl("endpoint", "ls", "--network", net1.name)
	Expect(code).To(BeZero(), "%s", out)
	var eps []struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Sandbox *struct {
			ContainerID string `json:"containerID"`
		} `json:"sandbox"`
	}
	Expect(json.Unmarshal(out, &eps)).To(Succeed(), "%s", out)
	for _, ep := range eps {
		if ep.Sandbox != nil && ep.Sandbox.ContainerID == id {
			return ep.ID, ep.Name
		}
	}
	Fail("no endpoint joined for container " + id)
	return "", ""
}

// endpointID is the ID of the endpoint joined for container id.
func endpointID(h *host, id string) string {
	GinkgoHelper()
	eid, _ := endpointOf(h, id)
	return eid
}

// hostVeth is the host end of endpoint eid's veth.
func hostVeth(eid string) string { return "ovh" + eid[:11] }

// objects are the findings as "kind object".
func objects(found []finding) []string {
	var out []string
	for _, f := range found {
		out = append(out, f.Kind+" "+f.Object)
	}
	return out
}

// masterOf is the name of the master of link name in h's namespace, ""
// for none.
func (h *host) masterOf(name string) string {
	GinkgoHelper()
	master := ""
	in(h.ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil || l.Attrs().MasterIndex == 0 {
			return err
		}
		m, err := netlink.LinkByIndex(l.Attrs().MasterIndex)
		if err == nil {
			master = m.Attrs().Name
		}
		return err
	})
	return master
}

// hairpin says whether bridge port name in h's namespace is hairpin.
func (h *host) hairpin(name string) bool {
	GinkgoHelper()
	on := false
	in(h.ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		pi, err := netlink.LinkGetProtinfo(l)
		on = pi.Hairpin
		return err
	})
	return on
}
