package integration_test

import (
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ = Describe("delegated IPAM (host-local)", func() {
	var (
		w       *world
		n       network
		hlDir   string
		hlFiles func() []string
	)
	BeforeEach(func() {
		w = newWorld()
		hlDir = GinkgoT().TempDir()
		n = network{name: "hlnet", typ: "cnm-testveth", version: "1.1.0", ipam: map[string]any{
			"type": "host-local", "dataDir": hlDir, "ranges": []any{[]any{map[string]any{"subnet": "10.66.0.0/24"}}},
		}}
		hlFiles = func() []string {
			entries, _ := os.ReadDir(filepath.Join(hlDir, "hlnet"))
			var ips []string
			for _, e := range entries {
				if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
					ips = append(ips, e.Name())
				}
			}
			return ips
		}
	})

	It("allocates through the plugin and releases on DEL of an ephemeral endpoint", func() {
		a := attachment{id: "hl-1", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.66.0.2/24"))
		Expect(hlFiles()).To(ConsistOf("10.66.0.2"))
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.status(n)).To(Succeed())
		Expect(w.del(n, a)).To(Succeed())
		Expect(hlFiles()).To(BeEmpty())
	})

	It("keeps a persistent endpoint's reservation across containers", func() {
		args := [][2]string{{"CNM_ENDPOINT", "hl-web"}}
		a := attachment{id: "hl-a", netns: newNS(), args: args}
		res1, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		Expect(hlFiles()).To(HaveLen(1), "host-local still holds the endpoint's address")
		b := attachment{id: "hl-b", netns: newNS(), args: args}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
	})

	It("forwards GC with the live endpoints as valid attachments", func() {
		keep := attachment{id: "hl-keep", netns: newNS()}
		drop := attachment{id: "hl-drop", netns: newNS()}
		for _, a := range []attachment{keep, drop} {
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
		}
		gc := w.stdin(n, map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{{ContainerID: "hl-keep", IfName: "eth0"}}})
		_, err := w.exec("cnm-testveth", invocation{command: "GC", stdin: gc})
		Expect(err).NotTo(HaveOccurred())
		Expect(hlFiles()).To(HaveLen(1))
		Expect(w.check(n, keep)).To(Succeed())
	})
})

var _ = Describe("a store that cannot be read", func() {
	It("gets error 5 on ADD and 50 on STATUS, and is never overwritten", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		Expect(os.Chmod(w.dataDir, 0o700)).To(Succeed())
		path := filepath.Join(w.dataDir, store.FileName)
		garbage := make([]byte, 32*1024)
		for i := range garbage {
			garbage[i] = byte(i * 7)
		}
		Expect(os.WriteFile(path, garbage, 0o600)).To(Succeed())

		_, err := w.add(n, attachment{id: "c", netns: newNS()})
		Expect(cniCode(err)).To(Equal(types.ErrIOFailure))
		Expect(err.Error()).To(ContainSubstring(path))
		Expect(cniCode(w.status(n))).To(Equal(types.ErrPluginNotAvailable))
		_, err = w.exec("cnm-testveth", invocation{command: "DEL", containerID: "c", stdin: w.stdin(n, nil)})
		Expect(cniCode(err)).To(Equal(types.ErrIOFailure))

		after, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(after).To(Equal(garbage))
		Expect(w.hostLinks("tv")).To(BeEmpty())
	})
})
