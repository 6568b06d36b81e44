package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

// The specs of this file put the cluster store under load and faults:
// parallel ADDs from every host, etcd members killed, quorum lost,
// compaction, TLS, and cluster sections that are wrong.

// inParallel runs fn(0) … fn(n-1) each on a goroutine of its own and
// waits for all of them; the spec stops there if one of them failed.
func inParallel(n int, fn func(i int)) {
	GinkgoHelper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer GinkgoRecover()
			fn(i)
		}()
	}
	wg.Wait()
	if CurrentSpecReport().Failed() {
		Fail("a parallel step failed (see the first failure)")
	}
}

// addRaw is an ADD of ctr to n on h that returns the plugin's stdout, the
// prevResult of a later CHECK.
func (h *host) addRaw(n network, ctr container) ([]byte, error) {
	return h.exec(invocation{command: "ADD", containerID: ctr.id, netns: ctr.ns.Path(), stdin: h.conf(n, nil)})
}

// timedExec is h.exec, and how long the plugin took to answer.
func (h *host) timedExec(inv invocation) ([]byte, time.Duration, error) {
	start := time.Now()
	out, err := h.exec(inv)
	return out, time.Since(start), err
}

// callBound is how long a verb may take to answer while etcd cannot:
// the configuration's timeout and some slack for a loaded machine.
func (c *cluster) callBound() time.Duration {
	GinkgoHelper()
	t, err := time.ParseDuration(c.timeout)
	Expect(err).NotTo(HaveOccurred())
	return t + 3*time.Second
}

// leader is the index of the etcd member that leads the cluster, once
// every member runs and one leads.
func (c *cluster) leader() int {
	GinkgoHelper()
	cli := c.client()
	found := -1
	Eventually(func() error {
		for i, ep := range c.etcd.Endpoints {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err != nil {
				return fmt.Errorf("status of member %d: %w", i, err)
			}
			if st.Leader != 0 && st.Header.MemberId == st.Leader {
				found = i
				return nil
			}
		}
		return errors.New("no member leads the cluster")
	}).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	return found
}

// clusterWith is the cluster section of c's configurations with the keys
// of cluster.etcd in change set (or removed, when nil).
func (c *cluster) clusterWith(change map[string]any) map[string]any {
	etcd := map[string]any{}
	for k, v := range c.etcdSection()["etcd"].(map[string]any) {
		etcd[k] = v
	}
	for k, v := range change {
		if v == nil {
			delete(etcd, k)
		} else {
			etcd[k] = v
		}
	}
	return map[string]any{"etcd": etcd}
}

// hostsLinks are the links of every host's namespace, by host.
func (c *cluster) hostsLinks() map[string][]string {
	GinkgoHelper()
	m := map[string][]string{}
	for _, h := range c.hosts {
		m[h.name] = linksIn(h.ns)
	}
	return m
}

