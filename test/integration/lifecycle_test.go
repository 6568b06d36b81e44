package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

func nullNet(version string) network {
	return network{name: "nullnet", typ: "cnm-null", version: version}
}

func vethNet(version string) network {
	return network{name: "vethnet", typ: "cnm-testveth", version: version, ipam: ipamRanges("10.77.0.0/24")}
}

var _ = Describe("VERSION", func() {
	It("reports every supported spec version", func() {
		w := newWorld()
		for _, p := range []string{"cnm-null", "cnm-testveth"} {
			info, err := w.cni.GetVersionInfo(context.Background(), p)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.SupportedVersions()).To(ConsistOf(allVersions))
		}
	})
})

var _ = Describe("ADD, CHECK and DEL through libcni", func() {
	DescribeTable("a cnm-null sandbox gets only lo and a result without IPs",
		func(version string) {
			w := newWorld()
			n := nullNet(version)
			a := attachment{id: "ctr-null", netns: newNS()}
			res, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Version()).To(Equal(version))
			cur, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			Expect(cur.IPs).To(BeEmpty())
			Expect(cur.Interfaces).To(BeEmpty())

			lo, _ := linkIn(a.netns, "lo")
			Expect(lo.Attrs().Flags&1).NotTo(BeZero(), "lo is up")
			Expect(testns.LinkNames(a.netns)).To(ConsistOf("lo"))
			Expect(keysUnder(w.dump(), "endpoints/nullnet/")).To(HaveLen(1))

			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(n, a)).To(Succeed())
			}
			Expect(w.del(n, a)).To(Succeed())
			Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
			Expect(keysUnder(w.dump(), "sandboxes/")).To(BeEmpty())
		},
		versionEntries(),
	)

	DescribeTable("a driver that asks for addresses gets one from the built-in IPAM",
		func(version string) {
			w := newWorld()
			n := vethNet(version)
			a := attachment{id: "ctr-veth", netns: newNS()}
			res, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Version()).To(Equal(version))
			cur, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			Expect(cur.IPs).To(HaveLen(1))
			Expect(cur.IPs[0].Address.String()).To(Equal("10.77.0.2/24"))
			Expect(cur.IPs[0].Gateway.String()).To(Equal("10.77.0.1"))
			Expect(cur.Interfaces).To(HaveLen(2))
			Expect(cur.Interfaces[1].Name).To(Equal("eth0"))
			Expect(cur.Interfaces[1].Sandbox).To(Equal(a.netns.Path()))
			Expect(*cur.IPs[0].Interface).To(Equal(1))

			link, addrs := linkIn(a.netns, "eth0")
			Expect(link).NotTo(BeNil())
			Expect(link.Attrs().HardwareAddr.String()).To(Equal(cur.Interfaces[1].Mac))
			Expect(addrStrings(addrs)).To(ContainElement("10.77.0.2/24"))
			Expect(defaultGateway(a.netns)).To(Equal("10.77.0.1"))

			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(n, a)).To(Succeed())
			}
			Expect(w.del(n, a)).To(Succeed())
			Expect(testns.LinkNames(a.netns)).NotTo(ContainElement("eth0"))
			Expect(w.hostLinks("tv")).To(BeEmpty())
			kv := w.dump()
			Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
			Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
			Expect(keysUnder(kv, "attachments/")).To(BeEmpty())
		},
		versionEntries(),
	)

	It("serves dual-stack with an IPv6 /64", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		n.ipam = ipamRanges("10.77.0.0/24", "fd00:77::/64")
		a := attachment{id: "ctr-ds", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		cur, _ := current.NewResultFromResult(res)
		Expect(cur.IPs).To(HaveLen(2))
		_, addrs := linkIn(a.netns, "eth0")
		Expect(addrStrings(addrs)).To(ContainElements("10.77.0.2/24", "fd00:77::2/64"))
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.del(n, a)).To(Succeed())
	})

	It("CHECK says what differs when the sandbox changed", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		a := attachment{id: "ctr-chk", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(a.netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr("10.77.0.2/24")
			return netlink.AddrDel(l, addr)
		})).To(Succeed())
		err = w.check(n, a)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("10.77.0.2/24"))
		Expect(w.del(n, a)).To(Succeed())
	})

	It("keeps one sandbox record for endpoints of several networks", func() {
		w := newWorld()
		n1, n2 := vethNet("1.1.0"), nullNet("1.1.0")
		a := attachment{id: "ctr-multi", netns: newNS()}
		_, err := w.add(n1, a)
		Expect(err).NotTo(HaveOccurred())
		b := a
		b.ifname = "net1"
		_, err = w.add(n2, b)
		Expect(err).NotTo(HaveOccurred())
		sb := keysUnder(w.dump(), "sandboxes/")
		Expect(sb).To(HaveLen(1))
		var rec struct{ Endpoints []string }
		Expect(json.Unmarshal([]byte(w.dump()[sb[0]]), &rec)).To(Succeed())
		Expect(rec.Endpoints).To(HaveLen(2))
		Expect(w.del(n1, a)).To(Succeed())
		Expect(keysUnder(w.dump(), "sandboxes/")).To(HaveLen(1))
		Expect(w.del(n2, b)).To(Succeed())
		Expect(keysUnder(w.dump(), "sandboxes/")).To(BeEmpty(), "the sandbox goes with its last endpoint")
	})

	It("returns an error when ADD is repeated for the same attachment", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		a := attachment{id: "ctr-twice", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n, a)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("CNI_IFNAME"))
		Expect(w.check(n, a)).To(Succeed(), "the first attachment is untouched")
		Expect(w.del(n, a)).To(Succeed())
	})
})

