package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
)

// ovOptions size the overlay phases.
type ovOptions struct {
	endpoints  int   // convergence: endpoints added on A, each probed from B
	pairs      int   // ADD/DEL pairs per system against cnm-bridge
	moves      int   // moves of a persistent endpoint between A and B
	kills      int   // SIGKILL + restart rounds of A's daemon
	etcdPairs  int   // ADD/DEL pairs through the counting proxy
	levels     []int // endpoints in the cluster for the daemon's scale runs
	fakeHosts  int   // hosts the scale runs' endpoints are spread over
	convPingMs float64
	movePingMs float64
	killPingMs float64
	arpMs      int // the probers' ARP retransmit time
}

// OverlayResult is the overlay section of the run: cnm-overlay and
// cnm-overlayd on hosts that are network namespaces on an underlay
// bridge, a real etcd, one daemon per host.
type OverlayResult struct {
	Hosts       int            `json:"hosts"`
	Options     map[string]any `json:"options"`
	Convergence *OvConvergence `json:"convergence,omitempty"`
	Latency     *OvLatency     `json:"latency,omitempty"`
	Etcd        *OvEtcd        `json:"etcd_requests,omitempty"`
	Move        *OvMove        `json:"move,omitempty"`
	Kill        *OvKill        `json:"daemon_kill,omitempty"`
	Scale       []*OvScale     `json:"daemon_scale,omitempty"`
	Cost        *OvCost        `json:"cost,omitempty"`
	Work        *OvWork        `json:"work,omitempty"`
	Errors      errorLog       `json:"errors"`
	Phases      []OvPhase      `json:"phases"`
}

// OvWork is one overlay ADD and one DEL on A under strace -f (execve,
// sendto, sendmsg): the processes each runs, by executable, and the
// netlink messages each process sends.
type OvWork struct {
	AddProcs   map[string]int `json:"add_processes"`
	DelProcs   map[string]int `json:"del_processes"`
	AddNetlink map[string]int `json:"add_netlink_sends"`
	DelNetlink map[string]int `json:"del_netlink_sends"`
}

// OvPhase is how long one phase took, setup included.
type OvPhase struct {
	Name string  `json:"name"`
	S    float64 `json:"seconds"`
}

// OvCost is what an overlay ADD pays that a cnm-bridge ADD does not, on
// its own: a bigger binary's start, and etcd round trips from the bench
// process to the same member.
type OvCost struct {
	// StartMs: each plugin answering VERSION (median of 20, alternating).
	StartMs     map[string]float64 `json:"process_start_ms"`
	InitMs      map[string]float64 `json:"package_init_ms"`
	InitTop     map[string]string  `json:"package_init_top"`
	BinaryBytes map[string]int64   `json:"binary_bytes"`
	// A new etcd client's connection and first Get; a Get (Range) and a
	// Txn putting one key on a connected client.
	ConnectMs Latency `json:"etcd_connect_first_get_ms"`
	RangeMs   Latency `json:"etcd_range_ms"`
	TxnMs     Latency `json:"etcd_txn_put_ms"`
}

// OvConvergence: from the start of an ADD on host A to the first echo
// reply a container on B gets from the new endpoint, and to the FDB and
// neighbour entries appearing on B's VXLAN device.
type OvConvergence struct {
	Endpoints int     `json:"endpoints"`
	Ping      Latency `json:"ping"`
	FDB       Latency `json:"fdb_entry"`
	Neigh     Latency `json:"neighbour_entry"`
	Entries   Latency `json:"both_entries"`
	Add       Latency `json:"add"`
	// Timeouts are endpoints not reached from B within 5 s.
	Timeouts int `json:"timeouts"`
}

// OvLatency is ADD and DEL of cnm-overlay on A against cnm-bridge on a
// host of its own, pair by pair, the order swapped every pair.
type OvLatency struct {
	Pairs        int        `json:"pairs_per_system"`
	PeersPresent int        `json:"overlay_endpoints_present"`
	Overlay      *SeqSystem `json:"overlay"`
	Bridge       *SeqSystem `json:"bridge"`
}

// OvEtcd counts the gRPC requests one plugin invocation sends to etcd.
type OvEtcd struct {
	Pairs       int                `json:"pairs"`
	PerAdd      Latency            `json:"per_add"` // counts, not ms
	PerDel      Latency            `json:"per_del"`
	AddByMethod map[string]float64 `json:"add_by_method"`
	DelByMethod map[string]float64 `json:"del_by_method"`
	// Add and Del are the invocations through the proxy; AddEtcd and
	// DelEtcd the part of each spent waiting for etcd's answers (seen at
	// the proxy: etcd's work and the hop to it, not the hop to the plugin).
	Add     Latency `json:"add_ms"`
	Del     Latency `json:"del_ms"`
	AddEtcd Latency `json:"add_waiting_for_etcd_ms"`
	DelEtcd Latency `json:"del_waiting_for_etcd_ms"`
}

// OvMove is a persistent endpoint moved between A and B (DEL on one,
// ADD on the other), pinged from C.
type OvMove struct {
	Moves    int     `json:"moves"`
	Blackout Latency `json:"blackout"`
	Del      Latency `json:"del"`
	Add      Latency `json:"add"`
	// AfterAdd is from the end of the ADD to the first reply at the new host.
	AfterAdd Latency `json:"after_add"`
	// Timeouts: moves after which C got no reply within 5 s; WrongVTEP:
	// moves after which C's FDB entry did not point at the new host.
	Timeouts  int `json:"timeouts"`
	WrongVTEP int `json:"wrong_vtep"`
}

// OvKill is A's daemon SIGKILLed and restarted while containers ping to
// and from A's container every 10 ms.
type OvKill struct {
	Rounds     int         `json:"rounds"`
	DownMs     float64     `json:"down_ms"`
	Directions []OvKillDir `json:"directions"`
	Sent       int         `json:"sent"`
	Lost       int         `json:"lost"`
	// Restart is from the daemon's start to its first full reconcile.
	Restart Latency `json:"restart_to_reconcile"`
}