// expectStoreHolds asserts that the store kv holds, on network nw,
// exactly the endpoints of want (container ID → host): each joined on
// its host, its addresses reserved to its ID and to nothing else, its
// attachment and sandbox under that host's name. It returns each
// container's address.
func expectStoreHolds(kv map[string]string, nw string, want map[string]string) map[string]string {
	GinkgoHelper()
	addrs := map[string]string{}
	owners := map[string]string{} // ip → endpoint ID, from the records
	for _, k := range keysUnder(kv, "endpoints/"+nw+"/") {
		ep := &cnm.Endpoint{}
		Expect(json.Unmarshal([]byte(kv[k]), ep)).To(Succeed(), k)
		Expect(ep.State).To(Equal(cnm.StateJoined), "%s: %s", k, kv[k])
		Expect(ep.Sandbox).NotTo(BeNil(), k)
		a := ep.Sandbox
		Expect(want).To(HaveKeyWithValue(a.ContainerID, a.Host), "%s: an endpoint of a container on the host that added it", k)
		Expect(addrs).NotTo(HaveKey(a.ContainerID), "%s: a second endpoint of container %s", k, a.ContainerID)
		Expect(kv).To(HaveKeyWithValue(fmt.Sprintf("hosts/%s/attachments/%s/%s/%s", a.Host, nw, a.ContainerID, a.IfName), ep.Name), k)
		Expect(kv).To(HaveKey("hosts/"+a.Host+"/sandboxes/"+url.PathEscape(a.Key)), k)
		Expect(ep.Addresses).To(HaveLen(1), k)
		ip, _, err := net2IP(ep.Addresses[0].Address)
		Expect(err).NotTo(HaveOccurred(), k)
		Expect(owners).NotTo(HaveKey(ip), "%s: address %s recorded for two endpoints", k, ip)
		owners[ip] = ep.ID
		Expect(kv).To(HaveKeyWithValue("ipam/"+nw+"/addr/"+ip, ep.ID), "%s: its address reserved to it", k)
		addrs[a.ContainerID] = ip
	}
	Expect(addrs).To(HaveLen(len(want)), "one endpoint per container")
	Expect(keysUnder(kv, "ipam/"+nw+"/addr/")).To(HaveLen(len(want)), "no reservation that no endpoint owns")
	var attachments, sandboxes []string
	for _, k := range keysUnder(kv, "hosts/") {
		switch {
		case strings.Contains(k, "/attachments/"+nw+"/"):
			attachments = append(attachments, k)
		case strings.Contains(k, "/sandboxes/"):
			sandboxes = append(sandboxes, k)
		}
	}
	Expect(attachments).To(HaveLen(len(want)), "no attachment without its endpoint")
	Expect(sandboxes).To(HaveLen(len(want)), "no sandbox without its endpoint")
	if macs := keysUnder(kv, "macs/"+nw+"/"); len(macs) > 0 {
		Expect(macs).To(HaveLen(len(want)), "one MAC reservation per endpoint")
	}
	return addrs
}

// expectStoreReleased asserts that nothing of the endpoints of network
// nw is left in the store kv.
func expectStoreReleased(kv map[string]string, nw string) {
	GinkgoHelper()
	Expect(keysUnder(kv, "endpoints/"+nw+"/")).To(BeEmpty())
	Expect(keysUnder(kv, "ipam/"+nw+"/addr/")).To(BeEmpty())
	Expect(keysUnder(kv, "macs/"+nw+"/")).To(BeEmpty())
	for _, k := range keysUnder(kv, "hosts/") {
		Expect(k).NotTo(ContainSubstring("/attachments/"))
		Expect(k).NotTo(ContainSubstring("/sandboxes/"))
	}
}

// net2IP is the address of a CIDR, as the allocator's keys spell it.
func net2IP(cidr string) (string, *net.IPNet, error) {
	ip, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		return "", nil, err
	}
	return ip.String(), ipn, nil
}

