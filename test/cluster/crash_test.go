package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	hostreg "github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

// The fault points a global network's ADD and DEL pass (the test
// driver's: no bridge points).
var (
	addFaults = []string{"add:reserved", "add:provisioned", "add:joined", "add:recorded", "add:attached"}
	delFaults = []string{"del:detached", "del:left", "del:deleted"}
)

// expectNoEndpointState asserts that nothing of ephemeral endpoints of
// network is left in the store or on h, and that persistent ones are
// left with their reservation only.
func (h *host) expectNoEndpointState(network string) {
	GinkgoHelper()
	kv := h.c.dump()
	Expect(keysUnder(kv, "hosts/"+h.name+"/attachments/")).To(BeEmpty())
	Expect(keysUnder(kv, "hosts/"+h.name+"/sandboxes/")).To(BeEmpty())
	persistent := 0
	for _, k := range keysUnder(kv, "endpoints/"+network+"/") {
		Expect(kv[k]).To(ContainSubstring(`"persistent":true`), k)
		Expect(kv[k]).To(ContainSubstring(`"state":"left"`), k)
		persistent++
	}
	Expect(keysUnder(kv, "ipam/"+network+"/addr/")).To(HaveLen(persistent))
	// A persistent endpoint killed before its driver gave it a MAC has none.
	Expect(len(keysUnder(kv, "macs/"+network+"/"))).To(BeNumerically("<=", persistent))
	Expect(linksIn(h.ns)).To(ConsistOf("lo"), "the test driver's host veths")
}

var _ = Describe("a global network's plugin killed with SIGKILL at every phase of ADD and DEL", func() {
	It("leaves nothing that DEL, or GC, on that host cannot remove, and the next ADD works", func() {
		c := newCluster(1, etcdtest.Options{})
		h := c.hosts[0]
		n := network{name: "crash", subnet: "10.211.0.0/24"}
		kills := 0
		for _, persistent := range []bool{false, true} {
			for i, point := range append(append([]string{}, addFaults...), delFaults...) {
				if persistent && point == "del:deleted" {
					continue // DEL does not delete a persistent endpoint
				}
				for _, cleanup := range []string{"DEL", "GC"} {
					id := fmt.Sprintf("crash-%t-%d-%s", persistent, i, cleanup)
					ctr := newContainer(id)
					inv := invocation{containerID: id, netns: ctr.ns.Path(), stdin: h.conf(n, nil)}
					if persistent {
						inv.args = "CNM_ENDPOINT=" + id
					}
					isAdd := strings.HasPrefix(point, "add:")
					if !isAdd {
						inv.command = "ADD"
						_, err := h.exec(inv)
						Expect(err).NotTo(HaveOccurred())
					}
					inv.command = map[bool]string{true: "ADD", false: "DEL"}[isAdd]
					if h.killedRun(point, inv) {
						kills++
					}
					if cleanup == "DEL" {
						inv.command = "DEL"
						_, err := h.exec(inv)
						Expect(err).NotTo(HaveOccurred(), "DEL after a kill at %s", point)
					} else {
						_, err := h.exec(invocation{command: "GC",
							stdin: h.conf(n, map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}})})
						Expect(err).NotTo(HaveOccurred(), "GC after a kill at %s", point)
					}
					h.expectNoEndpointState(n.name)
					Expect(linksIn(ctr.ns)).To(ConsistOf("lo"), "after a kill at %s and %s", point, cleanup)

					inv.command = "ADD"
					_, err := h.exec(inv)
					Expect(err).NotTo(HaveOccurred(), "ADD after a kill at %s", point)
					inv.command = "DEL"
					_, err = h.exec(inv)
					Expect(err).NotTo(HaveOccurred())
					h.expectNoEndpointState(n.name)
				}
			}
		}
		Expect(kills).To(Equal(2*2*(len(addFaults)+len(delFaults)) - 2))
	})
})

