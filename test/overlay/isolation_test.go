package overlay_test

import (
	"encoding/json"
	"fmt"
	"net"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// bridgeNetwork is a cnm-bridge network on one host, with its own
// dataDir, run from the binary under test.
type bridgeNetwork struct {
	bin, name, bridge, subnet, dataDir string
	isolation                          bool
}

func newBridgeNetwork(name, bridge, subnet string, isolation bool) *bridgeNetwork {
	GinkgoHelper()
	return &bridgeNetwork{bin: testBinary("cnm-bridge"), name: name, bridge: bridge, subnet: subnet,
		dataDir: GinkgoT().TempDir(), isolation: isolation}
}

func (b *bridgeNetwork) conf() []byte {
	GinkgoHelper()
	out, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": b.name, "type": "cnm-bridge", "dataDir": b.dataDir,
		"bridge": b.bridge, "isolation": b.isolation,
		"ipam": map[string]any{"type": "cnm", "ranges": [][]map[string]any{{{"subnet": b.subnet}}}},
	})
	Expect(err).NotTo(HaveOccurred())
	return out
}

// add makes a container on h and attaches it to b.
func (b *bridgeNetwork) add(h *host, id string) *container {
	GinkgoHelper()
	c := h.newContainer(id)
	out, err := h.execPlugin(b.bin, "ADD", c, "", b.conf())
	Expect(err).NotTo(HaveOccurred())
	res := &current.Result{}
	Expect(json.Unmarshal(out, res)).To(Succeed(), "%s", out)
	Expect(res.IPs).NotTo(BeEmpty())
	c.ip, c.prev, c.mac = res.IPs[0].Address.IP, out, c.macOf("eth0")
	return c
}

var _ = Describe("cnm-overlay with the real cnm-overlayd, and a cnm-bridge network on the same host", func() {
	It("isolates the two both ways, while each works within itself", func() {
		w := newWorld(2)
		w.startDaemons()
		h1 := w.hosts[0]
		o1 := h1.add(net1, "o1", "")
		o2 := w.hosts[1].add(net1, "o2", "")
		br := newBridgeNetwork("br-iso", "cnmiso0", "10.240.0.0/24", true)
		b1, b2 := br.add(h1, "b1"), br.add(h1, "b2")
		w.expectConverged(convergeWithin)

		By("each network works within itself")
		Expect(o1.ping(o2.ip, 0)).To(Succeed())
		Expect(o2.ping(o1.ip, 0)).To(Succeed())
		Expect(b1.ping(b2.ip, 0)).To(Succeed())
		Expect(b2.ping(b1.ip, 0)).To(Succeed())
		serve(o2.ns, net.JoinHostPort(o2.ip.String(), "8080"))
		serve(b2.ns, net.JoinHostPort(b2.ip.String(), "8080"))
		Expect(dial(o1.ns, net.JoinHostPort(o2.ip.String(), "8080"))).To(Equal(o1.ip.String()))
		Expect(dial(b1.ns, net.JoinHostPort(b2.ip.String(), "8080"))).To(Equal(b1.ip.String()))

		By("no traffic between them, either way")
		serve(o1.ns, net.JoinHostPort(o1.ip.String(), "8080"))
		serve(b1.ns, net.JoinHostPort(b1.ip.String(), "8080"))
		Expect(o1.unreachable(b1.ip)).To(BeTrue(), "overlay to bridge")
		Expect(b1.unreachable(o1.ip)).To(BeTrue(), "bridge to overlay")
		for _, pair := range [][2]*container{{o1, b1}, {b1, o1}, {o1, b2}, {b2, o1}} {
			_, err := dial(pair[0].ns, net.JoinHostPort(pair[1].ip.String(), "8080"))
			Expect(err).To(HaveOccurred(), "TCP from %s to %s", pair[0].id, pair[1].id)
		}

		By("a bridge network without isolation is reached through the host's routing: isolation is what blocks")
		open := newBridgeNetwork("br-open", "cnmopen0", "10.241.0.0/24", false)
		b3 := open.add(h1, "b3")
		Eventually(func() error { return o1.ping(b3.ip, 0) }, 5*time.Second, 200*time.Millisecond).Should(Succeed())
		Expect(b3.ping(o1.ip, 0)).To(Succeed())
		fmt.Fprintf(GinkgoWriter, "overlay %s, bridge %s and %s\n", o1.ip, b1.ip, b3.ip)
	})
})
