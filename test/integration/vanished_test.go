package integration_test

import (
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("reliability: host state that vanished before DEL", Label("reliability"), func() {
	var (
		w *world
		n network
		a attachment
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("van", "10.95.0.0/24")
		a = attachment{id: "v", netns: newNS(), caps: publish(8086, 80)}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
	})

	deleteHostLink := func(prefix string) {
		names := w.hostLinks(prefix)
		Expect(names).To(HaveLen(1))
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(names[0])
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		})).To(Succeed())
	}

	// converges: CHECK says what is wrong, DEL and GC succeed, and
	// nothing of the endpoint is left.
	converges := func(checkSays string) {
		err := w.check(n, a)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(checkSays))
		Expect(w.del(n, a)).To(Succeed())
		Expect(w.del(n, a)).To(Succeed())
		_, err = w.exec("cnm-bridge", invocation{command: "GC", stdin: w.stdin(n, nil)})
		Expect(err).NotTo(HaveOccurred())
		w.expectNoEndpointState("van")
		out, _, code := w.cnmctl("check")
		if len(w.hostLinks("cnm-")) == 0 {
			// The network is still there: its missing bridge is a finding.
			Expect(code).To(Equal(3), out)
			Expect(out).To(ContainSubstring("in this network namespace"))
			return
		}
		Expect(code).To(BeZero(), out)
	}

	It("converges when the netns was deleted", func() {
		removeNS(a.netns)
		converges("sandbox does not exist")
	})

	It("converges when the host veth was deleted by hand", func() {
		deleteHostLink("veth")
		converges("interface not found") // the pair goes with its host end
	})

	It("converges when the bridge was deleted by hand, and the next ADD makes it again", func() {
		deleteHostLink("cnm-")
		converges("bridge")
		b := attachment{id: "after", netns: newNS(), caps: publish(8087, 80)}
		_, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.hostLinks("cnm-")).To(HaveLen(1))
		Expect(w.check(n, b)).To(Succeed())
		Expect(ping(b.netns, "10.95.0.3", "10.95.0.1")).To(Succeed())
	})
})