var _ = Describe("a global network under load", func() {
	It("serves 48 parallel ADDs from three hosts with distinct addresses, and their parallel DELs", func() {
		c := newCluster(3, etcdtest.Options{})
		// The default timeout, within which a transaction that conflicts
		// runs again: 48 ADDs moving one cursor, on a loaded machine (the
		// whole of make test runs at once), take more than the 2 s the
		// other specs use.
		c.timeout = cnm.DefaultEtcdTimeout.String()
		n := network{name: "burst", subnet: "10.211.0.0/24"}
		type job struct {
			h        *host
			ctr      container
			out      []byte
			err      error
			retries  int           // ADDs that answered 11 and were tried again
			conflict []string      // their messages
			gaveUp   time.Duration // the longest of them took to answer
		}
		var jobs []*job
		want := map[string]string{}
		for i := range 48 {
			h := c.hosts[i%len(c.hosts)]
			j := &job{h: h, ctr: newContainer(fmt.Sprintf("burst-%02d", i))}
			jobs = append(jobs, j)
			want[j.ctr.id] = h.name
		}

		// Every ADD succeeds the first time: a transaction that conflicts
		// runs again until the store's timeout, so the ADDs that all move
		// the network's address cursor are served in turn. Were one to
		// answer 11, the runtime's way would be a DEL and a retry; the
		// loop keeps that path, and counts and reports any such retry.
		const attempts = 1
		start := time.Now()
		inParallel(len(jobs), func(i int) {
			j := jobs[i]
			for a := 1; ; a++ {
				var took time.Duration
				j.out, took, j.err = j.h.timedExec(invocation{command: "ADD", containerID: j.ctr.id, netns: j.ctr.ns.Path(), stdin: j.h.conf(n, nil)})
				if cniCode(j.err) != types.ErrTryAgainLater || a == attempts {
					return
				}
				j.retries++
				j.gaveUp = max(j.gaveUp, took)
				j.conflict = append(j.conflict, j.err.Error())
				Expect(j.h.del(n, j.ctr, "")).To(Succeed(), "the runtime's DEL after an ADD that answered 11")
				time.Sleep(time.Duration(100*a) * time.Millisecond)
			}
		})
		addWall := time.Since(start)
		var failed, conflicts []string
		retried, retries, gaveUp := 0, 0, time.Duration(0)
		for _, j := range jobs {
			if j.err != nil {
				failed = append(failed, fmt.Sprintf("%s on %s: %v", j.ctr.id, j.h.name, j.err))
			}
			if j.retries > 0 {
				retried++
				retries += j.retries
				gaveUp = max(gaveUp, j.gaveUp)
			}
			conflicts = append(conflicts, j.conflict...)
		}
		AddReportEntry("48 parallel ADDs", fmt.Sprintf("wall %s; %d answered 11 (the slowest in %s) and were tried again, %d retries in all; %d failed after %d attempts",
			addWall.Round(time.Millisecond), retried, gaveUp.Round(time.Millisecond), retries, len(failed), attempts))
		Expect(failed).To(BeEmpty(), "every ADD succeeds")
		for _, msg := range conflicts {
			Expect(msg).To(ContainSubstring("kept conflicting"), "an 11 comes from conflicting transactions only")
		}

		fromResults, fromLinks := map[string]string{}, map[string]string{}
		for _, j := range jobs {
			res := &struct {
				IPs []struct {
					Address string `json:"address"`
				} `json:"ips"`
			}{}
			Expect(json.Unmarshal(j.out, res)).To(Succeed(), "%s", j.out)
			Expect(res.IPs).To(HaveLen(1), "%s", j.out)
			ip, ipn, err := net2IP(res.IPs[0].Address)
			Expect(err).NotTo(HaveOccurred())
			Expect(ipn.String()).To(Equal(n.subnet))
			Expect(fromResults).NotTo(HaveKey(ip), "address %s handed out twice", ip)
			fromResults[ip] = j.ctr.id
			_, addrs := ifaceIn(j.ctr.ns, "eth0")
			Expect(addrs).To(Equal([]string{res.IPs[0].Address}), "%s's eth0 has the address of its result", j.ctr.id)
			onLink, _, err := net2IP(addrs[0])
			Expect(err).NotTo(HaveOccurred())
			Expect(fromLinks).NotTo(HaveKey(onLink), "address %s on two containers' eth0", onLink)
			fromLinks[onLink] = j.ctr.id
		}
		Expect(fromLinks).To(HaveLen(len(jobs)))

		stored := expectStoreHolds(c.dump(), n.name, want)
		for ip, id := range fromResults {
			Expect(stored).To(HaveKeyWithValue(id, ip), "the store records the address of the result")
		}

		start = time.Now()
		inParallel(len(jobs), func(i int) {
			j := jobs[i]
			j.err = j.h.del(n, j.ctr, "")
		})
		delWall := time.Since(start)
		failed = nil
		for _, j := range jobs {
			if j.err != nil {
				failed = append(failed, fmt.Sprintf("%s on %s: %v", j.ctr.id, j.h.name, j.err))
			}
		}
		AddReportEntry("48 parallel DELs", fmt.Sprintf("wall %s, %d failed", delWall.Round(time.Millisecond), len(failed)))
		Expect(failed).To(BeEmpty())
		expectStoreReleased(c.dump(), n.name)
		for _, j := range jobs {
			Expect(linksIn(j.ctr.ns)).To(ConsistOf("lo"), j.ctr.id)
		}
		for name, links := range c.hostsLinks() {
			Expect(links).To(ConsistOf("lo"), "host %s keeps no veth", name)
		}
	})

	It("keeps serving ADD and DEL on two hosts while the etcd revision is compacted again and again", func() {
		c := newCluster(2, etcdtest.Options{})
		n := network{name: "compact", subnet: "10.211.4.0/24"}
		const cycles = 12
		ctrs := make([][]container, len(c.hosts))
		for i, h := range c.hosts {
			for k := range cycles {
				ctrs[i] = append(ctrs[i], newContainer(fmt.Sprintf("cmp-%s-%02d", h.name, k)))
			}
		}

		cli := c.client()
		stop, stopped := make(chan struct{}), make(chan struct{})
		var compactions, refused atomic.Int64
		go func() {
			defer GinkgoRecover()
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond): // about every revision
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := cli.Get(ctx, "compaction-probe")
				if err == nil {
					_, err = cli.Compact(ctx, resp.Header.Revision)
				}
				cancel()
				if errors.Is(err, rpctypes.ErrCompacted) {
					refused.Add(1) // no write since the last compaction
					continue
				}
				Expect(err).NotTo(HaveOccurred(), "compact")
				compactions.Add(1)
			}
		}()

		// Every third endpoint stays, so that the store has endpoints to
		// be consistent about afterwards.
		want := map[string]string{}
		var mu sync.Mutex
		inParallel(len(c.hosts), func(i int) {
			h := c.hosts[i]
			for k, ctr := range ctrs[i] {
				out, err := h.addRaw(n, ctr)
				Expect(err).NotTo(HaveOccurred(), "ADD %s on %s", ctr.id, h.name)
				Expect(h.check(n, ctr, "", out)).To(Succeed(), "CHECK %s on %s", ctr.id, h.name)
				if k%3 == 0 {
					mu.Lock()
					want[ctr.id] = h.name
					mu.Unlock()
					continue
				}
				Expect(h.del(n, ctr, "")).To(Succeed(), "DEL %s on %s", ctr.id, h.name)
			}
		})
		close(stop)
		<-stopped
		AddReportEntry("compactions during the run", fmt.Sprintf("%d (and %d refused: no write since the last)", compactions.Load(), refused.Load()))
		Expect(compactions.Load()).To(BeNumerically(">=", 5), "the revision was compacted during the run")

		expectStoreHolds(c.dump(), n.name, want)
		for i, h := range c.hosts {
			for k, ctr := range ctrs[i] {
				if k%3 == 0 {
					Expect(h.del(n, ctr, "")).To(Succeed())
				}
				Expect(linksIn(ctr.ns)).To(ConsistOf("lo"), ctr.id)
			}
		}
		expectStoreReleased(c.dump(), n.name)
		for name, links := range c.hostsLinks() {
			Expect(links).To(ConsistOf("lo"), "host %s keeps no veth", name)
		}
	})
})

