package integration_test

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("host safety: the cap on persistent endpoints", Label("hostsafety"), func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	// A /28 has 13 addresses to hand out, the gateway left out: the
	// default cap is half of them.
	capNet := func(version string, extra map[string]any) network {
		return network{name: "capped", typ: "cnm-bridge", version: version, ipam: ipamRanges("10.97.0.0/28"), extra: extra}
	}
	named := func(name string) attachment {
		return attachment{id: "ctr-" + name, netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", name}}}
	}
	// reserve makes the named endpoint and leaves it, reservation kept.
	reserve := func(n network, name string) {
		GinkgoHelper()
		a := named(name)
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
	}
	expectRefused := func(n network, a attachment, held int) {
		GinkgoHelper()
		before, links := w.dump(), w.hostLinks("veth")
		_, err := w.add(n, a)
		Expect(cniCode(err)).To(BeEquivalentTo(105), "%v", err)
		Expect(err.Error()).To(ContainSubstring("maxPersistentEndpoints"))
		Expect(err.Error()).To(ContainSubstring(fmt.Sprintf("holds %d persistent endpoint(s)", held)))
		after := w.dump()
		if len(before) == 0 {
			delete(after, "meta/schema") // the store was made, nothing put in it
		}
		Expect(after).To(Equal(before), "a refused ADD changes nothing")
		Expect(w.hostLinks("veth")).To(Equal(links))
	}

	DescribeTable("by default, half the addresses of the smallest range set",
		func(version string) {
			n := capNet(version, nil)
			for i := range 6 {
				reserve(n, fmt.Sprintf("e%d", i))
			}
			expectRefused(n, named("e6"), 6)
			// Containers without a reservation still get addresses.
			a := attachment{id: "plain", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.del(n, a)).To(Succeed())
			// Joining a reservation that exists is not a new one.
			again := named("e0")
			_, err = w.add(n, again)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.del(n, again)).To(Succeed())
			// Freeing one makes room for one.
			_, errOut, code := w.cnmctl("endpoint", "rm", "--network", n.name, "e0")
			Expect(code).To(BeZero(), errOut)
			reserve(n, "e6")
		},
		versionEntries())

	It("is the configured number, and counts pod identities and cnmctl's reservations too", func() {
		n := capNet("1.1.0", map[string]any{"maxPersistentEndpoints": 2, "endpointIdentity": "pod"})
		pod := attachment{id: "sb-1", netns: newNS(), args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "db-0"}}}
		_, err := w.add(n, pod)
		Expect(err).NotTo(HaveOccurred())
		_, errOut, code := w.cnmctl("endpoint", "create", "--network", n.name, "--name", "reserved")
		Expect(code).To(BeZero(), errOut)
		expectRefused(n, attachment{id: "sb-2", netns: newNS(), args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "db-1"}}}, 2)
		_, errOut, code = w.cnmctl("endpoint", "create", "--network", n.name, "--name", "one-more")
		Expect(code).To(Equal(1))
		Expect(errOut).To(ContainSubstring("maxPersistentEndpoints"))
		Expect(errOut).To(ContainSubstring("code 105"))
	})

	It("of 0 allows no persistent endpoint at all, and ephemeral ones as ever", func() {
		n := capNet("1.1.0", map[string]any{"maxPersistentEndpoints": 0})
		expectRefused(n, named("web"), 0)
		a := attachment{id: "plain", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
	})

	It("refuses a negative cap with error 7 naming the key", func() {
		n := capNet("1.1.0", map[string]any{"maxPersistentEndpoints": -1})
		_, err := w.add(n, named("web"))
		Expect(cniCode(err)).To(BeEquivalentTo(types.ErrInvalidNetworkConfig))
		Expect(err.Error()).To(ContainSubstring("maxPersistentEndpoints"))
		Expect(w.dump()).To(BeEmpty())
	})

	It("is enforced under concurrent ADDs: never more than the cap", func() {
		n := capNet("1.1.0", map[string]any{"maxPersistentEndpoints": 3})
		errs := make(chan error, 8)
		atts := make([]attachment, 8)
		for i := range atts {
			atts[i] = named(fmt.Sprintf("race%d", i))
		}
		for _, a := range atts {
			go func() {
				defer GinkgoRecover()
				_, err := w.add(n, a)
				errs <- err
			}()
		}
		refused := 0
		for range atts {
			if err := <-errs; err != nil {
				Expect(cniCode(err)).To(BeEquivalentTo(105), "%v", err)
				refused++
			}
		}
		Expect(refused).To(Equal(5))
		persistent := 0
		for k := range w.dump() {
			if strings.HasPrefix(k, "endpoints/capped/race") {
				persistent++
			}
		}
		Expect(persistent).To(Equal(3))
	})
})
