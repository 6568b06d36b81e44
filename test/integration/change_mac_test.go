package integration_test

import (
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("MACs are unique in their network, like addresses", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	withIPs := func(ips ...string) map[string]any { return map[string]any{"ips": ips} }
	withMAC := func(mac string) map[string]any { return map[string]any{"mac": mac} }

	It("derives distinct MACs on an IPv6-only network for addresses whose low 32 bits are equal", func() {
		n := bridgeNet("v6only", "fd22::/64")
		a := attachment{id: "a", netns: newNS(), caps: withIPs("fd22::1:0:0:5/64")}
		b := attachment{id: "b", netns: newNS(), caps: withIPs("fd22::2:0:0:5/64")}
		resA, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		resB, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(macOf(resA)).NotTo(Equal(macOf(resB)))
		Expect(macOf(resA)).To(HavePrefix("02:42:"))
		Expect(ping6(a.netns, "fd22::2:0:0:5")).To(Succeed())
		Expect(noDADFailure(a.netns)).To(Succeed())
		Expect(noDADFailure(b.netns)).To(Succeed())
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.check(n, b)).To(Succeed())
	})

	It("refuses a static MAC another endpoint has, with error 100, and changes nothing", func() {
		n := bridgeNet("macs", "10.99.0.0/24")
		a := attachment{id: "a", netns: newNS(), caps: withMAC("02:00:00:00:00:aa")}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		before := w.dump()
		_, err = w.add(n, attachment{id: "b", netns: newNS(), caps: withMAC("02:00:00:00:00:aa")})
		Expect(cniCode(err)).To(BeEquivalentTo(100))
		Expect(err.Error()).To(ContainSubstring("mac: 02:00:00:00:00:aa is held by endpoint a/eth0"))
		Expect(w.dump()).To(Equal(before))

		_, errOut, code := w.cnmctl("endpoint", "create", "--network", n.name, "--name", "dup", "--mac", "02:00:00:00:00:aa")
		Expect(code).To(Equal(1))
		Expect(errOut).To(ContainSubstring("code 100"))
		Expect(w.dump()).To(Equal(before))

		// Once a lets go, the MAC is free again.
		Expect(w.del(n, a)).To(Succeed())
		_, err = w.add(n, attachment{id: "b", netns: newNS(), caps: withMAC("02:00:00:00:00:aa")})
		Expect(err).NotTo(HaveOccurred())
	})

	It("refuses a static MAC that another endpoint got derived from its address", func() {
		n := bridgeNet("macs", "10.99.0.0/24")
		res, err := w.add(n, attachment{id: "a", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n, attachment{id: "b", netns: newNS(), caps: withMAC(macOf(res))})
		Expect(cniCode(err)).To(BeEquivalentTo(100))
	})

	It("derives another MAC when the one from the address is taken by a static one", func() {
		n := bridgeNet("macs", "10.99.0.0/24")
		// 10.99.0.2 is the first address handed out: its MAC would be this.
		taken := "02:42:0a:63:00:02"
		a := attachment{id: "a", netns: newNS(), caps: map[string]any{"mac": taken, "ips": []string{"10.99.0.200/24"}}}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		b := attachment{id: "b", netns: newNS()}
		res, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.99.0.2/24"))
		Expect(macOf(res)).NotTo(Equal(taken))
		Expect(ping(b.netns, "10.99.0.2", "10.99.0.200")).To(Succeed())
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.check(n, b)).To(Succeed())
	})
})

// ping6 sends a few echo requests from n to dst.
func ping6(n ns.NetNS, dst string) error {
	return n.Do(func(ns.NetNS) error {
		out, err := exec.Command("ping", "-6", "-c", "2", "-W", "2", "-i", "0.2", dst).CombinedOutput()
		if err != nil {
			GinkgoWriter.Printf("ping6 %s: %s\n", dst, out)
		}
		return err
	})
}

// noDADFailure fails if an address in n failed duplicate address
// detection: what two interfaces with one MAC (and so one link-local
// address) on a segment get.
func noDADFailure(n ns.NetNS) error {
	return n.Do(func(ns.NetNS) error {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		var failed []string
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				failed = append(failed, a.IPNet.String())
			}
		}
		if len(failed) > 0 {
			return &dadError{strings.Join(failed, ", ")}
		}
		return nil
	})
}

type dadError struct{ addrs string }

func (e *dadError) Error() string { return "duplicate address detection failed for " + e.addrs }
