package integration_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

// chaosContainer is one container of the chaos test and what it has
// attached, per network.
type chaosContainer struct {
	mu       sync.Mutex
	netns    ns.NetNS
	id       string
	attached map[string]bool
}

var _ = Describe("reliability: 16 workers issuing random ADD/DEL/CHECK across 50 containers and 3 networks", Label("reliability"), func() {
	It("keep every invariant at every quiet point and at the end", func() {
		const (
			workers    = 16
			containers = 50
			quietEvery = 250
		)
		ops := 2000 * soak()
		seed := GinkgoRandomSeed()
		By(fmt.Sprintf("seed %d (rerun with --ginkgo.seed=%d)", seed, seed))
		w := newWorld()
		nets := []network{bridgeNet("chaos-a", "10.93.0.0/24"), bridgeNet("chaos-b", "10.93.1.0/24"), nullNet("1.1.0")}
		nets[2].name = "chaos-null"
		ifnames := map[string]string{"chaos-a": "eth0", "chaos-b": "net1", "chaos-null": "null0"}
		ctrs := make([]*chaosContainer, containers)
		for i := range ctrs {
			ctrs[i] = &chaosContainer{netns: newNS(), id: fmt.Sprintf("chaos-%d", i), attached: map[string]bool{}}
		}
		att := func(c *chaosContainer, n network, i int) attachment {
			a := attachment{id: c.id, netns: c.netns, ifname: ifnames[n.name]}
			if i%5 == 0 {
				// Every fifth container's endpoints are persistent.
				a.args = [][2]string{{"CNM_ENDPOINT", fmt.Sprintf("%s-%s", c.id, n.name)}}
			}
			return a
		}

		var counts sync.Map
		count := func(k string) {
			v, _ := counts.LoadOrStore(k, new(int64))
			*v.(*int64)++
		}
		var countMu sync.Mutex
		runOps := func(first, n int) {
			var wg sync.WaitGroup
			next := make(chan int)
			for range workers {
				wg.Go(func() {
					for op := range next {
						func() {
							// A failed operation fails the spec; the worker goes on
							// draining so that the producer never blocks.
							defer GinkgoRecover()
							rng := rand.New(rand.NewPCG(uint64(seed), uint64(op)))
							i := rng.IntN(containers)
							c := ctrs[i]
							n := nets[rng.IntN(len(nets))]
							verb := chaosOp(w, c, n, att(c, n, i), rng, op)
							countMu.Lock()
							count(verb)
							countMu.Unlock()
						}()
					}
				})
			}
			for op := first; op < first+n; op++ {
				next <- op
			}
			close(next)
			wg.Wait()
		}

		checkInvariants := func(when string) {
			By("invariants " + when)
			// GC at a quiet point, as the spec requires, with the attachments the test holds.
			for _, n := range nets {
				var valid []types.GCAttachment
				for _, c := range ctrs {
					if c.attached[n.name] {
						valid = append(valid, types.GCAttachment{ContainerID: c.id, IfName: ifnames[n.name]})
					}
				}
				_, err := w.exec(n.typ, invocation{command: "GC", stdin: w.stdinWith(n, map[string]any{"cni.dev/valid-attachments": valid})})
				Expect(err).NotTo(HaveOccurred(), "GC of %s %s", n.name, when)
			}
			countMu.Lock()
			count("GC")
			countMu.Unlock()

			kv := w.dump()
			owners := map[string]string{}
			bridged := 0
			for i, c := range ctrs {
				for _, n := range nets {
					if !c.attached[n.name] {
						continue
					}
					a := att(c, n, i)
					Expect(w.check(n, a)).To(Succeed(), "CHECK %s on %s %s", c.id, n.name, when)
					if n.typ != "cnm-bridge" {
						continue
					}
					bridged++
					ep := endpointRecordOf(kv, n.name, a)
					Expect(ep.Addresses).To(HaveLen(1))
					addr := ep.Addresses[0].Address
					Expect(owners).NotTo(HaveKey(addr), "two endpoints share %s", addr)
					owners[addr] = ep.Name
					link, addrs := linkIn(c.netns, ifnames[n.name])
					Expect(link).NotTo(BeNil())
					Expect(link.Attrs().HardwareAddr.String()).To(Equal(ep.MAC))
					Expect(addrStrings(addrs)).To(ContainElement(addr))
				}
			}
			Expect(w.hostLinks("veth")).To(HaveLen(bridged), "one veth per joined bridge endpoint %s", when)
			out, _, code := w.cnmctl("check")
			Expect(code).To(BeZero(), "no link, rule, reservation or index entry that no endpoint owns %s:\n%s", when, out)
		}

		for done := 0; done < ops; done += quietEvery {
			runOps(done, min(quietEvery, ops-done))
			checkInvariants(fmt.Sprintf("after %d operations", done+quietEvery))
		}

		By("DEL of everything")
		for i, c := range ctrs {
			for _, n := range nets {
				Expect(w.del(n, att(c, n, i))).To(Succeed())
				c.attached[n.name] = false
			}
		}
		checkInvariants("at the end")
		kv := w.dump()
		Expect(keysUnder(kv, "attachments/")).To(BeEmpty())
		Expect(keysUnder(kv, "sandboxes/")).To(BeEmpty())
		for _, k := range keysUnder(kv, "endpoints/") {
			Expect(kv[k]).To(ContainSubstring(`"persistent":true`), "only persistent endpoints outlive DEL: %s", k)
		}
		report := map[string]int64{}
		counts.Range(func(k, v any) bool { report[k.(string)] = *v.(*int64); return true })
		AddReportEntry("chaos", report)
		fmt.Fprintf(GinkgoWriter, "reliability: %d operations by %d workers, seed %d: %v\n", ops, workers, seed, report)
	})
})

// chaosOp runs one random operation on container c's attachment to n, as
// a runtime would: ADD if it is not attached, else DEL or CHECK. Error 11
// (try again later: the store stayed locked) is retried, as runtimes do.
func chaosOp(w *world, c *chaosContainer, n network, a attachment, rng *rand.Rand, op int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	verb := "CHECK"
	switch {
	case !c.attached[n.name]:
		verb = "ADD"
	case rng.IntN(10) < 4:
		verb = "DEL"
	}
	err := retryLocked(func() error {
		switch verb {
		case "ADD":
			_, err := w.add(n, a)
			return err
		case "DEL":
			return w.del(n, a)
		default:
			return w.check(n, a)
		}
	})
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "op %d: %s %s on %s", op, verb, c.id, n.name)
	switch verb {
	case "ADD":
		c.attached[n.name] = true
	case "DEL":
		c.attached[n.name] = false
	}
	return verb
}

func retryLocked(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); cniCode(err) != types.ErrTryAgainLater {
			return err
		}
	}
	return err
}

func endpointRecordOf(kv map[string]string, network string, a attachment) *cnm.Endpoint {
	name := kv["attachments/"+network+"/"+a.id+"/"+a.ifname]
	ExpectWithOffset(1, name).NotTo(BeEmpty(), "%s has no attachment on %s", a.id, network)
	ep := &cnm.Endpoint{}
	ExpectWithOffset(1, json.Unmarshal([]byte(kv["endpoints/"+network+"/"+name]), ep)).To(Succeed())
	return ep
}
