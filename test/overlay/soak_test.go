package overlay_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// soak scales the chaos spec: `make soak` sets CNM_SOAK to a factor
// (default 1, as in `make test`).
func soak() int {
	if n, err := strconv.Atoi(os.Getenv("CNM_SOAK")); err == nil && n > 1 {
		return n
	}
	return 1
}

// chaosSeed is CNM_CHAOS_SEED, else a new one.
func chaosSeed() uint64 {
	if s, err := strconv.ParseUint(os.Getenv("CNM_CHAOS_SEED"), 10, 64); err == nil {
		return s
	}
	return uint64(time.Now().UnixNano())
}

// chaosPod is a persistent endpoint (endpointIdentity pod) that moves
// from host to host; its mutex is held across each of its operations.
type chaosPod struct {
	mu   sync.Mutex
	name string
	on   *container // joined there, or nil
	ip   net.IP     // what its first ADD gave it
	mac  string
}

func (p *chaosPod) args() string { return "K8S_POD_NAMESPACE=chaos;K8S_POD_NAME=" + p.name }

// chaos is the state of the chaos spec: its world, its daemons, and
// what the test expects the store to hold.
type chaos struct {
	w       *world
	daemons []*daemon
	plain   network
	pods    network
	podList []*chaosPod
	live    [][]*container // each host's plain containers, touched by that host's goroutine only

	nsMu   sync.Mutex
	nsPool []ns.NetNS // container namespaces no container uses now

	ids    atomic.Int64
	counts sync.Map // op name → *atomic.Int64
}

func (ch *chaos) count(op string) {
	v, _ := ch.counts.LoadOrStore(op, &atomic.Int64{})
	v.(*atomic.Int64).Add(1)
}

// newContainer is a container on h in a namespace from the pool.
func (ch *chaos) newContainer(h *host, id string) *container {
	ch.nsMu.Lock()
	defer ch.nsMu.Unlock()
	if n := len(ch.nsPool); n > 0 {
		c := &container{id: id, ns: ch.nsPool[n-1], host: h}
		ch.nsPool = ch.nsPool[:n-1]
		return c
	}
	c := &container{id: id, ns: testns.New(), host: h}
	in(c.ns, upLoopback)
	return c
}

// release gives a container's namespace, empty after its DEL, back.
func (ch *chaos) release(c *container) {
	GinkgoHelper()
	Expect(linksOf(c)).To(ConsistOf("lo"), "DEL of %s left its namespace empty", c.id)
	ch.nsMu.Lock()
	defer ch.nsMu.Unlock()
	ch.nsPool = append(ch.nsPool, c.ns)
}

func (ch *chaos) nextID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, ch.ids.Add(1))
}

// step runs one random operation on host i.
func (ch *chaos) step(i int, r *rand.Rand) {
	GinkgoHelper()
	h, d := ch.w.hosts[i], ch.daemons[i]
	x := r.IntN(100)
	switch {
	case x < 6 && d.running():
		ch.count("daemon kill")
		d.kill()
		return
	case x < 12 && !d.running():
		ch.count("daemon restart")
		d.startNoWait()
		return
	case x < 40:
		if ch.movePod(h, ch.podList[r.IntN(len(ch.podList))]) {
			return
		}
	}
	if len(ch.live[i]) == 0 || (x < 72 && len(ch.live[i]) < 6) {
		ch.count("ADD")
		c := ch.newContainer(h, ch.nextID(h.name))
		Expect(c.tryAdd(ch.plain, "")).To(Succeed(), "ADD %s on %s", c.id, h.name)
		ch.live[i] = append(ch.live[i], c)
		return
	}
	ch.count("DEL")
	k := r.IntN(len(ch.live[i]))
	c := ch.live[i][k]
	ch.live[i] = append(ch.live[i][:k], ch.live[i][k+1:]...)
	Expect(c.del(ch.plain, "")).To(Succeed(), "DEL %s on %s", c.id, h.name)
	ch.release(c)
}

// movePod brings p to h: DEL where it is joined (on h: it leaves), ADD
// on h, keeping its address and MAC. False when another host's
// goroutine is busy with it.
func (ch *chaos) movePod(h *host, p *chaosPod) bool {
	GinkgoHelper()
	if !p.mu.TryLock() {
		return false
	}
	defer p.mu.Unlock()
	if p.on != nil {
		from := p.on
		Expect(from.del(ch.pods, p.args())).To(Succeed(), "DEL of pod %s on %s", p.name, from.host.name)
		ch.release(from)
		p.on = nil
		if from.host == h {
			ch.count("pod DEL")
			return true
		}
		ch.count("pod move")
	} else {
		ch.count("pod ADD")
	}
	c := ch.newContainer(h, ch.nextID(p.name))
	Expect(c.tryAdd(ch.pods, p.args())).To(Succeed(), "ADD of pod %s on %s", p.name, h.name)
	if p.ip == nil {
		p.ip, p.mac = c.ip, c.mac
	}
	Expect(c.ip).To(Equal(p.ip), "pod %s keeps its address", p.name)
	Expect(c.mac).To(Equal(p.mac), "pod %s keeps its MAC", p.name)
	p.on = c
	return true
}

