package integration_test

import (
	"fmt"
	"maps"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// withKeys is n with its plugin configuration's keys set to kv (a nil
// value removes the key).
func withKeys(n network, kv map[string]any) network {
	extra := maps.Clone(n.extra)
	if extra == nil {
		extra = map[string]any{}
	}
	for k, v := range kv {
		if v == nil {
			delete(extra, k)
		} else {
			extra[k] = v
		}
	}
	n.extra = extra
	return n
}

// routeBack routes subnet through gw in n: the outside answering the
// network's addresses once they are no longer masqueraded.
func routeBack(n ns.NetNS, subnet, gw string) {
	_, dst, err := net.ParseCIDR(subnet)
	Expect(err).NotTo(HaveOccurred())
	Expect(n.Do(func(ns.NetNS) error {
		return netlink.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP(gw)})
	})).To(Succeed())
}

// inspected is what cnmctl network inspect -o json says of a network:
// its host keys (the driver's record) and its stored configuration.
type inspected struct {
	Host   map[string]any `json:"host"`
	Config map[string]any `json:"config"`
}

func (w *world) inspect(name string) inspected {
	var v inspected
	w.cnmctlJSON(&v, "network", "inspect", name)
	return v
}

// expectInForce checks that the driver's record and the stored
// configuration of network name agree that key is value.
func (w *world) expectInForce(name, key string, value any) {
	GinkgoHelper()
	v := w.inspect(name)
	Expect(v.Host).To(HaveKeyWithValue(key, BeEquivalentTo(value)), "the host state")
	Expect(v.Config).To(HaveKeyWithValue(key, BeEquivalentTo(value)), "the stored configuration")
}

// expectDefaultInForce is expectInForce for a key the stored
// configuration leaves out: value is its default.
func (w *world) expectDefaultInForce(name, key string, value any) {
	GinkgoHelper()
	v := w.inspect(name)
	Expect(v.Host).To(HaveKeyWithValue(key, BeEquivalentTo(value)), "the host state")
	Expect(v.Config).NotTo(HaveKey(key), "the stored configuration")
}

// hostState is what a refused ADD must leave as it was: the store, the
// host's links with their MTU and flags, its firewall, and what cnmctl
// shows of the network.
type hostState struct {
	store   map[string]string
	links   []string
	rules   string
	inspect inspected
}

func (w *world) hostState(network string) hostState {
	var links []string
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		all, err := netlink.LinkList()
		for _, l := range all {
			a := l.Attrs()
			links = append(links, fmt.Sprintf("%s mtu %d promisc %d flags %v", a.Name, a.MTU, a.Promisc, a.Flags))
		}
		return err
	})).To(Succeed())
	return hostState{store: w.dump(), links: links, rules: stripCounters(w.iptablesSave()), inspect: w.inspect(network)}
}

func (w *world) expectUnchanged(network string, before hostState) {
	GinkgoHelper()
	after := w.hostState(network)
	Expect(after.store).To(Equal(before.store), "the store changed")
	Expect(after.links).To(Equal(before.links), "the host's links changed")
	Expect(after.rules).To(Equal(before.rules), "the firewall changed")
	Expect(after.inspect).To(Equal(before.inspect), "cnmctl network inspect changed")
}

// mtuOf is the MTU of the named link in n.
func mtuOf(n ns.NetNS, name string) int {
	link, _ := linkIn(n, name)
	ExpectWithOffset(1, link).NotTo(BeNil(), name)
	return link.Attrs().MTU
}

// hairpinOf says whether the host veth name hairpins.
func (w *world) hairpinOf(name string) bool {
	var pi netlink.Protinfo
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		pi, err = netlink.LinkGetProtinfo(l)
		return err
	})).To(Succeed())
	return pi.Hairpin
}

func (w *world) addOK(n network, a attachment) string {
	GinkgoHelper()
	res, err := w.add(n, a)
	Expect(err).NotTo(HaveOccurred())
	return hostVethOf(res)
}

