package integration_test

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// An ADD records its join without waiting for the disk (its reservation
// was flushed before the host changed): a power cut may take the join
// back, with the interface in the sandbox it describes. What is left is
// what a plugin killed after attaching leaves, and is handled the same.
var _ = Describe("a power cut after ADDs", func() {
	It("takes back only the joins not yet made durable, and leaves endpoints that DEL and the next ADD handle", func() {
		w := newWorld()
		n := bridgeNet("cut", "10.95.0.0/24")
		web := [][2]string{{"CNM_ENDPOINT", "web"}}
		first := attachment{id: "ctr-first", netns: newNS()}
		p := attachment{id: "ctr-web", netns: newNS(), args: web}
		_, err := w.add(n, first)
		Expect(err).NotTo(HaveOccurred())
		res, err := w.add(n, p)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.dump()["endpoints/cut/web"]).To(ContainSubstring(`"state":"joined"`))
		Expect(w.check(n, p)).To(Succeed())

		By("the cut: the unflushed file is lost")
		Expect(os.Remove(filepath.Join(w.dataDir, store.VolatileName))).To(Succeed())
		kv := w.dump()
		Expect(kv["endpoints/cut/web"]).To(ContainSubstring(`"state":"joining"`), "the last join is taken back")
		Expect(kv["endpoints/cut/web"]).To(ContainSubstring(`"ctr-web"`), "to the attachment its reservation recorded")
		for _, k := range keysUnder(kv, "endpoints/cut/") {
			if !strings.HasSuffix(k, "/web") {
				Expect(kv[k]).To(ContainSubstring(`"state":"joined"`), "the first ADD's join was made durable by the second's reservation")
			}
		}
		err = w.check(n, p)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("did not finish"))

		By("the runtime's DELs after the reboot")
		Expect(w.del(n, p)).To(Succeed())
		Expect(w.del(n, first)).To(Succeed())
		w.expectNoEndpointState("cut")

		By("the persistent endpoint joined again, with its address")
		again := attachment{id: "ctr-web-2", netns: newNS(), args: web}
		res2, err := w.add(n, again)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res)))
		Expect(w.check(n, again)).To(Succeed())
	})
})