// joined are the containers the test has joined, by MAC.
func (ch *chaos) joined() map[string]*container {
	out := map[string]*container{}
	for _, cs := range ch.live {
		for _, c := range cs {
			out[c.mac] = c
		}
	}
	for _, p := range ch.podList {
		if p.on != nil {
			out[p.on.mac] = p.on
		}
	}
	return out
}

// checkpoint restarts the daemons that are down, waits until every host
// forwards to exactly the others' endpoints, checks that the store
// holds a peer record for each joined container, where it runs, and
// nothing else, and pings across hosts between a few of them.
func (ch *chaos) checkpoint(r *rand.Rand) {
	GinkgoHelper()
	for _, d := range ch.daemons {
		if !d.running() {
			d.startNoWait()
		}
	}
	t := time.Now()
	ch.w.expectConverged(30 * time.Second)
	fmt.Fprintf(GinkgoWriter, "converged %v after the daemons' restart\n", time.Since(t).Round(time.Millisecond))

	want := map[string]string{}
	for mac, c := range ch.joined() {
		want[mac] = c.host.name + " " + c.host.ip.String() + " " + c.ip.String()
	}
	got := map[string]string{}
	for _, peers := range ch.w.peers() {
		for _, p := range peers {
			Expect(got).NotTo(HaveKey(p.MAC), "one peer record per MAC")
			got[p.MAC] = p.Host + " " + p.VTEP + " " + fmt.Sprint(p.IPs[0])
		}
	}
	Expect(got).To(Equal(want), "a peer record for each joined endpoint, naming its host")

	// Within each network: they are isolated from each other.
	var plain, pods []*container
	for _, cs := range ch.live {
		plain = append(plain, cs...)
	}
	for _, p := range ch.podList {
		if p.on != nil {
			pods = append(pods, p.on)
		}
	}
	for _, cs := range [][]*container{plain, pods} {
		if len(cs) == 0 {
			continue
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].mac < cs[j].mac })
		for range 4 {
			a, b := cs[r.IntN(len(cs))], cs[r.IntN(len(cs))]
			if a.host != b.host {
				Expect(a.ping(b.ip, 0)).To(Succeed(), "%s on %s to %s on %s", a.id, a.host.name, b.id, b.host.name)
			}
		}
	}
}

var _ = Describe("cnm-overlay with the real cnm-overlayd, chaos across three hosts", func() {
	It("keeps every host's forwarding entries exactly the other hosts' endpoints through random ADDs, DELs, moves and daemon kills", func() {
		seed := chaosSeed()
		ops := 1000 * soak()
		msg := fmt.Sprintf("chaos seed %d (CNM_CHAOS_SEED=%d to run it again; the hosts' goroutines interleave as they will), %d operations", seed, seed, ops)
		By(msg)
		AddReportEntry("chaos", msg)
		fmt.Fprintln(GinkgoWriter, msg)

		w := newWorld(3)
		ch := &chaos{w: w, daemons: w.startDaemons(), live: make([][]*container, 3),
			plain: network{name: "chaos", subnet: "10.230.0.0/24"},
			pods:  network{name: "chaos-pods", subnet: "10.231.0.0/24", more: map[string]any{"endpointIdentity": "pod"}}}
		for i := range 6 {
			ch.podList = append(ch.podList, &chaosPod{name: fmt.Sprintf("pod-%d", i)})
		}
		r := rand.New(rand.NewPCG(seed, 0))
		start := time.Now()
		var done atomic.Int64
		const checkpoints = 4
		for phase := 1; phase <= checkpoints; phase++ {
			end := int64(ops * phase / checkpoints)
			var wg sync.WaitGroup
			var failed atomic.Bool
			for i := range w.hosts {
				hr := rand.New(rand.NewPCG(seed, uint64(phase*len(w.hosts)+i+1)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer GinkgoRecover()
					defer func() {
						if e := recover(); e != nil {
							failed.Store(true)
							panic(e)
						}
					}()
					for !failed.Load() && done.Add(1) <= end {
						ch.step(i, hr)
					}
				}()
			}
			wg.Wait()
			if failed.Load() {
				Fail("an operation failed: " + msg)
			}
			done.Store(end)
			By(fmt.Sprintf("checkpoint %d after %d operations, %v", phase, end, time.Since(start).Round(time.Millisecond)))
			ch.checkpoint(r)
		}
		var counts []string
		ch.counts.Range(func(k, v any) bool {
			counts = append(counts, fmt.Sprintf("%s: %d", k, v.(*atomic.Int64).Load()))
			return true
		})
		sort.Strings(counts)
		AddReportEntry("chaos operations", fmt.Sprint(counts))
		fmt.Fprintln(GinkgoWriter, counts)

		By("everything deleted: no peer record, no forwarding entry left")
		for i, cs := range ch.live {
			for _, c := range cs {
				Expect(c.del(ch.plain, "")).To(Succeed())
			}
			ch.live[i] = nil
		}
		for _, p := range ch.podList {
			if p.on != nil {
				Expect(p.on.del(ch.pods, p.args())).To(Succeed())
				p.on = nil
			}
		}
		Expect(w.peers()).To(BeEmpty())
		w.expectConverged(30 * time.Second)
	})
})
