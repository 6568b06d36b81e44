package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
)

// convergeWithin bounds how long the daemons may take to program a
// change: generous, on a machine shared with other tests.
const convergeWithin = 20 * time.Second

// withTimeout is n with the plugin's etcd deadline set to timeout.
func withTimeout(h *host, n network, timeout string) network {
	more := map[string]any{"cluster": map[string]any{"etcd": map[string]any{
		"endpoints": h.w.etcd.Endpoints, "prefix": prefix, "timeout": timeout}}}
	for k, v := range n.more {
		more[k] = v
	}
	return network{name: n.name, subnet: n.subnet, more: more}
}

// withoutRegistrations is kv without the hosts' registrations, which
// their daemons write again as they see fit.
func withoutRegistrations(kv map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range kv {
		if !strings.HasPrefix(k, "hostinfo/") && !strings.HasPrefix(k, "hostlive/") {
			out[k] = v
		}
	}
	return out
}

// tryDumpNow is tryDump with a deadline.
func (w *world) tryDumpNow() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.tryDump(ctx)
}

// fdbMACs are the MACs of the FDB entries of link name on h.
func fdbMACs(h *host, name string) []string {
	GinkgoHelper()
	var out []string
	in(h.ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		fdb, err := netlink.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		for _, e := range fdb {
			out = append(out, e.HardwareAddr.String())
		}
		return err
	})
	return out
}

// mustDrift is drift that fails on an etcd error.
func (w *world) mustDrift() []string {
	GinkgoHelper()
	d, err := w.drift()
	Expect(err).NotTo(HaveOccurred())
	return d
}