var _ = Describe("a global network while etcd members fail", func() {
	It("goes on serving ADD, CHECK and DEL on two hosts while one member of three is down, a follower and then the leader", func() {
		c := newCluster(2, etcdtest.Options{Members: 3})
		n := network{name: "members", subnet: "10.211.1.0/24"}

		// One container per host stays attached throughout, CHECKed in
		// every round.
		keep := map[string]string{}
		keepCtrs := make([]container, len(c.hosts))
		keepOut := make([][]byte, len(c.hosts))
		for i, h := range c.hosts {
			keepCtrs[i] = newContainer("keep-" + h.name)
			out, err := h.addRaw(n, keepCtrs[i])
			Expect(err).NotTo(HaveOccurred())
			keepOut[i] = out
			keep[keepCtrs[i].id] = h.name
		}

		// round runs ADD, CHECK and DEL of a new container on every host at
		// once, and CHECKs the ones kept.
		rounds := 0
		round := func(label string) {
			GinkgoHelper()
			rounds++
			ctrs := make([]container, len(c.hosts))
			for i, h := range c.hosts {
				ctrs[i] = newContainer(fmt.Sprintf("r%d-%s", rounds, h.name))
			}
			took := make([]time.Duration, len(c.hosts))
			inParallel(len(c.hosts), func(i int) {
				h, ctr := c.hosts[i], ctrs[i]
				start := time.Now()
				out, err := h.addRaw(n, ctr)
				took[i] = time.Since(start)
				Expect(err).NotTo(HaveOccurred(), "%s: ADD on %s", label, h.name)
				Expect(h.check(n, ctr, "", out)).To(Succeed(), "%s: CHECK on %s", label, h.name)
				Expect(h.check(n, keepCtrs[i], "", keepOut[i])).To(Succeed(), "%s: CHECK of the kept container on %s", label, h.name)
				Expect(h.del(n, ctr, "")).To(Succeed(), "%s: DEL on %s", label, h.name)
				Expect(linksIn(ctr.ns)).To(ConsistOf("lo"))
			})
			AddReportEntry(label, fmt.Sprintf("first ADD of each host took %v", took))
			expectStoreHolds(c.dump(), n.name, keep)
		}

		round("all members up")
		leader := c.leader()
		follower := (leader + 1) % 3
		Expect(c.etcd.Kill(follower)).To(Succeed())
		round("a follower down")
		Expect(c.etcd.Restart(follower)).To(Succeed())
		round("the follower back")

		leader = c.leader()
		Expect(c.etcd.Kill(leader)).To(Succeed())
		round("the leader down") // at once: the election runs meanwhile
		round("the leader still down")
		Expect(c.etcd.Restart(leader)).To(Succeed())
		round("the old leader back")

		for i, h := range c.hosts {
			Expect(h.del(n, keepCtrs[i], "")).To(Succeed())
		}
		expectStoreReleased(c.dump(), n.name)
		for name, links := range c.hostsLinks() {
			Expect(links).To(ConsistOf("lo"), "host %s keeps no veth", name)
		}
	})

	DescribeTable("answers 11 within about the timeout and touches nothing without quorum, and serves again once it is back",
		func(members int, pick func(c *cluster) []int) {
			c := newCluster(1, etcdtest.Options{Members: members})
			h := c.hosts[0]
			n := network{name: "quorum", subnet: "10.211.2.0/24"}
			toDel, toCheck, toAdd := newContainer("to-del"), newContainer("to-check"), newContainer("to-add")
			_, err := h.addRaw(n, toDel)
			Expect(err).NotTo(HaveOccurred())
			checkOut, err := h.addRaw(n, toCheck)
			Expect(err).NotTo(HaveOccurred())

			before := c.dump()
			links := map[string][]string{
				"host": linksIn(h.ns), toDel.id: linksIn(toDel.ns), toCheck.id: linksIn(toCheck.ns), toAdd.id: linksIn(toAdd.ns),
			}
			killed := pick(c)
			Expect(c.etcd.Kill(killed...)).To(Succeed())

			// The four verbs at once: none changes anything, and each waits
			// for etcd on its own.
			type call struct {
				verb string
				inv  invocation
				code uint
				err  error
				took time.Duration
			}
			calls := []*call{
				{verb: "ADD", code: types.ErrTryAgainLater,
					inv: invocation{command: "ADD", containerID: toAdd.id, netns: toAdd.ns.Path(), stdin: h.conf(n, nil)}},
				{verb: "DEL", code: types.ErrTryAgainLater,
					inv: invocation{command: "DEL", containerID: toDel.id, netns: toDel.ns.Path(), stdin: h.conf(n, nil)}},
				{verb: "CHECK", code: types.ErrTryAgainLater,
					inv: invocation{command: "CHECK", containerID: toCheck.id, netns: toCheck.ns.Path(),
						stdin: h.conf(n, map[string]any{"prevResult": json.RawMessage(checkOut)})}},
				{verb: "STATUS", code: types.ErrPluginNotAvailable,
					inv: invocation{command: "STATUS", stdin: h.conf(n, nil)}},
			}
			inParallel(len(calls), func(i int) {
				_, calls[i].took, calls[i].err = h.timedExec(calls[i].inv)
			})
			var report []string
			for _, cl := range calls {
				report = append(report, fmt.Sprintf("%s %d in %s", cl.verb, cniCode(cl.err), cl.took.Round(time.Millisecond)))
				Expect(cniCode(cl.err)).To(Equal(cl.code), "%s: %v", cl.verb, cl.err)
				Expect(cl.err.Error()).To(ContainSubstring("unavailable"), cl.verb)
				Expect(cl.took).To(BeNumerically("<", c.callBound()), "%s answers within about cluster.etcd.timeout (%s)", cl.verb, c.timeout)
			}
			AddReportEntry("without quorum", strings.Join(report, ", "))
			Expect(map[string][]string{
				"host": linksIn(h.ns), toDel.id: linksIn(toDel.ns), toCheck.id: linksIn(toCheck.ns), toAdd.id: linksIn(toAdd.ns),
			}).To(Equal(links), "the host and its containers are as they were")

			Expect(c.etcd.Restart(killed...)).To(Succeed())
			Expect(c.dump()).To(Equal(before), "the store is as it was")

			Expect(h.del(n, toDel, "")).To(Succeed())
			Expect(linksIn(toDel.ns)).To(ConsistOf("lo"))
			_, err = h.addRaw(n, toAdd)
			Expect(err).NotTo(HaveOccurred())
			Expect(h.check(n, toCheck, "", checkOut)).To(Succeed())
			_, err = h.exec(invocation{command: "STATUS", stdin: h.conf(n, nil)})
			Expect(err).NotTo(HaveOccurred())
			expectStoreHolds(c.dump(), n.name, map[string]string{toCheck.id: h.name, toAdd.id: h.name})
		},
		Entry("3 members, the leader left alone", 3, func(c *cluster) []int {
			l := c.leader()
			return []int{(l + 1) % 3, (l + 2) % 3}
		}),
		Entry("3 members, a follower left alone", 3, func(c *cluster) []int {
			l := c.leader()
			return []int{l, (l + 1) % 3}
		}),
		Entry("1 member, killed", 1, func(*cluster) []int { return []int{0} }),
	)
})