var _ = Describe("an edited configuration: bridge keys applied to the network", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	DescribeTable("ipMasq false stops masquerading the network's traffic, its existing endpoints' too, and true brings it back",
		func(version string) {
			out := w.outside()
			routeBack(out, "10.86.1.0/24", "192.0.2.1")
			serve(out, "tcp", "192.0.2.2:9000")
			n := bridgeNet("ec-masq", "10.86.1.0/24")
			n.version = version
			a := attachment{id: "a", netns: newNS()}
			w.addOK(n, a)
			Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "masqueraded")

			off := withKeys(n, map[string]any{"ipMasq": false})
			b := attachment{id: "b", netns: newNS()}
			w.addOK(off, b)
			Expect(dial(b.netns, "192.0.2.2:9000")).To(Equal("10.86.1.3"), "the new endpoint is not masqueraded")
			Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("10.86.1.2"), "nor the existing one: the rule is the network's")
			w.expectInForce("ec-masq", "ipMasq", false)
			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(off, a)).To(Succeed())
				Expect(w.check(off, b)).To(Succeed())
			}

			w.addOK(n, attachment{id: "c", netns: newNS()})
			Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "masqueraded again")
			w.expectDefaultInForce("ec-masq", "ipMasq", true)
			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(n, b)).To(Succeed())
			}
		},
		versionEntries(),
	)

	It("isolation false lets the network reach an isolated one, and true separates them again", func() {
		n1, n2 := bridgeNet("ec-iso1", "10.86.2.0/24"), bridgeNet("ec-iso2", "10.86.3.0/24")
		a := attachment{id: "a", netns: newNS()}
		b := attachment{id: "b", netns: newNS()}
		w.addOK(n1, a)
		w.addOK(n2, b)
		serve(b.netns, "tcp", ":9000")
		expectBlocked(a.netns, "10.86.3.2:9000")

		w.addOK(withKeys(n2, map[string]any{"isolation": false}), attachment{id: "c", netns: newNS()})
		Expect(dial(a.netns, "10.86.3.2:9000")).To(Equal("10.86.3.1"), "reached, masqueraded to the other bridge's address")
		w.expectInForce("ec-iso2", "isolation", false)

		w.addOK(n2, attachment{id: "d", netns: newNS()})
		expectBlocked(a.netns, "10.86.3.2:9000")
		w.expectDefaultInForce("ec-iso2", "isolation", true)
	})

	It("enableICC false keeps existing and new endpoints apart, directly and through the gateway, and true lets them talk again", func() {
		n := bridgeNet("ec-icc", "10.86.4.0/24")
		a := attachment{id: "a", netns: newNS()}
		b := attachment{id: "b", netns: newNS()}
		w.addOK(n, a)
		w.addOK(n, b)
		serve(a.netns, "tcp", ":9000")
		serve(b.netns, "tcp", ":9000")
		Expect(dial(a.netns, "10.86.4.3:9000")).To(Equal("10.86.4.2"))

		off := withKeys(n, map[string]any{"enableICC": false})
		c := attachment{id: "c", netns: newNS()}
		w.addOK(off, c)
		// c reaches a through the host: the firewall's drop, not the
		// bridge's port isolation, stops that.
		routeVia(c.netns, "10.86.4.2", "10.86.4.1")
		expectBlocked(a.netns, "10.86.4.3:9000")
		expectBlocked(c.netns, "10.86.4.2:9000")
		Expect(ping(a.netns, "10.86.4.2", "10.86.4.1")).To(Succeed(), "the gateway is still reached")
		w.expectInForce("ec-icc", "enableICC", false)
		Expect(w.check(off, a)).To(Succeed())

		w.addOK(n, attachment{id: "d", netns: newNS()})
		Expect(dial(a.netns, "10.86.4.3:9000")).To(Equal("10.86.4.2"), "the existing ports are not isolated any more")
		Expect(dial(c.netns, "10.86.4.2:9000")).To(Equal("10.86.4.4"), "nor is the route through the gateway dropped")
		w.expectDefaultInForce("ec-icc", "enableICC", true)
		Expect(w.check(n, c)).To(Succeed())
	})

	It("mtu goes to the new endpoint's veth and to cnmnet's bridge, and without the key back to the default", func() {
		n := bridgeNet("ec-mtu", "10.86.5.0/24")
		a := attachment{id: "a", netns: newNS()}
		w.addOK(n, a)
		bridge, _, _ := w.bridgeOf("ec-mtu")
		Expect(mtuOf(a.netns, "eth0")).To(Equal(1500))

		small := withKeys(n, map[string]any{"mtu": 1400})
		b := attachment{id: "b", netns: newNS()}
		veth := w.addOK(small, b)
		Expect(mtuOf(b.netns, "eth0")).To(Equal(1400))
		Expect(mtuOf(w.hostNS, veth)).To(Equal(1400))
		Expect(mtuOf(w.hostNS, bridge)).To(Equal(1400))
		Expect(mtuOf(a.netns, "eth0")).To(Equal(1500), "an existing endpoint keeps its veth")
		Expect(ping(b.netns, "10.86.5.3", "10.86.5.2")).To(Succeed())
		w.expectInForce("ec-mtu", "mtu", 1400)
		Expect(w.check(small, b)).To(Succeed())

		c := attachment{id: "c", netns: newNS()}
		w.addOK(n, c)
		Expect(mtuOf(c.netns, "eth0")).To(Equal(1500), "the host namespace has no default route: 1500")
		Expect(mtuOf(w.hostNS, bridge)).To(Equal(1500))
		w.expectDefaultInForce("ec-mtu", "mtu", 1500)
	})

	It("on a bridge cnmnet did not create: mtu for new endpoints only, promiscMode refused", func() {
		w.makeBridge("ecadopt0")
		n := withKeys(bridgeNet("ec-adopt", "10.86.6.0/24"), map[string]any{"bridge": "ecadopt0"})
		w.addOK(n, attachment{id: "a", netns: newNS()})
		b := attachment{id: "b", netns: newNS()}
		w.addOK(withKeys(n, map[string]any{"mtu": 1400}), b)
		Expect(mtuOf(b.netns, "eth0")).To(Equal(1400))
		w.expectInForce("ec-adopt", "mtu", 1400)

		before := w.hostState("ec-adopt")
		promisc := withKeys(n, map[string]any{"mtu": 1400, "promiscMode": true})
		c := attachment{id: "c", netns: newNS()}
		_, err := w.add(promisc, c)
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("promiscMode: network ec-adopt uses bridge ecadopt0, which cnmnet did not create"))
		Expect(err.Error()).To(ContainSubstring("cnmctl network rm ec-adopt"))
		w.expectUnchanged("ec-adopt", before)
		Expect(testns.LinkNames(c.netns)).To(ConsistOf("lo"))
	})

	It("promiscMode and hairpinMode go to cnmnet's bridge and to every endpoint's port", func() {
		n := bridgeNet("ec-flags", "10.86.7.0/24")
		a := attachment{id: "a", netns: newNS()}
		va := w.addOK(n, a)
		bridge, _, _ := w.bridgeOf("ec-flags")
		Expect(w.hairpinOf(va)).To(BeFalse())

		on := withKeys(n, map[string]any{"promiscMode": true, "hairpinMode": true})
		vb := w.addOK(on, attachment{id: "b", netns: newNS()})
		br, _ := linkIn(w.hostNS, bridge)
		Expect(br.Attrs().Promisc).To(Equal(1))
		Expect(w.hairpinOf(va)).To(BeTrue(), "the existing endpoint's port")
		Expect(w.hairpinOf(vb)).To(BeTrue())
		w.expectInForce("ec-flags", "promiscMode", true)
		w.expectInForce("ec-flags", "hairpinMode", true)

		vc := w.addOK(n, attachment{id: "c", netns: newNS()})
		br, _ = linkIn(w.hostNS, bridge)
		Expect(br.Attrs().Promisc).To(Equal(0))
		for _, v := range []string{va, vb, vc} {
			Expect(w.hairpinOf(v)).To(BeFalse(), v)
		}
		Expect(w.check(n, a)).To(Succeed())
	})

	It("hostBindingIPv4 binds the ports published from then on, and leaves those published before", func() {
		w.outside() // the host address 192.0.2.1
		n := bridgeNet("ec-bind", "10.86.8.0/24")
		a := attachment{id: "a", netns: newNS(), caps: publish(8081, 80)}
		w.addOK(n, a)
		bound := withKeys(n, map[string]any{"hostBindingIPv4": "192.0.2.1"})
		b := attachment{id: "b", netns: newNS(), caps: publish(8082, 80)}
		w.addOK(bound, b)
		serve(a.netns, "tcp", ":80")
		serve(b.netns, "tcp", ":80")
		Expect(dial(w.hostNS, "192.0.2.1:8082")).NotTo(BeEmpty(), "on the binding address")
		expectBlocked(w.hostNS, "127.0.0.1:8082")
		Expect(dial(w.hostNS, "127.0.0.1:8081")).NotTo(BeEmpty(), "the port published before is still on every address")
		w.expectInForce("ec-bind", "hostBindingIPv4", "192.0.2.1")
		Expect(w.check(bound, a)).To(Succeed())
		Expect(w.check(bound, b)).To(Succeed())
	})

	It("is put back when the ADD fails after it was applied", func() {
		out := w.outside()
		serve(out, "tcp", "192.0.2.2:9000")
		n := bridgeNet("ec-undo", "10.86.9.0/24")
		a := attachment{id: "a", netns: newNS(), caps: publish(8083, 80)}
		w.addOK(n, a)
		bridge, _, _ := w.bridgeOf("ec-undo")
		before := w.hostState("ec-undo")

		edited := withKeys(n, map[string]any{"ipMasq": false, "mtu": 1400, "enableICC": false, "hairpinMode": true})
		b := attachment{id: "b", netns: newNS(), caps: publish(8083, 80)}
		_, err := w.add(edited, b)
		Expect(cniCode(err)).To(BeEquivalentTo(104), "%v", err)
		w.expectUnchanged("ec-undo", before)
		Expect(mtuOf(w.hostNS, bridge)).To(Equal(1500))
		Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "still masqueraded")
		Expect(w.check(n, a)).To(Succeed())
	})
})