var _ = Describe("an endpoint joined on a host that vanished", func() {
	var (
		c    *cluster
		a, b *host
		n    network
	)
	BeforeEach(func() {
		c = newCluster(2, etcdtest.Options{})
		a, b = c.hosts[0], c.hosts[1]
		n = network{name: "move", subnet: "10.211.1.0/24"}
	})

	// register keeps host h registered under a lease of ttl, as its
	// daemon would.
	register := func(h *host, ttl time.Duration) *hostreg.Registration {
		GinkgoHelper()
		s, err := etcdstore.Open(etcdstore.Config{Endpoints: c.etcd.Endpoints, Prefix: prefix, Timeout: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(s.Close)
		r, err := hostreg.Register(context.Background(), s, cnm.HostRecord{Name: h.name}, ttl)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(r.Close)
		return r
	}

	It("is taken over with its address and MAC once its host's lease expired, and not before", func() {
		r := register(a, 2*time.Second)
		onA := newContainer("ctr-a")
		resA, err := a.add(n, onA, "CNM_ENDPOINT=db-0")
		Expect(err).NotTo(HaveOccurred())
		macA, _ := ifaceIn(onA.ns, "eth0")

		onB := newContainer("ctr-b")
		_, err = b.add(n, onB, "CNM_ENDPOINT=db-0")
		Expect(cniCode(err)).To(Equal(cnm.CodeEndpointInUse), "host A is alive: %v", err)

		// Host A's daemon stops renewing: A is gone once the lease expires.
		r.Close()
		Eventually(func() uint {
			_, err := b.add(n, onB, "CNM_ENDPOINT=db-0")
			return cniCode(err)
		}, 15*time.Second, 500*time.Millisecond).Should(BeZero())
		macB, _ := ifaceIn(onB.ns, "eth0")
		Expect(macB).To(Equal(macA))
		kv := c.dump()
		Expect(kv["endpoints/move/db-0"]).To(ContainSubstring(`"host":"node-2"`))
		Expect(kv["endpoints/move/db-0"]).To(ContainSubstring(resA.IPs[0].Address.IP.String() + "/"))
		Expect(keysUnder(kv, "hosts/node-1/attachments/")).To(BeEmpty(), "A's attachment went with the takeover")
		Expect(keysUnder(kv, "hosts/node-1/sandboxes/")).To(BeEmpty())
		Expect(kv).To(HaveKey("hosts/node-2/attachments/move/ctr-b/eth0"))
		Expect(keysUnder(kv, "ipam/move/addr/")).To(HaveLen(1))

		// A's DEL, if A comes back, finds nothing of it to release.
		Expect(a.del(n, onA, "CNM_ENDPOINT=db-0")).To(Succeed())
		Expect(c.dump()["endpoints/move/db-0"]).To(ContainSubstring(`"host":"node-2"`))
		Expect(b.del(n, onB, "CNM_ENDPOINT=db-0")).To(Succeed())
		Expect(linksIn(onB.ns)).To(ConsistOf("lo"))
	})

	It("of a host that never registered, is never taken over, but can be removed by force", func() {
		_, err := a.add(n, newContainer("ctr-a"), "CNM_ENDPOINT=db-0")
		Expect(err).NotTo(HaveOccurred())
		onB := newContainer("ctr-b")
		_, err = b.add(n, onB, "CNM_ENDPOINT=db-0")
		Expect(cniCode(err)).To(Equal(cnm.CodeEndpointInUse))

		out, err := b.cnmctl("endpoint", "rm", "db-0")
		Expect(err).To(HaveOccurred(), "without --force: %s", out)
		Expect(err.Error()).To(ContainSubstring("on host node-1"))
		before := linksIn(a.ns)
		_, err = b.cnmctl("endpoint", "rm", "--force", "db-0")
		Expect(err).NotTo(HaveOccurred())
		Expect(linksIn(a.ns)).To(Equal(before), "host A is not touched from B")
		kv := c.dump()
		Expect(keysUnder(kv, "endpoints/move/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/move/addr/")).To(BeEmpty())
		Expect(keysUnder(kv, "hosts/node-1/attachments/")).To(BeEmpty())

		_, err = b.add(n, onB, "CNM_ENDPOINT=db-0")
		Expect(err).NotTo(HaveOccurred())
		// What the join made on A stays there, for A's repair (a driver's
		// janitor) to remove; the store's side agrees on both hosts.
		Expect(linksIn(a.ns)).To(Equal(before))
		for _, h := range c.hosts {
			out, err := h.cnmctl("check")
			Expect(err).NotTo(HaveOccurred(), "%s", out)
		}
	})
})
