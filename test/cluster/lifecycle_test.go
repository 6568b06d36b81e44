package cluster_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

var _ = Describe("a global network", func() {
	var c *cluster
	BeforeEach(func() { c = newCluster(2, etcdtest.Options{}) })

	DescribeTable("serves ADD, CHECK, GC, STATUS and DEL through the cluster store, on every CNI version",
		func(version string) {
			a := c.hosts[0]
			n := network{name: "g1", subnet: "10.210.0.0/24", version: version}
			ctr := newContainer("ctr-1")
			out, err := a.exec(invocation{command: "ADD", containerID: ctr.id, netns: ctr.ns.Path(), stdin: a.conf(n, nil)})
			Expect(err).NotTo(HaveOccurred())
			_, addrs := ifaceIn(ctr.ns, "eth0")
			Expect(addrs).To(ConsistOf(HavePrefix("10.210.0.")))

			kv := c.dump()
			Expect(kv).To(HaveKey("networks/g1"))
			eps := keysUnder(kv, "endpoints/g1/")
			Expect(eps).To(HaveLen(1))
			Expect(kv[eps[0]]).To(ContainSubstring(`"host":"node-1"`))
			Expect(kv).To(HaveKey("hosts/node-1/attachments/g1/ctr-1/eth0"))
			Expect(kv).To(HaveKey("hosts/node-1/hostnetworks/g1"))
			Expect(keysUnder(kv, "hosts/node-1/sandboxes/")).To(HaveLen(1))
			Expect(keysUnder(kv, "ipam/g1/addr/")).To(HaveLen(1))
			Expect(keysUnder(kv, "attachments/")).To(BeEmpty(), "attachments are a host's, not shared")

			if version != "0.3.0" && version != "0.3.1" {
				_, err = a.exec(invocation{command: "CHECK", containerID: ctr.id, netns: ctr.ns.Path(),
					stdin: a.conf(n, map[string]any{"prevResult": json.RawMessage(out)})})
				Expect(err).NotTo(HaveOccurred())
			}
			if version == "1.1.0" {
				_, err = a.exec(invocation{command: "STATUS", stdin: a.conf(n, nil)})
				Expect(err).NotTo(HaveOccurred())
				valid := []types.GCAttachment{{ContainerID: ctr.id, IfName: "eth0"}}
				_, err = a.exec(invocation{command: "GC", stdin: a.conf(n, map[string]any{"cni.dev/valid-attachments": valid})})
				Expect(err).NotTo(HaveOccurred())
				Expect(keysUnder(c.dump(), "endpoints/g1/")).To(HaveLen(1), "GC keeps a valid attachment")
			}

			Expect(a.del(n, ctr, "")).To(Succeed())
			kv = c.dump()
			Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
			Expect(keysUnder(kv, "ipam/g1/addr/")).To(BeEmpty())
			Expect(keysUnder(kv, "hosts/node-1/attachments/")).To(BeEmpty())
			Expect(keysUnder(kv, "hosts/node-1/sandboxes/")).To(BeEmpty())
			Expect(linksIn(ctr.ns)).To(ConsistOf("lo"))
			Expect(a.del(n, ctr, "")).To(Succeed(), "a second DEL")
		},
		func(v string) string { return "CNI " + v },
		Entry(nil, "0.3.0"), Entry(nil, "0.3.1"), Entry(nil, "0.4.0"), Entry(nil, "1.0.0"), Entry(nil, "1.1.0"),
	)

	It("hands out addresses from one pool to the endpoints of every host, until it is full", func() {
		// 10.210.1.0/29: 5 addresses for endpoints besides the gateway.
		n := network{name: "g2", subnet: "10.210.1.0/29"}
		seen := map[string]bool{}
		for i := range 5 {
			h := c.hosts[i%2]
			res, err := h.add(n, newContainer(fmt.Sprintf("ctr-%d", i)), "")
			Expect(err).NotTo(HaveOccurred(), "ADD %d on %s", i, h.name)
			ip := res.IPs[0].Address.IP.String()
			Expect(seen).NotTo(HaveKey(ip))
			seen[ip] = true
		}
		for _, h := range c.hosts {
			_, err := h.add(n, newContainer("ctr-more-"+h.name), "")
			Expect(cniCode(err)).To(Equal(cnm.CodePoolExhausted), "on %s: %v", h.name, err)
		}
	})

	It("rotates through the range across hosts, as on one host: a released address is not handed out next", func() {
		n := network{name: "g6", subnet: "10.210.5.0/24"}
		ctr := newContainer("ctr-1")
		first, err := c.hosts[0].add(n, ctr, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(c.hosts[0].del(n, ctr, "")).To(Succeed())
		next, err := c.hosts[1].add(n, newContainer("ctr-2"), "")
		Expect(err).NotTo(HaveOccurred())
		Expect(next.IPs[0].Address.IP.String()).NotTo(Equal(first.IPs[0].Address.IP.String()))
		Expect(next.IPs[0].Address.IP.To4()[3]).To(Equal(first.IPs[0].Address.IP.To4()[3] + 1))
	})

	It("moves a persistent endpoint from host A to host B with the same address and MAC", func() {
		a, b := c.hosts[0], c.hosts[1]
		n := network{name: "g3", subnet: "10.210.2.0/24"}
		args := "CNM_ENDPOINT=db-0"
		onA := newContainer("ctr-a")
		resA, err := a.add(n, onA, args)
		Expect(err).NotTo(HaveOccurred())
		macA, addrsA := ifaceIn(onA.ns, "eth0")

		onB := newContainer("ctr-b")
		_, err = b.add(n, onB, args)
		Expect(cniCode(err)).To(Equal(cnm.CodeEndpointInUse), "%v", err)
		Expect(err.Error()).To(ContainSubstring("on host node-1"))
		Expect(linksIn(onB.ns)).To(ConsistOf("lo"), "a refused ADD changes nothing")
		Expect(linksIn(b.ns)).To(ConsistOf("lo"))

		Expect(a.del(n, onA, args)).To(Succeed())
		kv := c.dump()
		Expect(kv["endpoints/g3/db-0"]).To(ContainSubstring(`"state":"left"`))
		Expect(keysUnder(kv, "ipam/g3/addr/")).To(HaveLen(1), "the reservation is kept")

		resB, err := b.add(n, onB, args)
		Expect(err).NotTo(HaveOccurred())
		macB, addrsB := ifaceIn(onB.ns, "eth0")
		Expect(macB).To(Equal(macA))
		Expect(addrsB).To(Equal(addrsA))
		Expect(resB.IPs[0].Address.String()).To(Equal(resA.IPs[0].Address.String()))
		Expect(c.dump()["endpoints/g3/db-0"]).To(ContainSubstring(`"host":"node-2"`))

		// And back: refused on A while joined on B.
		again := newContainer("ctr-a2")
		_, err = a.add(n, again, args)
		Expect(cniCode(err)).To(Equal(cnm.CodeEndpointInUse))
		Expect(err.Error()).To(ContainSubstring("on host node-2"))
	})

	It("lets each host's GC collect only its own attachments", func() {
		a, b := c.hosts[0], c.hosts[1]
		n := network{name: "g4", subnet: "10.210.3.0/24"}
		onA, onB := newContainer("ctr-a"), newContainer("ctr-b")
		_, err := a.add(n, onA, "")
		Expect(err).NotTo(HaveOccurred())
		_, err = b.add(n, onB, "")
		Expect(err).NotTo(HaveOccurred())
		// B's runtime knows nothing of A's containers.
		valid := []types.GCAttachment{{ContainerID: onB.id, IfName: "eth0"}}
		_, err = b.exec(invocation{command: "GC", stdin: b.conf(n, map[string]any{"cni.dev/valid-attachments": valid})})
		Expect(err).NotTo(HaveOccurred())
		Expect(keysUnder(c.dump(), "endpoints/g4/")).To(HaveLen(2))
		Expect(a.check(n, onA, "", nil)).To(Succeed())
		// A's runtime lost its container: A's GC removes it.
		_, err = a.exec(invocation{command: "GC", stdin: a.conf(n, map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}})})
		Expect(err).NotTo(HaveOccurred())
		Expect(keysUnder(c.dump(), "endpoints/g4/")).To(HaveLen(1))
		Expect(linksIn(onA.ns)).To(ConsistOf("lo"))
		Expect(b.check(n, onB, "", nil)).To(Succeed())
	})

	It("is shown by cnmctl with the host each endpoint is on", func() {
		a, b := c.hosts[0], c.hosts[1]
		n := network{name: "g5", subnet: "10.210.4.0/24"}
		_, err := a.add(n, newContainer("ctr-a"), "CNM_ENDPOINT=web-a")
		Expect(err).NotTo(HaveOccurred())
		_, err = b.add(n, newContainer("ctr-b"), "CNM_ENDPOINT=web-b")
		Expect(err).NotTo(HaveOccurred())

		out, err := a.cnmctl("network", "ls")
		Expect(err).NotTo(HaveOccurred())
		var nws []map[string]any
		Expect(json.Unmarshal(out, &nws)).To(Succeed())
		Expect(nws).To(HaveLen(1))
		Expect(nws[0]["name"]).To(Equal("g5"))
		Expect(nws[0]["endpoints"]).To(BeEquivalentTo(2))

		out, err = b.cnmctl("endpoint", "ls")
		Expect(err).NotTo(HaveOccurred())
		var eps []struct {
			Name    string `json:"name"`
			Sandbox *struct {
				Host string `json:"host"`
			} `json:"sandbox"`
		}
		Expect(json.Unmarshal(out, &eps)).To(Succeed())
		hosts := map[string]string{}
		for _, ep := range eps {
			hosts[ep.Name] = ep.Sandbox.Host
		}
		Expect(hosts).To(Equal(map[string]string{"web-a": "node-1", "web-b": "node-2"}))

		table, err := b.cnmctl("-o", "table", "endpoint", "ls")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(table)).To(ContainSubstring("on node-1"))

		// The etcd settings can come from the network's own conflist.
		conflist := filepath.Join(GinkgoT().TempDir(), "20-g5.conflist")
		var plugin map[string]any
		Expect(json.Unmarshal(b.conf(n, nil), &plugin)).To(Succeed())
		list, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": n.name, "plugins": []any{plugin}})
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(conflist, list, 0o600)).To(Succeed())
		var fromFile []byte
		Expect(b.ns.Do(func(ns.NetNS) error {
			fromFile, err = exec.Command(filepath.Join(binDir, "cnmctl"), "--cluster-config", conflist, "-o", "table", "endpoint", "ls").Output()
			return err
		})).To(Succeed())
		Expect(string(fromFile)).To(Equal(string(table)))

		// Each host's check audits its own part: both agree with the store.
		for _, h := range c.hosts {
			out, err := h.cnmctl("check")
			Expect(err).NotTo(HaveOccurred(), "%s", out)
			Expect(strings.TrimSpace(string(out))).To(Equal("[]"))
		}
	})
})