var _ = Describe("a global network over TLS", func() {
	var (
		c   *cluster
		h   *host
		n   network
		ctr container
	)
	BeforeEach(func() {
		c = newCluster(1, etcdtest.Options{TLS: true})
		h = c.hosts[0]
		n = network{name: "tls", subnet: "10.211.3.0/24"}
		ctr = newContainer("ctr-tls")
	})

	It("serves ADD, CHECK and DEL, and cnmctl, with the client's certificate", func() {
		out, err := h.addRaw(n, ctr)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.check(n, ctr, "", out)).To(Succeed())
		expectStoreHolds(c.dump(), n.name, map[string]string{ctr.id: h.name})

		js, err := h.cnmctl("endpoint", "ls")
		Expect(err).NotTo(HaveOccurred())
		var eps []struct {
			Sandbox *struct {
				Host        string `json:"host"`
				ContainerID string `json:"containerID"`
			} `json:"sandbox"`
		}
		Expect(json.Unmarshal(js, &eps)).To(Succeed(), "%s", js)
		Expect(eps).To(HaveLen(1))
		Expect(eps[0].Sandbox).NotTo(BeNil())
		Expect(eps[0].Sandbox.Host).To(Equal(h.name))
		Expect(eps[0].Sandbox.ContainerID).To(Equal(ctr.id))
		js, err = h.cnmctl("check")
		Expect(err).NotTo(HaveOccurred(), "%s", js)
		Expect(strings.TrimSpace(string(js))).To(Equal("[]"))

		Expect(h.del(n, ctr, "")).To(Succeed())
		expectStoreReleased(c.dump(), n.name)
		Expect(linksIn(ctr.ns)).To(ConsistOf("lo"))
	})

	// expectRefusedAdd runs an ADD with the cluster section cl and returns
	// its error, having checked that it changed nothing.
	expectRefusedAdd := func(cl map[string]any) (time.Duration, error) {
		GinkgoHelper()
		kept := newContainer("ctr-kept")
		_, err := h.addRaw(n, kept)
		Expect(err).NotTo(HaveOccurred())
		before, hostLinks := c.dump(), linksIn(h.ns)

		_, took, err := h.timedExec(invocation{command: "ADD", containerID: ctr.id, netns: ctr.ns.Path(),
			stdin: h.conf(n, map[string]any{"cluster": cl})})
		Expect(err).To(HaveOccurred())
		Expect(linksIn(ctr.ns)).To(ConsistOf("lo"))
		Expect(linksIn(h.ns)).To(Equal(hostLinks))
		Expect(c.dump()).To(Equal(before))
		Expect(h.del(n, kept, "")).To(Succeed())
		return took, err
	}

	It("refuses an ADD without the client's certificate, within about the timeout, and changes nothing", func() {
		took, err := expectRefusedAdd(c.clusterWith(map[string]any{"certFile": nil, "keyFile": nil}))
		AddReportEntry("ADD without a client certificate", fmt.Sprintf("%d in %s: %v", cniCode(err), took.Round(time.Millisecond), err))
		Expect(cniCode(err)).To(BeElementOf(uint(types.ErrTryAgainLater), uint(types.ErrInvalidNetworkConfig)), "%v", err)
		Expect(took).To(BeNumerically("<", c.callBound()))
	})

	It("refuses an ADD whose certFile does not exist with 7 naming cluster.etcd.certFile, and touches nothing", func() {
		missing := c.etcd.TLS.CertFile + ".missing"
		took, err := expectRefusedAdd(c.clusterWith(map[string]any{"certFile": missing}))
		AddReportEntry("ADD with a missing certFile", fmt.Sprintf("%d in %s: %v", cniCode(err), took.Round(time.Millisecond), err))
		Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)), "%v", err)
		Expect(err.Error()).To(HavePrefix("cluster.etcd.certFile: "))
		Expect(err.Error()).To(ContainSubstring(missing))
	})
})

