package integration_test

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("a range set of several subnets", func() {
	It("puts every subnet's gateway on the bridge and masquerades each, so ADD goes on once the first is full", func() {
		w := newWorld()
		n := bridgeNet("multi", "")
		// Two /29s in one range set: five addresses each, gateways left out.
		n.ipam = map[string]any{"type": "cnm", "ranges": []any{[]any{
			map[string]any{"subnet": "10.101.0.0/29"},
			map[string]any{"subnet": "10.101.1.0/29"},
		}}}
		out := w.outside()
		var last attachment
		var lastIP string
		for i := range 6 {
			last = attachment{id: fmt.Sprintf("c%d", i), netns: newNS()}
			res, err := w.add(n, last)
			Expect(err).NotTo(HaveOccurred())
			lastIP = firstIP(res)
		}
		Expect(lastIP).To(HavePrefix("10.101.1."), "the sixth address comes from the second subnet")
		src := strings.Split(lastIP, "/")[0]
		Expect(ping(last.netns, src, "10.101.1.1")).To(Succeed(), "its gateway is on the bridge")
		Expect(ping(last.netns, src, "10.101.0.2")).To(Succeed(), "it reaches the first subnet's endpoints")
		serve(out, "tcp", "192.0.2.2:9000")
		Expect(dial(last.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "masqueraded to the outside")
		Expect(w.check(n, last)).To(Succeed())
	})
})