type OvKillDir struct {
	Name string `json:"name"`
	Sent int    `json:"sent"`
	Lost int    `json:"lost"`
}

// OvScale is the daemon of one host started with n endpoints in the
// cluster, on fake hosts, all on one network the host has.
type OvScale struct {
	Endpoints int     `json:"endpoints"`
	WriteS    float64 `json:"write_seconds"`
	// FirstMs is the daemon's first full reconcile (its histogram's sum
	// after one), ProgrammedMs from its start until every entry was in
	// the kernel, SteadyMs a later reconcile with nothing to change.
	FirstMs      float64 `json:"first_reconcile_ms"`
	ProgrammedMs float64 `json:"start_to_programmed_ms"`
	SteadyMs     float64 `json:"steady_reconcile_ms"`
	FDB          int     `json:"fdb_entries"`
	Neigh        int     `json:"neighbour_entries"`
	RSSKiB       int64   `json:"rss_kib"`
	HWMKiB       int64   `json:"hwm_kib"`
	HeapInuse    float64 `json:"go_heap_inuse_bytes"`
	HeapAlloc    float64 `json:"go_heap_alloc_bytes"`
	Goroutines   float64 `json:"goroutines"`
}

func ovDefaults(quick bool) ovOptions {
	o := ovOptions{endpoints: 200, pairs: 100, moves: 50, kills: 5, etcdPairs: 10, levels: []int{1000, 10000},
		fakeHosts: 4, convPingMs: 1, movePingMs: 2, killPingMs: 10, arpMs: 5}
	if quick {
		o.endpoints, o.pairs, o.moves, o.kills, o.etcdPairs, o.levels = 20, 10, 5, 1, 3, []int{100, 1000}
	}
	return o
}