var _ = Describe("a global network's bad cluster configuration", func() {
	DescribeTable("is refused by ADD, CHECK and DEL with 7 naming the field, and nothing is touched",
		func(version string, more func(c *cluster) map[string]any, field string) {
			c := newCluster(1, etcdtest.Options{})
			h := c.hosts[0]
			n := network{name: "badconf", subnet: "10.211.5.0/24", version: version}
			joined, fresh := newContainer("ctr-joined"), newContainer("ctr-fresh")
			_, err := h.add(n, joined, "")
			Expect(err).NotTo(HaveOccurred())
			before, hostLinks, joinedLinks := c.dump(), linksIn(h.ns), linksIn(joined.ns)

			bad := h.conf(n, more(c))
			for _, inv := range []invocation{
				{command: "ADD", containerID: fresh.id, netns: fresh.ns.Path(), stdin: bad},
				{command: "CHECK", containerID: joined.id, netns: joined.ns.Path(), stdin: bad},
				{command: "DEL", containerID: joined.id, netns: joined.ns.Path(), stdin: bad},
			} {
				_, err := h.exec(inv)
				Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)), "%s: %v", inv.command, err)
				var te *types.Error
				Expect(errors.As(err, &te)).To(BeTrue())
				Expect(te.Msg).To(HavePrefix(field+":"), inv.command)
				Expect(c.dump()).To(Equal(before), "%s changes nothing in the store", inv.command)
				Expect(linksIn(h.ns)).To(Equal(hostLinks), "%s makes no link on the host", inv.command)
				Expect(linksIn(joined.ns)).To(Equal(joinedLinks), inv.command)
				Expect(linksIn(fresh.ns)).To(ConsistOf("lo"), inv.command)
			}
			Expect(h.del(n, joined, "")).To(Succeed(), "the right configuration's DEL")
			expectStoreReleased(c.dump(), n.name)
		},
		badClusterEntries(),
	)
})

