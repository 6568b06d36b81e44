package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

var _ = Describe("1,000 ADD/DEL cycles on cnm-bridge", func() {
	It("leave no link, rule, reservation or file behind", func() {
		const cycles = 1000
		w := newWorld()
		n := bridgeNet("leak", "10.81.0.0/24")
		c := newNS()
		// A first endpoint makes the network, so that what stays after the
		// cycles is the network's own state, as before them.
		_, err := w.add(n, attachment{id: "anchor", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		baseRules := stripCounters(w.iptablesSave())
		baseLinks := w.hostLinks("")

		for i := range cycles {
			id := fmt.Sprintf("cycle-%d", i)
			stdin := w.stdin(n, nil)
			if i%2 == 0 {
				// Half the cycles publish a port, so rules come and go too.
				var m map[string]any
				Expect(json.Unmarshal(stdin, &m)).To(Succeed())
				m["runtimeConfig"] = publish(20000+i%1000, 80)
				stdin, _ = json.Marshal(m)
			}
			_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: id, netns: c.Path(), stdin: stdin})
			Expect(err).NotTo(HaveOccurred(), "ADD %d", i)
			_, err = w.exec("cnm-bridge", invocation{command: "DEL", containerID: id, netns: c.Path(), stdin: stdin})
			Expect(err).NotTo(HaveOccurred(), "DEL %d", i)
		}

		Expect(w.hostLinks("")).To(ConsistOf(baseLinks))
		Expect(testns.LinkNames(c)).To(ConsistOf("lo"))
		Expect(stripCounters(w.iptablesSave())).To(Equal(baseRules))
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/leak/")).To(HaveLen(1))
		Expect(keysUnder(kv, "attachments/leak/")).To(HaveLen(1))
		Expect(keysUnder(kv, "sandboxes/")).To(HaveLen(1))
		Expect(keysUnder(kv, "ipam/leak/addr/")).To(HaveLen(1))
		Expect(keysUnder(kv, "drivers/cnm-bridge/hostports/")).To(BeEmpty())
		Expect(keysUnder(kv, "drivers/cnm-bridge/endpoints/")).To(BeEmpty())
		entries, err := os.ReadDir(w.dataDir)
		Expect(err).NotTo(HaveOccurred())
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		Expect(strings.Join(names, " ")).To(Equal("state.db state.lock"))
	})
})