// overlay runs the overlay phases on a world of its own.
func (h *harness) overlay(o ovOptions) (*OverlayResult, error) {
	res := &OverlayResult{Options: map[string]any{
		"endpoints": o.endpoints, "pairs": o.pairs, "moves": o.moves, "kill_rounds": o.kills, "etcd_pairs": o.etcdPairs,
		"scale_levels": o.levels, "fake_hosts": o.fakeHosts, "convergence_ping_ms": o.convPingMs,
		"move_ping_ms": o.movePingMs, "kill_ping_ms": o.killPingMs, "prober_arp_retrans_ms": o.arpMs,
	}}
	phase := func(name string, t time.Time) {
		res.Phases = append(res.Phases, OvPhase{Name: name, S: round3(time.Since(t).Seconds())})
	}
	t := time.Now()
	w, err := h.newOvWorld()
	if err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		host, err := w.addHost(i)
		if err != nil {
			return nil, err
		}
		if err := host.startDaemon(); err != nil {
			return nil, err
		}
	}
	for _, host := range w.hosts {
		if _, err := host.waitReconciled(1, 30*time.Second, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.Hosts = len(w.hosts)
	a, b, c := w.hosts[0], w.hosts[1], w.hosts[2]
	bench := ovNet{name: "ovbench", subnet: "10.210.0.0/16"}
	lists := map[*ovHost]*libcni.NetworkConfigList{}
	for _, host := range w.hosts {
		if lists[host], err = host.list(bench); err != nil {
			return nil, err
		}
	}
	// Probers on B and C; A gets the network by unmeasured pairs.
	probeB, err := w.probe(b, lists[b], "probe-b", [][2]string{{"IP", "10.210.200.2"}}, o.arpMs)
	if err != nil {
		return nil, err
	}
	probeC, err := w.probe(c, lists[c], "probe-c", [][2]string{{"IP", "10.210.200.3"}}, o.arpMs)
	if err != nil {
		return nil, err
	}
	warm, err := newNetNS()
	if err != nil {
		return nil, err
	}
	for i := range 3 {
		id := fmt.Sprintf("ov-warm-%d", i)
		if _, err := a.add(lists[a], id, warm, nil, nil); err != nil {
			return nil, err
		}
		if _, err := a.del(lists[a], id, warm, nil); err != nil {
			return nil, err
		}
	}
	nid, err := w.networkID(bench.name)
	if err != nil {
		return nil, err
	}
	phase("setup", t)
	logf("overlay: etcd, 3 hosts with cnm-overlayd, network %s (%s) in %.1f s", bench.name, nid[:10], time.Since(t).Seconds())

	t = time.Now()
	conv, a0, err := w.convergence(o, a, b, lists[a], probeB, nid, &res.Errors)
	if err != nil {
		return nil, err
	}
	res.Convergence = conv
	phase("convergence", t)
	logf("overlay convergence (%d endpoints): ping p50 %.1f / p99 %.1f ms, entries p50 %.1f / p99 %.1f ms, %d timeouts",
		conv.Endpoints, conv.Ping.P50, conv.Ping.P99, conv.Entries.P50, conv.Entries.P99, conv.Timeouts)

	t = time.Now()
	if res.Latency, err = w.latency(o, a, lists[a], &res.Errors); err != nil {
		return nil, err
	}
	res.Latency.PeersPresent = o.endpoints + 2
	phase("latency", t)
	logf("overlay ADD p50 %.1f ms, DEL p50 %.1f ms; cnm-bridge ADD p50 %.1f ms, DEL p50 %.1f ms",
		res.Latency.Overlay.Add.P50, res.Latency.Overlay.Del.P50, res.Latency.Bridge.Add.P50, res.Latency.Bridge.Del.P50)

	t = time.Now()
	if res.Etcd, err = w.etcdRequests(o, a, bench); err != nil {
		return nil, err
	}
	if res.Cost, err = w.costs(); err != nil {
		return nil, err
	}
	if res.Work, err = w.work(a, lists[a]); err != nil {
		return nil, err
	}
	phase("etcd_requests", t)
	logf("overlay etcd requests: %.0f per ADD, %.0f per DEL; etcd Range p50 %.2f ms, Txn p50 %.2f ms, connect+Get p50 %.2f ms",
		res.Etcd.PerAdd.P50, res.Etcd.PerDel.P50, res.Cost.RangeMs.P50, res.Cost.TxnMs.P50, res.Cost.ConnectMs.P50)

	t = time.Now()
	if res.Kill, err = w.kill(o, a, a0, probeB, probeC); err != nil {
		return nil, err
	}
	phase("daemon_kill", t)
	logf("overlay daemon SIGKILL+restart x%d: %d of %d echo requests lost", res.Kill.Rounds, res.Kill.Lost, res.Kill.Sent)

	t = time.Now()
	if res.Move, err = w.move(o, a, b, c, &res.Errors); err != nil {
		return nil, err
	}
	phase("move", t)
	logf("overlay move (%d): blackout p50 %.1f / p99 %.1f ms", res.Move.Moves, res.Move.Blackout.P50, res.Move.Blackout.P99)

	t = time.Now()
	if res.Scale, err = w.scale(o); err != nil {
		return nil, err
	}
	phase("daemon_scale", t)
	return res, nil
}

// probedContainer is a container with a prober in its namespace.
type probedContainer struct {
	ns ns.NetNS
	ip net.IP
	p  *prober
}

// probe adds a container on h with a prober in it.
func (w *ovWorld) probe(h *ovHost, l *libcni.NetworkConfigList, id string, args [][2]string, arpMs int) (*probedContainer, error) {
	c, err := newNetNS()
	if err != nil {
		return nil, err
	}
	if _, err := h.add(l, id, c, args, nil); err != nil {
		return nil, err
	}
	if err := fastARP(c, arpMs); err != nil {
		return nil, err
	}
	p, err := newProber(c)
	if err != nil {
		return nil, err
	}
	pc := &probedContainer{ns: c, p: p}
	for _, kv := range args {
		if kv[0] == "IP" {
			pc.ip = net.ParseIP(kv[1]).To4()
		}
	}
	return pc, nil
}

// convIP and convMAC are convergence endpoint i's static address and MAC,
// known before its ADD so that B pings it from the ADD's start.
func convIP(i int) net.IP { return net.IPv4(10, 210, byte(100+i/250), byte(1+i%250)).To4() }
func convMAC(i int) string {
	return fmt.Sprintf("02:bc:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

// convergence adds o.endpoints containers on a, one at a time, each
// pinged every o.convPingMs from B's prober from the start of its ADD;
// the endpoints stay. It returns the first one (the kill phase's).
func (w *ovWorld) convergence(o ovOptions, a, b *ovHost, l *libcni.NetworkConfigList, probe *probedContainer, nid string,
	errs *errorLog) (*OvConvergence, *probedContainer, error) {
	idx, err := b.vxlanIndex(nid)
	if err != nil {
		return nil, nil, err
	}
	watch, err := b.watchEntries(idx)
	if err != nil {
		return nil, nil, err
	}
	defer watch.stop()
	res := &OvConvergence{Endpoints: o.endpoints}
	var pings, fdbs, neighs, both, adds []float64
	var first *probedContainer
	interval := time.Duration(o.convPingMs * float64(time.Millisecond))
	for i := range o.endpoints {
		c, err := newNetNS()
		if err != nil {
			return nil, nil, err
		}
		ip, mac := convIP(i), convMAC(i)
		stop := make(chan struct{})
		var t0 time.Time
		var sent <-chan []uint16
		d, err := a.add(l, fmt.Sprintf("ov-conv-%04d", i), c, [][2]string{{"IP", ip.String()}, {"MAC", mac}}, func() {
			t0 = time.Now()
			sent = probe.p.every(ip, interval, stop)
		})
		if err != nil {
			close(stop)
			if sent != nil {
				<-sent
			}
			errs.add(err)
			if errs.Count > 10 {
				return nil, nil, fmt.Errorf("overlay convergence: too many errors")
			}
			continue
		}
		adds = append(adds, ms(d))
		var reply time.Time
		for deadline := t0.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
			if reply = probe.p.firstAfter(ip.String(), t0); !reply.IsZero() {
				break
			}
		}
		close(stop)
		<-sent
		if reply.IsZero() {
			res.Timeouts++
			errs.add(fmt.Errorf("overlay convergence: %s not reached from %s within 5 s", ip, b.name))
			continue
		}
		pings = append(pings, ms(reply.Sub(t0)))
		f, n := watch.seen(mac, ip.String(), time.Second)
		if !f.IsZero() && !n.IsZero() {
			fdbs = append(fdbs, ms(f.Sub(t0)))
			neighs = append(neighs, ms(n.Sub(t0)))
			both = append(both, ms(later(f, n).Sub(t0)))
		}
		if i == 0 {
			first = &probedContainer{ns: c, ip: ip}
		}
		if (i+1)%50 == 0 {
			logf("overlay convergence: %d/%d endpoints", i+1, o.endpoints)
		}
	}
	if first == nil {
		return nil, nil, fmt.Errorf("overlay convergence: no endpoint reached")
	}
	res.Ping, res.FDB, res.Neigh, res.Entries, res.Add = summarise(pings), summarise(fdbs), summarise(neighs), summarise(both), summarise(adds)
	return res, first, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// latency runs o.pairs ADD/DEL pairs of cnm-overlay on a (dynamic
// addresses, the daemons of all hosts running) and of cnm-bridge in a
// host namespace of its own, alternating.
func (w *ovWorld) latency(o ovOptions, a *ovHost, l *libcni.NetworkConfigList, errs *errorLog) (*OvLatency, error) {
	be, err := w.h.newEnv(envSpec{sys: sysCNM, net: "ovcmp-bridge", subnet: "10.93.0.0/24"})
	if err != nil {
		return nil, err
	}
	res := &OvLatency{Pairs: o.pairs, Overlay: &SeqSystem{Label: "cnm-overlay"}, Bridge: &SeqSystem{Label: "cnm-bridge"}}
	cs := make([]ns.NetNS, 2)
	for i := range cs {
		if cs[i], err = newNetNS(); err != nil {
			return nil, err
		}
	}
	type sample struct{ add, del, sum []float64 }
	s := map[string]*sample{"overlay": {}, "bridge": {}}
	const warmup = 3
	for i := range warmup + o.pairs {
		sys := []string{"overlay", "bridge"}
		if i%2 == 1 {
			sys = []string{"bridge", "overlay"}
		}
		for k, name := range sys {
			c := cs[k]
			var da, dd time.Duration
			var err, derr error
			r := res.Overlay
			if name == "overlay" {
				id := fmt.Sprintf("ov-lat-%04d", i)
				da, err = a.add(l, id, c, nil, nil)
				dd, derr = a.del(l, id, c, nil)
			} else {
				r = res.Bridge
				id := fmt.Sprintf("ovcmp-%04d", i)
				da, err = be.add(id, c, 0)
				dd, derr = be.del(id, c, 0)
			}
			r.Errors.add(err)
			r.Errors.add(derr)
			if err != nil || derr != nil {
				if r.Errors.Count > 10 {
					return nil, fmt.Errorf("overlay latency: too many %s errors", r.Label)
				}
				continue
			}
			if i >= warmup {
				s[name].add = append(s[name].add, ms(da))
				s[name].del = append(s[name].del, ms(dd))
				s[name].sum = append(s[name].sum, ms(da+dd))
			}
		}
	}
	for name, r := range map[string]*SeqSystem{"overlay": res.Overlay, "bridge": res.Bridge} {
		r.Add, r.Del, r.AddDel = summarise(s[name].add), summarise(s[name].del), summarise(s[name].sum)
	}
	if left, err := be.leftovers(); err == nil {
		res.Bridge.LeftoverVeths = len(left)
	}
	return res, nil
}

// etcdRequests runs ADD/DEL pairs on a whose etcd endpoint is a counting
// proxy in front of the member's socket.
func (w *ovWorld) etcdRequests(o ovOptions, a *ovHost, n ovNet) (*OvEtcd, error) {
	upstream := strings.TrimPrefix(w.etcd.Endpoints[0], "unix://")
	cnt, err := newEtcdCounter(fmt.Sprintf("%s/count.sock", w.dir), upstream)
	if err != nil {
		return nil, err
	}
	l, err := a.list(n, cnt.URL)
	if err != nil {
		return nil, err
	}
	c, err := newNetNS()
	if err != nil {
		return nil, err
	}
	res := &OvEtcd{Pairs: o.etcdPairs, AddByMethod: map[string]float64{}, DelByMethod: map[string]float64{}}
	var adds, dels, addMs, delMs, addWait, delWait []float64
	sum := func(m map[string]int, into map[string]float64) float64 {
		t := 0
		for k, v := range m {
			t += v
			into[strings.TrimPrefix(k, "/etcdserverpb.")] += float64(v) / float64(o.etcdPairs)
		}
		return float64(t)
	}
	cnt.take()
	for i := range o.etcdPairs {
		id := fmt.Sprintf("ov-etcd-%03d", i)
		d, err := a.add(l, id, c, nil, nil)
		if err != nil {
			return nil, err
		}
		m, waited := cnt.take()
		adds, addMs, addWait = append(adds, sum(m, res.AddByMethod)), append(addMs, ms(d)), append(addWait, ms(waited))
		if d, err = a.del(l, id, c, nil); err != nil {
			return nil, err
		}
		m, waited = cnt.take()
		dels, delMs, delWait = append(dels, sum(m, res.DelByMethod)), append(delMs, ms(d)), append(delWait, ms(waited))
	}
	res.Add, res.Del, res.AddEtcd, res.DelEtcd = summarise(addMs), summarise(delMs), summarise(addWait), summarise(delWait)
	for _, m := range []map[string]float64{res.AddByMethod, res.DelByMethod} {
		for k, v := range m {
			m[k] = round3(v)
		}
	}
	res.PerAdd, res.PerDel = summarise(adds), summarise(dels)
	return res, nil
}

// kill SIGKILLs a's daemon and restarts it, o.kills times, while B's and
// C's probers ping a0 and a0 pings B's prober, every o.killPingMs.
func (w *ovWorld) kill(o ovOptions, a *ovHost, a0, probeB, probeC *probedContainer) (*OvKill, error) {
	pa, err := newProber(a0.ns)
	if err != nil {
		return nil, err
	}
	const down = 500 * time.Millisecond
	res := &OvKill{Rounds: o.kills, DownMs: ms(down)}
	type flow struct {
		name string
		p    *prober
		dst  net.IP
	}
	flows := []flow{
		{"B → A", probeB.p, a0.ip},
		{"C → A", probeC.p, a0.ip},
		{"A → B", pa, probeB.ip},
	}
	dirs := make([]OvKillDir, len(flows))
	interval := time.Duration(o.killPingMs * float64(time.Millisecond))
	var restarts []float64
	for round := range o.kills {
		stop := make(chan struct{})
		sents := make([]<-chan []uint16, len(flows))
		for i, f := range flows {
			sents[i] = f.p.every(f.dst, interval, stop)
		}
		time.Sleep(time.Second)
		if err := a.stopDaemon(syscall.SIGKILL); err != nil {
			close(stop)
			return nil, err
		}
		time.Sleep(down)
		before, err := a.startAndCount()
		if err != nil {
			close(stop)
			return nil, err
		}
		if _, err := a.waitReconciled(1, 30*time.Second, 2*time.Millisecond); err != nil {
			close(stop)
			return nil, err
		}
		restarts = append(restarts, ms(time.Since(before)))
		time.Sleep(time.Second)
		close(stop)
		time.Sleep(time.Second) // late replies
		for i, f := range flows {
			sent := <-sents[i]
			got := f.p.answered(f.dst.String(), sent)
			dirs[i].Name = f.name
			dirs[i].Sent += len(sent)
			dirs[i].Lost += len(sent) - got
		}
		logf("overlay daemon kill round %d/%d done", round+1, o.kills)
	}
	for _, d := range dirs {
		res.Sent += d.Sent
		res.Lost += d.Lost
	}
	res.Directions, res.Restart = dirs, summarise(restarts)
	return res, nil
}

// startAndCount starts h's daemon and returns when it was started.
func (h *ovHost) startAndCount() (time.Time, error) {
	if err := h.startDaemon(); err != nil {
		return time.Time{}, err
	}
	return h.daemon.started, nil
}

// move moves a persistent endpoint (endpointIdentity pod) between a and
// b, o.moves times, pinged from c every o.movePingMs.
func (w *ovWorld) move(o ovOptions, a, b, c *ovHost, errs *errorLog) (*OvMove, error) {
	mv := ovNet{name: "ovmove", subnet: "10.212.0.0/24", more: map[string]any{"endpointIdentity": "pod"}}
	lists := map[*ovHost]*libcni.NetworkConfigList{}
	for _, h := range []*ovHost{a, b, c} {
		l, err := h.list(mv)
		if err != nil {
			return nil, err
		}
		lists[h] = l
	}
	pod := func(name string) [][2]string {
		return [][2]string{{"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name}}
	}
	probe, err := w.probe(c, lists[c], "ov-move-probe", append(pod("probe"), [2]string{"IP", "10.212.0.200"}), o.arpMs)
	if err != nil {
		return nil, err
	}
	sandboxes := map[*ovHost]ns.NetNS{}
	for i, h := range []*ovHost{a, b} {
		if sandboxes[h], err = newNetNS(); err != nil {
			return nil, err
		}
		// The network's first ADD on the host is not part of a move.
		id := fmt.Sprintf("ov-move-warm-%d", i)
		if _, err := h.add(lists[h], id, sandboxes[h], pod("warm"), nil); err != nil {
			return nil, err
		}
		if _, err := h.del(lists[h], id, sandboxes[h], pod("warm")); err != nil {
			return nil, err
		}
	}
	nid, err := w.networkID(mv.name)
	if err != nil {
		return nil, err
	}
	idx, err := c.vxlanIndex(nid)
	if err != nil {
		return nil, err
	}
	const ip = "10.212.0.100"
	args := append(pod("mover"), [2]string{"IP", ip})
	at, id := a, "ov-mover-0000"
	if _, err := a.add(lists[a], id, sandboxes[a], args, nil); err != nil {
		return nil, err
	}
	var mac string
	_ = sandboxes[a].Do(func(ns.NetNS) error {
		l, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = l.HardwareAddr.String()
		}
		return err
	})
	stop := make(chan struct{})
	sent := probe.p.every(net.ParseIP(ip), time.Duration(o.movePingMs*float64(time.Millisecond)), stop)
	defer func() { close(stop); <-sent }()
	if r := waitReply(probe.p, ip, time.Now().Add(-time.Second), 5*time.Second); r.IsZero() {
		return nil, fmt.Errorf("overlay move: %s not reached from %s before the moves", ip, c.name)
	}
	res := &OvMove{Moves: o.moves}
	var blackouts, dels, adds, after []float64
	for k := range o.moves {
		to := b
		if at == b {
			to = a
		}
		time.Sleep(100 * time.Millisecond) // replies before the move
		dd, err := at.del(lists[at], id, sandboxes[at], args)
		if err != nil {
			return nil, err
		}
		newID := fmt.Sprintf("ov-mover-%04d", k+1)
		var tAdd time.Time
		da, err := to.add(lists[to], newID, sandboxes[to], args, func() { tAdd = time.Now() })
		if err != nil {
			return nil, err
		}
		addEnd := tAdd.Add(da)
		at, id = to, newID
		first := waitReply(probe.p, ip, tAdd, 5*time.Second)
		if first.IsZero() {
			res.Timeouts++
			errs.add(fmt.Errorf("overlay move %d: %s not reached at %s within 5 s", k, ip, to.name))
			continue
		}
		last := probe.p.lastBefore(ip, tAdd)
		blackouts = append(blackouts, ms(first.Sub(last)))
		dels = append(dels, ms(dd))
		adds = append(adds, ms(da))
		after = append(after, ms(first.Sub(addEnd)))
		if fdb, _, err := c.fdb(idx); err != nil || fdb[mac] != to.ip.String() {
			res.WrongVTEP++
			errs.add(fmt.Errorf("overlay move %d: %s's FDB entry for %s is %q, want %s (%v)", k, c.name, mac, fdb[mac], to.ip, err))
		}
	}
	res.Blackout, res.Del, res.Add, res.AfterAdd = summarise(blackouts), summarise(dels), summarise(adds), summarise(after)
	return res, nil
}

// waitReply waits up to timeout for a reply from src received after t.
func waitReply(p *prober, src string, t time.Time, timeout time.Duration) time.Time {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		if r := p.firstAfter(src, t); !r.IsZero() {
			return r
		}
	}
	return time.Time{}
}

// scale puts a fourth host with a network of its own (made by a real
// ADD) and, for each level, writes that many peer records of the
// network, spread over fake hosts, into etcd in the records package's
// format, then starts the host's daemon afresh and measures its first
// reconcile, a steady one and its memory.
func (w *ovWorld) scale(o ovOptions) ([]*OvScale, error) {
	h, err := w.addHost(9)
	if err != nil {
		return nil, err
	}
	h.resync = "3s"
	n := ovNet{name: "ovscale", subnet: "10.213.0.0/16"}
	l, err := h.list(n)
	if err != nil {
		return nil, err
	}
	c, err := newNetNS()
	if err != nil {
		return nil, err
	}
	if _, err := h.add(l, "ov-scale-0", c, nil, nil); err != nil {
		return nil, err
	}
	nid, err := w.networkID(n.name)
	if err != nil {
		return nil, err
	}
	idx, err := h.vxlanIndex(nid)
	if err != nil {
		return nil, err
	}
	cli, err := w.etcd.Client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var out []*OvScale
	have := 0
	for _, level := range o.levels {
		r := &OvScale{Endpoints: level}
		t := time.Now()
		if err := writePeers(cli, nid, have, level, o.fakeHosts); err != nil {
			return nil, err
		}
		r.WriteS = round3(time.Since(t).Seconds())
		have = level
		if err := h.stopDaemon(syscall.SIGTERM); err != nil {
			return nil, err
		}
		if err := h.startDaemon(); err != nil {
			return nil, err
		}
		// The first reconcile programs every entry before it ends; the
		// kernel's tables are counted after it, not polled (a dump of
		// 20,000 entries every few ms would slow the daemon down).
		// Polled every 10 ms: each scrape reads the Go runtime's memory
		// statistics, which stops the daemon's world for a moment.
		m, err := h.waitReconciled(1, 120*time.Second, 10*time.Millisecond)
		if err != nil {
			return nil, err
		}
		r.ProgrammedMs = round3(ms(time.Since(h.daemon.started)))
		r.FirstMs = round3(m["cnm_overlayd_reconcile_duration_seconds_sum"] * 1000)
		// A resync later: a reconcile with nothing to change.
		m2, err := h.waitReconciled(2, 60*time.Second, 10*time.Millisecond)
		if err != nil {
			return nil, err
		}
		r.SteadyMs = round3((m2["cnm_overlayd_reconcile_duration_seconds_sum"] - m["cnm_overlayd_reconcile_duration_seconds_sum"]) * 1000)
		r.HeapInuse, r.HeapAlloc, r.Goroutines = m2["go_memstats_heap_inuse_bytes"], m2["go_memstats_heap_alloc_bytes"], m2["go_goroutines"]
		r.RSSKiB, r.HWMKiB = procStatus(h.daemon.cmd.Process.Pid)
		fdb, neigh, err := h.fdb(idx)
		if err != nil {
			return nil, err
		}
		r.FDB, r.Neigh = len(fdb), neigh
		out = append(out, r)
		logf("overlay daemon with %d endpoints: first reconcile %.0f ms, programmed %.0f ms after start, steady reconcile %.0f ms, RSS %d KiB, heap %.1f MiB; %d FDB, %d neighbour entries",
			level, r.FirstMs, r.ProgrammedMs, r.SteadyMs, r.RSSKiB, r.HeapInuse/(1<<20), r.FDB, r.Neigh)
	}
	return out, nil
}

// writePeers writes peer records have..want of network nid, as Join
// writes them (records.Peer under the driver's peers/ prefix), on
// fakeHosts hosts that never registered (so never taken for gone), 100
// to a transaction.
func writePeers(cli *clientv3.Client, nid string, have, want, fakeHosts int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for k := have; k < want; k++ {
		host := k % fakeHosts
		eid := fmt.Sprintf("%064x", 0xbe0000000+k)
		p := records.Peer{Network: nid, Endpoint: eid, Host: fmt.Sprintf("fake-%d", host),
			VTEP: fmt.Sprintf("192.168.77.%d", 200+host), MAC: fmt.Sprintf("02:5c:00:%02x:%02x:%02x", k>>16&0xff, k>>8&0xff, k&0xff),
			IPs: []string{net.IPv4(10, 213, byte(1+k/250), byte(1+k%250)).String()}}
		v, err := json.Marshal(p)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(ovPrefix+"/data/"+records.StorePrefix+records.PeerKey(nid, eid), string(v)))
		if len(ops) == 100 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// ovTargets are the overlay's goals (issue 14) judged on this run.
func ovTargets(o *OverlayResult) []Target {
	if o == nil {
		return nil
	}
	var out []Target
	if c := o.Convergence; c != nil {
		out = append(out, Target{Name: "overlay convergence p99, start of ADD on A to first echo reply on B", Goal: "≤ 100 ms",
			Value: c.Ping.P99, Shown: fmt.Sprintf("%.1f ms (%d timeouts)", c.Ping.P99, c.Timeouts),
			Met: c.Ping.N > 0 && c.Ping.P99 <= 100 && c.Timeouts == 0})
	}
	if m := o.Move; m != nil {
		out = append(out, Target{Name: "overlay move blackout p99, seen from C", Goal: "≤ 200 ms", Value: m.Blackout.P99,
			Shown: fmt.Sprintf("%.1f ms", m.Blackout.P99), Met: m.Blackout.N > 0 && m.Blackout.P99 <= 200 && m.Timeouts == 0})
	}
	if k := o.Kill; k != nil {
		out = append(out, Target{Name: "cnm-overlayd SIGKILLed and restarted: echo requests lost to and from the host's container", Goal: "0",
			Value: float64(k.Lost), Shown: fmt.Sprintf("%d of %d", k.Lost, k.Sent), Met: k.Sent > 0 && k.Lost == 0})
	}
	if l := o.Latency; l != nil {
		r := ratio(l.Overlay.Add.P50, l.Bridge.Add.P50)
		out = append(out, Target{Name: "overlay ADD p50 / cnm-bridge ADD p50", Goal: "≤ 1.5×", Value: r,
			Shown: fmt.Sprintf("%.2f× (%.1f / %.1f ms)", r, l.Overlay.Add.P50, l.Bridge.Add.P50), Met: r > 0 && r <= 1.5})
	}
	return out
}

// ovMarkdown renders the overlay section.
func ovMarkdown(o *OverlayResult) string {
	if o == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Overlay: cnm-overlay and cnm-overlayd on %d hosts (namespaces on an underlay bridge), one etcd member\n\n", o.Hosts)
	if c := o.Convergence; c != nil {
		fmt.Fprintf(&b, "Convergence over %d endpoints added on A one at a time (ms from the start of the ADD; B pings every %v ms; %d timeouts):\n\n",
			c.Endpoints, o.Options["convergence_ping_ms"], c.Timeouts)
		row(&b, "", "p50", "p90", "p99", "max")
		row(&b, "---", "---:", "---:", "---:", "---:")
		for _, x := range []struct {
			name string
			l    Latency
		}{{"first echo reply on B", c.Ping}, {"FDB entry on B", c.FDB}, {"neighbour entry on B", c.Neigh},
			{"both entries on B", c.Entries}, {"the ADD itself", c.Add}} {
			row(&b, x.name, f1(x.l.P50), f1(x.l.P90), f1(x.l.P99), f1(x.l.Max))
		}
	}
	if l := o.Latency; l != nil {
		fmt.Fprintf(&b, "\nADD and DEL, cnm-overlay on A (%d overlay endpoints present, 3 daemons running) against cnm-bridge, %d pairs each, alternating (ms):\n\n",
			l.PeersPresent, l.Pairs)
		row(&b, "", "cnm-overlay", "cnm-bridge", "ratio")
		row(&b, "---", "---:", "---:", "---:")
		for _, x := range []struct {
			name string
			o, r Latency
		}{{"ADD", l.Overlay.Add, l.Bridge.Add}, {"DEL", l.Overlay.Del, l.Bridge.Del}, {"ADD+DEL", l.Overlay.AddDel, l.Bridge.AddDel}} {
			row(&b, x.name+" p50", f1(x.o.P50), f1(x.r.P50), ratioCell(x.o.P50, x.r.P50))
			row(&b, x.name+" p90", f1(x.o.P90), f1(x.r.P90), ratioCell(x.o.P90, x.r.P90))
			row(&b, x.name+" p99", f1(x.o.P99), f1(x.r.P99), ratioCell(x.o.P99, x.r.P99))
		}
		row(&b, "errors", fmt.Sprint(l.Overlay.Errors.Count), fmt.Sprint(l.Bridge.Errors.Count), "")
	}
	if e := o.Etcd; e != nil {
		fmt.Fprintf(&b, "\netcd requests of one plugin invocation (gRPC calls counted by a proxy on its etcd socket, %d pairs): ADD %s (min %.0f, max %.0f: %s), DEL %s (min %.0f, max %.0f: %s). "+
			"Through the proxy (medians), an ADD took %.1f ms, %.1f of them waiting for etcd's answers; a DEL %.1f ms, %.1f of them waiting for etcd.\n",
			e.Pairs, f1(e.PerAdd.Mean), e.PerAdd.Min, e.PerAdd.Max, byName(e.AddByMethod, "%.1f"),
			f1(e.PerDel.Mean), e.PerDel.Min, e.PerDel.Max, byName(e.DelByMethod, "%.1f"),
			e.Add.P50, e.AddEtcd.P50, e.Del.P50, e.DelEtcd.P50)
	}
	if m := o.Move; m != nil {
		fmt.Fprintf(&b, "\nA persistent endpoint (`endpointIdentity: pod`) moved %d times between A and B (DEL on one, ADD on the other), pinged from C every %v ms (ms; %d timeouts, %d with C's FDB entry not at the new host):\n\n",
			m.Moves, o.Options["move_ping_ms"], m.Timeouts, m.WrongVTEP)
		row(&b, "", "p50", "p90", "p99", "max")
		row(&b, "---", "---:", "---:", "---:", "---:")
		for _, x := range []struct {
			name string
			l    Latency
		}{{"blackout: last reply at the old host to first at the new", m.Blackout}, {"DEL on the old host", m.Del},
			{"ADD on the new host", m.Add}, {"end of ADD to first reply", m.AfterAdd}} {
			row(&b, x.name, f1(x.l.P50), f1(x.l.P90), f1(x.l.P99), f1(x.l.Max))
		}
	}
	if c := o.Cost; c != nil {
		fmt.Fprintf(&b, "\nWhat an overlay ADD pays besides: process start (VERSION, median of 20) %s; package initialisation %s (largest, cnm-overlay: %s); binary sizes %s bytes; "+
			"etcd from the bench process on the same socket, p50: a new client's connection and first Get %.2f ms, a Get %.2f ms, a Txn putting one key %.2f ms.\n",
			byName(c.StartMs, "%.2f ms"), byName(c.InitMs, "%.2f ms"), c.InitTop["cnm-overlay"], byNameInt64(c.BinaryBytes),
			c.ConnectMs.P50, c.RangeMs.P50, c.TxnMs.P50)
	}
	if x := o.Work; x != nil {
		fmt.Fprintf(&b, "\nOne overlay ADD under strace -f — processes: %s; netlink sends by process: %s. One DEL — processes: %s; netlink sends: %s.\n",
			byNameInt(x.AddProcs), byNameInt(x.AddNetlink), byNameInt(x.DelProcs), byNameInt(x.DelNetlink))
	}
	if k := o.Kill; k != nil {
		var dirs []string
		for _, d := range k.Directions {
			dirs = append(dirs, fmt.Sprintf("%s %d of %d", d.Name, d.Lost, d.Sent))
		}
		fmt.Fprintf(&b, "\ncnm-overlayd on A SIGKILLed, down %.0f ms and restarted, %d times, echo requests every %v ms throughout: %d of %d lost (%s). "+
			"Restart to its first full reconcile: p50 %.1f ms, max %.1f ms.\n",
			k.DownMs, k.Rounds, o.Options["kill_ping_ms"], k.Lost, k.Sent, strings.Join(dirs, ", "), k.Restart.P50, k.Restart.Max)
	}
	if len(o.Scale) > 0 {
		fmt.Fprintf(&b, "\ncnm-overlayd of one host started with N endpoints of its network in the cluster (peer records written to etcd, on %v fake hosts):\n\n", o.Options["fake_hosts"])
		row(&b, "endpoints", "first reconcile (ms)", "start to first reconcile done (ms)", "steady reconcile (ms)", "RSS (KiB)", "peak RSS (KiB)", "Go heap in use (KiB)", "FDB / neighbour entries")
		row(&b, "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
		for _, s := range o.Scale {
			row(&b, fmt.Sprint(s.Endpoints), f1(s.FirstMs), f1(s.ProgrammedMs), f1(s.SteadyMs), fmt.Sprint(s.RSSKiB), fmt.Sprint(s.HWMKiB),
				fmt.Sprintf("%.0f", s.HeapInuse/1024), fmt.Sprintf("%d / %d", s.FDB, s.Neigh))
		}
	}
	if o.Errors.Count > 0 {
		fmt.Fprintf(&b, "\nOverlay errors: %d (%s).\n", o.Errors.Count, strings.Join(o.Errors.Messages, "; "))
	}
	var ph []string
	for _, p := range o.Phases {
		ph = append(ph, fmt.Sprintf("%s %.1f s", p.Name, p.S))
	}
	fmt.Fprintf(&b, "\nOverlay phases: %s.\n", strings.Join(ph, ", "))
	return b.String()
}

// costs measures what an overlay ADD pays besides a bridge one's work.
func (w *ovWorld) costs() (*OvCost, error) {
	c := &OvCost{StartMs: map[string]float64{}, InitMs: map[string]float64{}, InitTop: map[string]string{}, BinaryBytes: map[string]int64{}}
	bins := map[string]string{"cnm-overlay": filepath.Join(w.h.cnmBin, "cnm-overlay"), "cnm-bridge": filepath.Join(w.h.cnmBin, "cnm-bridge")}
	walls := map[string][]float64{}
	for i := range 20 {
		order := []string{"cnm-overlay", "cnm-bridge"}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, name := range order {
			cmd := exec.Command(bins[name])
			cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
			t := time.Now()
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("%s VERSION: %w", name, err)
			}
			walls[name] = append(walls[name], ms(time.Since(t)))
		}
	}
	for name, bin := range bins {
		c.StartMs[name] = median(walls[name])
		total, top, err := initTrace(bin, 5)
		if err != nil {
			return nil, err
		}
		c.InitMs[name], c.InitTop[name] = total, top
		if st, err := os.Stat(bin); err == nil {
			c.BinaryBytes[name] = st.Size()
		}
	}

	cfg, err := w.etcd.ClientConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A key outside the bench's prefix: no daemon watches it.
	const key = "/cnmbench-rtt/k"
	var connects, ranges, txns []float64
	for range 20 {
		t := time.Now()
		cli, err := clientv3.New(cfg)
		if err != nil {
			return nil, err
		}
		_, err = cli.Get(ctx, key)
		connects = append(connects, ms(time.Since(t)))
		cli.Close()
		if err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	for i := range 200 {
		t := time.Now()
		if _, err := cli.Get(ctx, key); err != nil {
			return nil, err
		}
		ranges = append(ranges, ms(time.Since(t)))
		if i%2 == 0 {
			t = time.Now()
			if _, err := cli.Txn(ctx).Then(clientv3.OpPut(key, fmt.Sprint(i))).Commit(); err != nil {
				return nil, err
			}
			txns = append(txns, ms(time.Since(t)))
		}
	}
	c.ConnectMs, c.RangeMs, c.TxnMs = summarise(connects), summarise(ranges), summarise(txns)
	return c, nil
}

// work runs one ADD and one DEL on a with the plugin under strace.
func (w *ovWorld) work(a *ovHost, l *libcni.NetworkConfigList) (*OvWork, error) {
	x := &measureExec{strace: filepath.Join(w.dir, "strace-ov")}
	traced := &ovHost{}
	*traced = *a
	traced.cni = libcni.NewCNIConfigWithCacheDir([]string{w.h.cnmBin}, filepath.Join(a.dir, "cache"), x)
	c, err := newNetNS()
	if err != nil {
		return nil, err
	}
	res := &OvWork{}
	if _, err := traced.add(l, "ov-strace", c, nil, nil); err != nil {
		return nil, err
	}
	// The traces are read before the next invocation: measureExec names
	// them by the calls since its last take.
	add := x.take()
	if res.AddNetlink, err = netlinkSends(add); err != nil {
		return nil, err
	}
	if res.AddProcs, err = execs(add); err != nil {
		return nil, err
	}
	if _, err := traced.del(l, "ov-strace", c, nil); err != nil {
		return nil, err
	}
	del := x.take()
	if res.DelNetlink, err = netlinkSends(del); err != nil {
		return nil, err
	}
	if res.DelProcs, err = execs(del); err != nil {
		return nil, err
	}
	return res, nil
}

// execs counts the successful execve calls of traced invocations by
// executable.
func execs(invs []invocation) (map[string]int, error) {
	out := map[string]int{}
	for _, inv := range invs {
		b, err := os.ReadFile(inv.Trace)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := straceLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if em := straceExecve.FindStringSubmatch(m[2]); em != nil && !strings.Contains(m[2], "= -1") {
				out[filepath.Base(em[1])]++
			}
		}
	}
	return out, nil
}