// badClusterEntries are the bad cluster configurations, each in two CNI
// versions: a function of the cluster giving the configuration's
// changed top-level keys, and the field the error must name.
func badClusterEntries() []TableEntry {
	cases := []struct {
		what  string
		more  func(c *cluster) map[string]any
		field string
	}{
		{"no cluster section", func(*cluster) map[string]any { return map[string]any{"cluster": nil} }, "cluster"},
		{"no endpoints", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"endpoints": nil})}
		}, "cluster.etcd.endpoints"},
		{"a relative unix socket", func(c *cluster) map[string]any {
			eps := []string{c.etcd.Endpoints[0], "unix://run/etcd.sock"}
			return map[string]any{"cluster": c.clusterWith(map[string]any{"endpoints": eps})}
		}, "cluster.etcd.endpoints[1]"},
		{"a bad scheme", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"endpoints": []string{"tcp://127.0.0.1:2379"}})}
		}, "cluster.etcd.endpoints[0]"},
		{"a prefix without a leading /", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"prefix": strings.TrimPrefix(prefix, "/")})}
		}, "cluster.etcd.prefix"},
		{"a relative certFile", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"certFile": "tls/client.crt", "keyFile": "/etc/cnmnet/client.key"})}
		}, "cluster.etcd.certFile"},
		{"an unknown key in cluster.etcd", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"timout": "2s"})}
		}, "cluster.etcd.timout"},
		{"a timeout out of range", func(c *cluster) map[string]any {
			return map[string]any{"cluster": c.clusterWith(map[string]any{"timeout": "5m"})}
		}, "cluster.etcd.timeout"},
		{"a bad host", func(*cluster) map[string]any { return map[string]any{"host": "node/1"} }, "host"},
	}
	var entries []TableEntry
	for _, tc := range cases {
		for _, v := range []string{"0.4.0", "1.1.0"} {
			entries = append(entries, Entry(fmt.Sprintf("%s, CNI %s", tc.what, v), v, tc.more, tc.field))
		}
	}
	return entries
}
