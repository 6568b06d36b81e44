package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The store is locked for each transaction only, not for a whole plugin
// invocation: what used to be serialised by that lock is checked here.
var _ = Describe("plugins running at once", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	// parallel runs the ADDs at once and returns their errors.
	parallel := func(n network, atts []attachment) []error {
		errs := make([]error, len(atts))
		var wg sync.WaitGroup
		for i, a := range atts {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				_, errs[i] = w.add(n, a)
			}()
		}
		wg.Wait()
		return errs
	}

	It("make a network once when its first ADDs come together, and its bridge is cnmnet's", func() {
		n := bridgeNet("together", "10.104.0.0/24")
		atts := make([]attachment, 8)
		for i := range atts {
			atts[i] = attachment{id: fmt.Sprintf("c%d", i), netns: newNS()}
		}
		for _, err := range parallel(n, atts) {
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(w.hostLinks("cnm-")).To(HaveLen(1))
		for _, a := range atts {
			Expect(w.check(n, a)).To(Succeed())
		}
		var inspect struct {
			Host map[string]any `json:"host"`
		}
		w.cnmctlJSON(&inspect, "network", "inspect", n.name)
		Expect(inspect.Host).To(HaveKeyWithValue("bridgeOwned", true), "no ADD took the bridge another made for one that was there before")
		_, errOut, code := w.cnmctl("network", "rm", "--force", n.name)
		Expect(code).To(BeZero(), errOut)
		Expect(w.hostLinks("cnm-")).To(BeEmpty())
	})

	It("publish every endpoint's port when the ADDs come together", func() {
		n := bridgeNet("ports", "10.105.0.0/24")
		_, err := w.add(n, attachment{id: "first", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		atts := make([]attachment, 8)
		for i := range atts {
			atts[i] = attachment{id: fmt.Sprintf("p%d", i), netns: newNS(), caps: publish(9200+i, 80)}
		}
		for _, err := range parallel(n, atts) {
			Expect(err).NotTo(HaveOccurred())
		}
		rules := w.iptablesSave()
		for i := range atts {
			Expect(rules).To(ContainSubstring(fmt.Sprintf("--dport %d", 9200+i)))
		}
		for _, a := range atts {
			Expect(w.check(n, a)).To(Succeed())
		}
	})

	It("do not make an ADD on another network wait for a slow iptables-restore", func() {
		slow := filepath.Join(GinkgoT().TempDir(), "slow")
		Expect(os.Mkdir(slow, 0o755)).To(Succeed())
		real, err := exec.LookPath("iptables-restore")
		Expect(err).NotTo(HaveOccurred())
		script := fmt.Sprintf("#!/bin/sh\nsleep 12\nexec %s \"$@\"\n", real)
		Expect(os.WriteFile(filepath.Join(slow, "iptables-restore"), []byte(script), 0o755)).To(Succeed())

		a, b := bridgeNet("slow-a", "10.106.0.0/24"), bridgeNet("slow-b", "10.107.0.0/24")
		for _, n := range []network{a, b} {
			_, err := w.add(n, attachment{id: "made-" + n.name, netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
		}
		done := make(chan error, 1)
		go func() {
			defer GinkgoRecover()
			// A published port on a: its iptables-restore takes 12 s.
			_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "slow", netns: newNS().Path(),
				stdin: w.stdin(a, map[string]any{"runtimeConfig": publish(9300, 80)}),
				env:   []string{"PATH=" + slow + ":" + os.Getenv("PATH")}})
			done <- err
		}()
		time.Sleep(500 * time.Millisecond) // the slow ADD is in its restore
		start := time.Now()
		c := attachment{id: "quick", netns: newNS()}
		_, err = w.add(b, c)
		Expect(err).NotTo(HaveOccurred(), "not error 11: the store is not held across the other plugin's restore")
		Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
		Expect(w.check(b, c)).To(Succeed())
		Expect(<-done).To(Succeed())
		Expect(strings.Count(w.iptablesSave(), "--dport 9300")).To(BeNumerically(">=", 1))
	})
})