var _ = Describe("DEL", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = vethNet("1.1.0")
	})

	expectClean := func() {
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "attachments/")).To(BeEmpty())
		Expect(keysUnder(kv, "sandboxes/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
		Expect(w.hostLinks("tv")).To(BeEmpty())
	}

	It("succeeds for a container it never saw", func() {
		_, err := w.exec("cnm-testveth", invocation{command: "DEL", containerID: "nobody", stdin: w.stdin(n, nil)})
		Expect(err).NotTo(HaveOccurred())
	})

	It("succeeds with an empty CNI_NETNS, removing the endpoint, and again after that", func() {
		c := newNS()
		a := attachment{id: "ctr-empty", netns: c}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		for range 2 {
			_, err = w.exec("cnm-testveth", invocation{command: "DEL", containerID: "ctr-empty", stdin: w.stdin(n, nil)})
			Expect(err).NotTo(HaveOccurred())
		}
		expectClean()
		Expect(testns.LinkNames(c)).NotTo(ContainElement("eth0"))
	})

	It("succeeds when the netns is already gone", func() {
		c := newNS()
		a := attachment{id: "ctr-gone", netns: c}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		removeNS(c)
		Expect(w.del(n, a)).To(Succeed())
		Expect(w.del(n, a)).To(Succeed())
		expectClean()
	})

	It("lets the next ADD reuse nothing of an ephemeral endpoint", func() {
		a := attachment{id: "ctr-1", netns: newNS()}
		res1, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		b := attachment{id: "ctr-2", netns: newNS()}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).NotTo(Equal(firstIP(res1)), "a just-freed address is not handed out again at once")
		Expect(w.del(n, b)).To(Succeed())
	})
})

var _ = Describe("GC", func() {
	It("removes ephemeral endpoints not listed as valid, keeps the listed ones", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		keep := attachment{id: "keep", netns: newNS()}
		drop := attachment{id: "drop", netns: newNS()}
		for _, a := range []attachment{keep, drop} {
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
		}
		gc := w.stdin(n, map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}})
		_, err := w.exec("cnm-testveth", invocation{command: "GC", stdin: gc})
		Expect(err).NotTo(HaveOccurred())
		eps := keysUnder(w.dump(), "endpoints/vethnet/")
		Expect(eps).To(ConsistOf("endpoints/vethnet/keep/eth0"))
		Expect(keysUnder(w.dump(), "ipam/vethnet/addr/")).To(HaveLen(1))
		Expect(w.hostLinks("tv")).To(HaveLen(1))
		Expect(testns.LinkNames(drop.netns)).NotTo(ContainElement("eth0"))
		Expect(w.check(n, keep)).To(Succeed())
		Expect(w.del(n, keep)).To(Succeed())
	})

	It("succeeds on a network it never saw", func() {
		w := newWorld()
		_, err := w.exec("cnm-null", invocation{command: "GC", stdin: w.stdin(nullNet("1.1.0"), nil)})
		Expect(err).NotTo(HaveOccurred())
	})
})

var _ = Describe("STATUS", func() {
	It("is ready on a fresh network and answers 50 once the pool is exhausted", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		n.ipam = ipamRanges("10.77.0.0/29") // .2 to .6 usable
		Expect(w.status(n)).To(Succeed())
		for i := range 5 {
			_, err := w.add(n, attachment{id: fmt.Sprintf("ctr-%d", i), netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
		}
		err := w.status(n)
		Expect(cniCode(err)).To(Equal(types.ErrPluginNotAvailable))
		Expect(err.Error()).To(ContainSubstring("10.77.0.0/29"))
		_, err = w.add(n, attachment{id: "one-too-many", netns: newNS()})
		Expect(err).To(HaveOccurred())
	})
})

func versionEntries() []TableEntry {
	var entries []TableEntry
	for _, v := range allVersions {
		entries = append(entries, Entry("CNI "+v, v))
	}
	return entries
}

func addrStrings(addrs []netlink.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

func defaultGateway(n ns.NetNS) string {
	gw := ""
	Expect(n.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw != nil {
				gw = r.Gw.String()
			}
		}
		return err
	})).To(Succeed())
	return gw
}

func firstIP(res types.Result) string {
	cur, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	Expect(cur.IPs).NotTo(BeEmpty())
	return cur.IPs[0].Address.String()
}

func macOf(res types.Result) string {
	cur, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	i := slices.IndexFunc(cur.Interfaces, func(i *current.Interface) bool { return i.Sandbox != "" })
	Expect(i).To(BeNumerically(">=", 0))
	return cur.Interfaces[i].Mac
}