var _ = Describe("cnm-overlay with the real cnm-overlayd, under faults", func() {
	It("loses no packet across a SIGKILL and restart of a host's daemon, which then removes the stale entries and adds the missing ones", func() {
		w := newWorld(3)
		ds := w.startDaemons()
		var cs []*container
		for i, h := range w.hosts {
			cs = append(cs, h.add(net1, fmt.Sprintf("c%d", i+1), ""))
		}
		idle := w.hosts[2].add(net1, "idle", "")
		w.expectConverged(convergeWithin)
		ps := pingMesh(cs...)
		nid := w.networkID(net1.name)
		h2 := w.hosts[1]
		time.Sleep(300 * time.Millisecond)

		ds[1].kill()
		By("drift on node-2 while its daemon is down: an entry injected, one deleted, an endpoint joined elsewhere")
		stale := dataplane.Peer{MAC: net.HardwareAddr{0x02, 0x42, 0x0a, 0xc9, 0x00, 0xfe}, IPs: []net.IP{net.ParseIP("10.201.0.254")},
			VTEP: net.ParseIP("192.168.77.9")}
		idleMAC, err := net.ParseMAC(idle.mac)
		Expect(err).NotTo(HaveOccurred())
		hn := h2.hostNetworks()[nid]
		in(h2.ns, func() error {
			if err := dataplane.SetPeer(dataplaneNetwork(nid, hn), stale); err != nil {
				return err
			}
			if err := dataplane.DeletePeer(dataplaneNetwork(nid, hn), dataplane.Peer{MAC: idleMAC, IPs: []net.IP{idle.ip}}); err != nil {
				return err
			}
			// Half entries, as a crash between two netlink calls leaves
			// them: a neighbour entry alone, an FDB entry alone, and a
			// flooding entry.
			vx, err := netlink.LinkByName(hn.VXLAN)
			if err != nil {
				return err
			}
			return errors.Join(
				netlink.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
					IP: net.ParseIP("10.201.0.253"), HardwareAddr: net.HardwareAddr{0x02, 0x42, 0x0a, 0xc9, 0x00, 0xfd}}),
				netlink.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
					Flags: netlink.NTF_SELF, IP: net.ParseIP("192.168.77.8"), HardwareAddr: net.HardwareAddr{0x02, 0x42, 0x0a, 0xc9, 0x00, 0xfc}}),
				netlink.NeighAppend(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
					Flags: netlink.NTF_SELF, IP: net.ParseIP("192.168.77.7"), HardwareAddr: make(net.HardwareAddr, 6)}))
		})
		Expect(h2.entries(nid, hn)).To(ContainElements(
			HavePrefix("02:42:0a:c9:00:fd [10.201.0.253]"), HavePrefix("02:42:0a:c9:00:fc [] at 192.168.77.8"),
			HavePrefix(stale.MAC.String())), "the injected entries")
		Expect(fdbMACs(h2, hn.VXLAN)).To(ContainElement("00:00:00:00:00:00"))
		late := w.hosts[0].add(net1, "late", "")
		Eventually(w.mustDrift, convergeWithin, 50*time.Millisecond).Should(ConsistOf(HavePrefix(h2.name+",")),
			"node-2 alone has drifted; the others learnt late")
		Expect(cs[1].unreachable(idle.ip)).To(BeTrue(), "node-2 no longer forwards to idle")
		time.Sleep(time.Second) // the mesh keeps flowing with the daemon down

		t := time.Now()
		ds[1].start()
		w.expectConverged(convergeWithin)
		AddReportEntry("restart to converged", time.Since(t).Round(time.Millisecond).String())
		Expect(fdbMACs(h2, hn.VXLAN)).NotTo(ContainElement("00:00:00:00:00:00"), "the flooding entry is gone")
		time.Sleep(300 * time.Millisecond)
		expectNoLoss(ps)
		// c2's own neighbour entry for idle may still be failing from the
		// probes it sent while idle was not forwarded to: retried.
		Eventually(func() error { return cs[1].ping(idle.ip, 0) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		Expect(cs[1].ping(late.ip, 0)).To(Succeed())
		Expect(late.ping(cs[1].ip, 0)).To(Succeed())
	})

	It("keeps serving with one etcd member of three killed: traffic flows, and a new endpoint is programmed on the other hosts", func() {
		w := newWorldWith(3, worldOptions{etcdMembers: 3})
		ds := w.startDaemons()
		var cs []*container
		for i, h := range w.hosts {
			cs = append(cs, h.add(net1, fmt.Sprintf("c%d", i+1), ""))
		}
		w.expectConverged(convergeWithin)
		ps := pingMesh(cs...)
		before := withoutRegistrations(w.dump())

		leader := w.leader()
		Expect(w.etcd.Kill(leader)).To(Succeed())
		By(fmt.Sprintf("member %d, the leader, killed", leader))
		var added *container
		attempt := 0
		Eventually(func() error {
			attempt++
			c := w.hosts[1].newContainer(fmt.Sprintf("new-%d", attempt))
			err := c.tryAdd(net1, "")
			if err == nil {
				added = c
			}
			return err
		}, convergeWithin, 200*time.Millisecond).Should(Succeed(), "an ADD works with two members of three")
		w.expectConverged(convergeWithin)
		for _, c := range []*container{cs[0], cs[2]} {
			Expect(c.ping(added.ip, 0)).To(Succeed())
			Expect(added.ping(c.ip, 0)).To(Succeed())
		}
		expectNoLoss(ps)

		By("nothing else changed")
		after := withoutRegistrations(w.dump())
		for k, v := range before {
			// The network's record keeps the configuration of the last
			// ADD, and the allocator's cursor moves on.
			if k != "networks/"+net1.name && !strings.HasPrefix(k, "ipam/"+net1.name+"/cursor/") {
				Expect(after).To(HaveKeyWithValue(k, v))
			}
		}
		for _, d := range ds {
			Expect(d.running()).To(BeTrue())
			code, body, err := d.h.get(metricsAddress, "/healthz")
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(200), body)
		}
	})

	It("keeps traffic flowing without etcd quorum, answers an ADD with 11 within the bound leaving nothing, and converges once quorum is back", func() {
		w := newWorldWith(3, worldOptions{etcdMembers: 3})
		ds := w.startDaemons()
		var cs []*container
		for i, h := range w.hosts {
			cs = append(cs, h.add(net1, fmt.Sprintf("c%d", i+1), ""))
		}
		w.expectConverged(convergeWithin)
		ps := pingMesh(cs...)
		h1 := w.hosts[0]
		before, links := withoutRegistrations(w.dump()), h1.links()

		leader := w.leader()
		killed := []int{leader, (leader + 1) % 3}
		Expect(w.etcd.Kill(killed...)).To(Succeed())
		By(fmt.Sprintf("members %v killed: no quorum", killed))
		const timeout = 2 * time.Second
		c := h1.newContainer("no-quorum")
		t := time.Now()
		err := c.tryAdd(withTimeout(h1, net1, timeout.String()), "")
		took := time.Since(t)
		AddReportEntry("ADD without quorum", took.Round(time.Millisecond).String())
		Expect(cniCode(err)).To(BeEquivalentTo(types.ErrTryAgainLater), "%v", err)
		Expect(err.Error()).To(ContainSubstring("unavailable"))
		Expect(took).To(BeNumerically("<", timeout+3*time.Second), "within about cluster.etcd.timeout")
		Expect(h1.links()).To(Equal(links))
		Expect(linksOf(c)).To(ConsistOf("lo"))
		By("a daemon restarted without quorum: it cannot list, and removes nothing")
		ds[1].kill()
		ds[1].startNoWait()
		time.Sleep(3 * time.Second) // past a resync interval: the daemons' listings fail, nothing is removed
		code, body, err := w.hosts[1].get(metricsAddress, "/healthz")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(503), "not healthy without etcd: %s", body)

		Expect(w.etcd.Restart(killed...)).To(Succeed())
		By("quorum back")
		Eventually(func() (map[string]string, error) {
			kv, err := w.tryDumpNow()
			return withoutRegistrations(kv), err
		}, convergeWithin, 200*time.Millisecond).Should(Equal(before), "the failed ADD recorded nothing")
		ds[1].waitHealthy()
		Expect(c.tryAdd(net1, "")).To(Succeed())
		w.expectConverged(convergeWithin)
		for _, other := range cs[1:] {
			Expect(other.ping(c.ip, 0)).To(Succeed())
			Expect(c.ping(other.ip, 0)).To(Succeed())
		}
		expectNoLoss(ps)
	})

	It("removes from the other hosts the entries of a host whose daemon stopped and whose lease expired, keeping its reservations", func() {
		w := newWorld(3)
		const ttl = 2 * time.Second
		// The short TTL for the host that goes only: the others' leases
		// must not lapse on a loaded machine.
		w.hosts[0].startDaemon()
		w.hosts[1].startDaemon()
		d3 := w.hosts[2].startDaemon("--lease-ttl", ttl.String())
		var cs []*container
		for i, h := range w.hosts {
			cs = append(cs, h.add(net1, fmt.Sprintf("c%d", i+1), ""))
		}
		kept := w.hosts[2].add(net1, "kept", "CNM_ENDPOINT=kept")
		w.expectConverged(convergeWithin)
		for _, c := range []*container{cs[0], cs[1]} {
			Expect(c.ping(cs[2].ip, 0)).To(Succeed())
			Expect(c.ping(kept.ip, 0)).To(Succeed())
		}
		nid := w.networkID(net1.name)
		h3 := w.hosts[2]
		recordsOf := func(kv map[string]string) []string {
			out := append(keysWith(kv, "endpoints/"), keysWith(kv, "drivers/cnm-overlay/peers/")...)
			return append(out, keysWith(kv, "ipam/"+net1.name+"/addr/")...)
		}
		recorded := recordsOf(w.dump())
		onH3, err := h3.entries(nid, h3.hostNetworks()[nid])
		Expect(err).NotTo(HaveOccurred())

		t := time.Now()
		d3.term()
		for _, h := range w.hosts[:2] {
			Eventually(func() ([]string, error) {
				return h.entries(nid, h.hostNetworks()[nid])
			}, convergeWithin, 50*time.Millisecond).ShouldNot(ContainElement(HaveSuffix(" at "+h3.ip.String())),
				"%s forwards to nothing on node-3", h.name)
		}
		lag := time.Since(t)
		AddReportEntry(fmt.Sprintf("SIGTERM to entries removed (lease TTL %v)", ttl), lag.Round(time.Millisecond).String())
		Expect(lag).To(BeNumerically(">=", ttl/2), "not before the lease can have expired")
		Expect(w.mustDrift()).To(BeEmpty())
		Expect(cs[0].unreachable(cs[2].ip)).To(BeTrue())
		Expect(cs[0].ping(cs[1].ip, 0)).To(Succeed(), "the others still reach each other")

		By("its reservations stay, and so does what node-3 itself forwards to")
		Expect(recordsOf(w.dump())).To(ConsistOf(recorded))
		Expect(h3.entries(nid, h3.hostNetworks()[nid])).To(Equal(onH3))

		By("its persistent endpoint, taken over on node-1 with its address and MAC, is reached there from node-2")
		moved := w.hosts[0].add(net1, "kept-on-1", "CNM_ENDPOINT=kept")
		Expect(moved.ip).To(Equal(kept.ip))
		Expect(moved.mac).To(Equal(kept.mac))
		// node-3, its daemon stopped, is not asked to learn it.
		h2 := w.hosts[1]
		Eventually(func() ([]string, error) { return h2.entries(nid, h2.hostNetworks()[nid]) }, convergeWithin, 50*time.Millisecond).
			Should(ContainElement(fmt.Sprintf("%s [%s] at %s", moved.mac, moved.ip, w.hosts[0].ip)))
		Eventually(func() error { return cs[1].ping(moved.ip, 0) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		Expect(moved.ping(cs[1].ip, 0)).To(Succeed())
	})
})
