package integration_test

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/testutils"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// hostLocalNet is a cnm-bridge network whose addresses host-local hands
// out from subnet, keeping its files under dir.
func hostLocalNet(name, subnet, dir string) network {
	n := bridgeNet(name, "")
	n.ipam = map[string]any{"type": "host-local", "dataDir": dir, "ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
	return n
}

// hostLocalHeld lists the addresses host-local holds for network under dir.
func hostLocalHeld(dir, network string) []string {
	entries, _ := os.ReadDir(filepath.Join(dir, network))
	var ips []string
	for _, e := range entries {
		if c := e.Name()[0]; c >= '0' && c <= '9' {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

var _ = Describe("cnm-bridge with delegated IPAM", func() {
	var (
		w     *world
		hlDir string
	)
	BeforeEach(func() {
		w = newWorld()
		hlDir = GinkgoT().TempDir()
	})

	DescribeTable("host-local: containers get its addresses, the bridge its gateway and NAT, and DEL releases them",
		func(version string) {
			out := w.outside()
			serve(out, "tcp", "192.0.2.2:9000")
			n := hostLocalNet("hlbr", "10.88.0.0/24", hlDir)
			n.version = version
			a := attachment{id: "a", netns: newNS()}
			b := attachment{id: "b", netns: newNS()}
			resA, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(resA.Version()).To(Equal(version))
			Expect(firstIP(resA)).To(Equal("10.88.0.2/24"))
			resB, err := w.add(n, b)
			Expect(err).NotTo(HaveOccurred())
			Expect(firstIP(resB)).To(Equal("10.88.0.3/24"))
			Expect(hostLocalHeld(hlDir, "hlbr")).To(ConsistOf("10.88.0.2", "10.88.0.3"))

			bridge := bridgeOf(resA)
			_, addrs := linkIn(w.hostNS, bridge)
			Expect(addrStrings(addrs)).To(ContainElement("10.88.0.1/24"), "host-local's gateway is on the bridge")
			Expect(defaultGateway(a.netns)).To(Equal("10.88.0.1"))
			Expect(ping(a.netns, "10.88.0.2", "10.88.0.3")).To(Succeed())
			Expect(ping(b.netns, "10.88.0.3", "10.88.0.1")).To(Succeed())
			Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "masqueraded to the outside")
			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(n, a)).To(Succeed())
				Expect(w.check(n, b)).To(Succeed())
			}
			v := w.inspect("hlbr")
			Expect(v.Host).To(HaveKeyWithValue("subnets", ConsistOf("10.88.0.0/24")))
			out2, _, code := w.cnmctl("network", "ls")
			Expect(code).To(BeZero())
			Expect(out2).To(MatchRegexp(`(?m)^hlbr\s+cnm-bridge\s+10\.88\.0\.0/24\s`))

			Expect(w.del(n, a)).To(Succeed())
			Expect(hostLocalHeld(hlDir, "hlbr")).To(ConsistOf("10.88.0.3"), "a's reservation is released")
			Expect(w.del(n, b)).To(Succeed())
			Expect(hostLocalHeld(hlDir, "hlbr")).To(BeEmpty())
			Expect(w.hostLinks("veth")).To(BeEmpty())
		},
		versionEntries(),
	)

	It("host-local: a persistent endpoint keeps its address across containers", func() {
		n := hostLocalNet("hlpers", "10.88.1.0/24", hlDir)
		args := [][2]string{{"CNM_ENDPOINT", "db"}}
		first := attachment{id: "first", netns: newNS(), args: args}
		res1, err := w.add(n, first)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n, attachment{id: "other", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, first)).To(Succeed())
		Expect(hostLocalHeld(hlDir, "hlpers")).To(HaveLen(2), "host-local still holds the endpoint's address")

		second := attachment{id: "second", netns: newNS(), args: args}
		res2, err := w.add(n, second)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
		Expect(macOf(res2)).To(Equal(macOf(res1)))
		Expect(ping(second.netns, strings.Split(firstIP(res2), "/")[0], "10.88.1.1")).To(Succeed())
		Expect(w.check(n, second)).To(Succeed())
		Expect(hostLocalHeld(hlDir, "hlpers")).To(HaveLen(2))
	})

	It("host-local: an address outside the subnets the network's first ADD gave it is refused, and released", func() {
		n := hostLocalNet("hlmove", "10.88.2.0/24", hlDir)
		_, err := w.add(n, attachment{id: "a", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		before := w.hostState("hlmove")

		moved := hostLocalNet("hlmove", "10.88.3.0/24", hlDir)
		c := attachment{id: "c", netns: newNS()}
		_, err = w.add(moved, c)
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("ipam: host-local gave endpoint c/eth0 an address in 10.88.3.0/24, which is not a subnet of network hlmove (10.88.2.0/24 gateway 10.88.2.1"))
		Expect(err.Error()).To(ContainSubstring("cnmctl network rm hlmove"))
		w.expectUnchanged("hlmove", before)
		Expect(testns.LinkNames(c.netns)).To(ConsistOf("lo"))
		Expect(hostLocalHeld(hlDir, "hlmove")).To(ConsistOf("10.88.2.2"), "the refused endpoint's address went back to host-local")
		Expect(w.del(moved, c)).To(Succeed())
	})

	It("static: a container gets the static address and gateway, and works", func() {
		out := w.outside()
		serve(out, "tcp", "192.0.2.2:9000")
		n := bridgeNet("stbr", "")
		n.ipam = map[string]any{"type": "static", "addresses": []any{map[string]any{"address": "10.89.5.7/24", "gateway": "10.89.5.1"}}}
		a := attachment{id: "a", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.89.5.7/24"))
		Expect(macOf(res)).To(Equal("02:42:0a:59:05:07"))
		_, addrs := linkIn(w.hostNS, bridgeOf(res))
		Expect(addrStrings(addrs)).To(ContainElement("10.89.5.1/24"))
		Expect(ping(a.netns, "10.89.5.7", "10.89.5.1")).To(Succeed())
		Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"))
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.del(n, a)).To(Succeed())
		Expect(w.hostLinks("veth")).To(BeEmpty())
	})

	DescribeTable("dhcp: refused with error 7 saying why, leaving nothing, and the DEL that follows succeeds",
		func(typ string) {
			n := bridgeNet("dhcpbr", "")
			n.typ = typ
			n.ipam = map[string]any{"type": "dhcp"}
			a := attachment{id: "a", netns: newNS()}
			_, err := w.add(n, a)
			Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
			Expect(err.Error()).To(ContainSubstring("ipam.type: dhcp cannot serve a cnmnet network"))
			Expect(err.Error()).To(ContainSubstring("use host-local, static or the built-in cnm"))
			Expect(keysUnder(w.dump(), "networks/")).To(BeEmpty())
			Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
			Expect(testns.LinkNames(a.netns)).To(ConsistOf("lo"))
			Expect(w.del(n, a)).To(Succeed())
		},
		Entry("cnm-bridge", "cnm-bridge"),
		Entry("cnm-null", "cnm-null"),
	)
})