// refusedEdit is one edit of a network's configuration that an ADD must
// refuse with error 7, naming key.
type refusedEdit struct {
	edit func(network) network
	// says is what the message says, after the key.
	says string
}

var _ = Describe("an edited configuration: keys that cannot change in place", func() {
	DescribeTable("are refused with error 7 naming the key and how to change it, in every CNI version, changing nothing",
		func(e refusedEdit) {
			w := newWorld()
			n := withKeys(bridgeNet("ec-ref", "10.87.1.0/24"), map[string]any{"bridge": "ecref0"})
			a := attachment{id: "a", netns: newNS()}
			w.addOK(n, a)
			before := w.hostState("ec-ref")
			edited := e.edit(n)
			for _, v := range allVersions {
				edited.version = v
				c := attachment{id: "c-" + strings.ReplaceAll(v, ".", ""), netns: newNS()}
				_, err := w.add(edited, c)
				Expect(err).To(HaveOccurred(), "CNI %s", v)
				Expect(cniCode(err)).To(BeEquivalentTo(7), "CNI %s: %v", v, err)
				Expect(err.Error()).To(ContainSubstring(e.says), "CNI %s", v)
				Expect(err.Error()).To(ContainSubstring("remove the network first: cnmctl network rm ec-ref"), "CNI %s", v)
				w.expectUnchanged("ec-ref", before)
				Expect(testns.LinkNames(c.netns)).To(ConsistOf("lo"))
				Expect(w.del(edited, c)).To(Succeed(), "the DEL that follows")
			}
			w.expectUnchanged("ec-ref", before)
			Expect(w.check(n, a)).To(Succeed())
			w.addOK(n, attachment{id: "b", netns: newNS()})
		},
		Entry("another bridge", refusedEdit{
			edit: func(n network) network { return withKeys(n, map[string]any{"bridge": "ecref1"}) },
			says: "bridge: network ec-ref exists with bridge ecref0, not ecref1; to change it"}),
		Entry("the bridge key left out (the default name)", refusedEdit{
			edit: func(n network) network { return withKeys(n, map[string]any{"bridge": nil}) },
			says: "bridge: network ec-ref exists with bridge ecref0, not cnm-"}),
		Entry("isGateway false", refusedEdit{
			edit: func(n network) network { return withKeys(n, map[string]any{"isGateway": false}) },
			says: "isGateway: network ec-ref exists with isGateway true, not false"}),
		Entry("a refused key with applicable ones", refusedEdit{
			edit: func(n network) network {
				return withKeys(n, map[string]any{"bridge": "ecref1", "ipMasq": false, "mtu": 1400})
			},
			says: "bridge: network ec-ref exists with bridge ecref0, not ecref1"}),
		Entry("another subnet", refusedEdit{
			edit: func(n network) network { n.ipam = ipamRanges("10.87.2.0/24"); return n },
			says: "ipam.ranges: network ec-ref exists with subnets 10.87.1.0/24 (gateway 10.87.1.1), not 10.87.2.0/24 (gateway 10.87.2.1)"}),
		Entry("the subnet widened", refusedEdit{
			edit: func(n network) network { n.ipam = ipamRanges("10.87.0.0/16"); return n },
			says: "ipam.ranges: network ec-ref exists with subnets 10.87.1.0/24 (gateway 10.87.1.1), not 10.87.0.0/16"}),
		Entry("a range set added", refusedEdit{
			edit: func(n network) network { n.ipam = ipamRanges("10.87.1.0/24", "fd87::/64"); return n },
			says: "ipam.ranges: network ec-ref exists with subnets 10.87.1.0/24 (gateway 10.87.1.1), not 10.87.1.0/24 (gateway 10.87.1.1), fd87::/64"}),
		Entry("another gateway", refusedEdit{
			edit: func(n network) network {
				n.ipam = map[string]any{"type": "cnm", "ranges": []any{[]any{map[string]any{"subnet": "10.87.1.0/24", "gateway": "10.87.1.254"}}}}
				return n
			},
			says: "not 10.87.1.0/24 (gateway 10.87.1.254)"}),
		Entry("another ipam type", refusedEdit{
			edit: func(n network) network {
				n.ipam = map[string]any{"type": "host-local", "ranges": []any{[]any{map[string]any{"subnet": "10.87.1.0/24"}}}}
				return n
			},
			says: "ipam.type: network ec-ref exists with ipam cnm, not host-local"}),
		Entry("no ipam", refusedEdit{
			edit: func(n network) network { n.ipam = nil; return n },
			says: "ipam: network ec-ref exists with addresses (subnets 10.87.1.0/24 (gateway 10.87.1.1)), and this configuration gives it none"}),
	)

	It("leaves the range bounds and routes, which shape no host state, to each ADD", func() {
		w := newWorld()
		n := bridgeNet("ec-bounds", "10.87.3.0/24")
		w.addOK(n, attachment{id: "a", netns: newNS()})
		n.ipam = map[string]any{"type": "cnm", "ranges": []any{[]any{map[string]any{"subnet": "10.87.3.0/24", "rangeStart": "10.87.3.100"}}},
			"routes": []any{map[string]any{"dst": "192.168.0.0/16"}}}
		res, err := w.add(n, attachment{id: "b", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.87.3.100/24"))
		cur, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		Expect(routeStrings(cur.Routes)).To(ContainElement("192.168.0.0/16 via 10.87.3.1"))
	})
})
