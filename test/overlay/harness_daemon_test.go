package overlay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/test/syncbuf"
	"github.com/cnmnet/cnmnet/test/testns"
)

// What the specs of the real daemon share: cnm-overlayd started as a
// child process in a host's namespace, SIGKILLed, SIGTERMed and started
// again; a pinger that counts lost replies; and the invariant that a
// host forwards to exactly the endpoints joined on the other hosts.

// testBinary is $CNM_BIN_DIR/<name> when that exists (make build puts
// every binary there), else one built for the spec from cmd/<name>.
func testBinary(name string) string {
	GinkgoHelper()
	if dir := os.Getenv("CNM_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(GinkgoT().TempDir(), name)
	out, err := exec.Command("go", "build", "-o", p, "github.com/cnmnet/cnmnet/cmd/"+name).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	return p
}

// metricsAddress is where each host's daemon serves /healthz, on the
// host namespace's own loopback.
const metricsAddress = "127.0.0.1:9725"

// daemon is cnm-overlayd running (or not) on a host.
type daemon struct {
	h    *host
	bin  string
	args []string
	logs *syncbuf.Buffer

	mu     sync.Mutex
	proc   *os.Process
	exited chan error // the running process's exit, nil when none runs
}

// startDaemon runs cnm-overlayd in h's namespace, with flags added to
// (or overriding) the usual ones, and waits until its first reconcile
// is done (/healthz answers 200). It is SIGKILLed when the spec ends.
func (h *host) startDaemon(flags ...string) *daemon {
	GinkgoHelper()
	d := &daemon{h: h, bin: testBinary("cnm-overlayd"), logs: &syncbuf.Buffer{}}
	d.args = append([]string{"--etcd-endpoints", strings.Join(h.w.etcd.Endpoints, ","), "--etcd-prefix", prefix,
		"--etcd-timeout", "2s", "--host", h.name, "--underlay-address", h.ip.String(),
		"--metrics-address", metricsAddress, "--lease-ttl", "30s", "--resync-interval", "2s"}, flags...)
	DeferCleanup(func() {
		d.kill()
		if CurrentSpecReport().Failed() {
			fmt.Fprintf(GinkgoWriter, "cnm-overlayd on %s:\n%s", h.name, d.logs.String())
		}
	})
	d.start()
	return d
}

// startDaemons starts a daemon on every host of w, with flags.
func (w *world) startDaemons(flags ...string) []*daemon {
	GinkgoHelper()
	var ds []*daemon
	for _, h := range w.hosts {
		ds = append(ds, h.startDaemon(flags...))
	}
	return ds
}

// start runs the daemon again (or the first time) and waits for it to
// be healthy.
func (d *daemon) start() {
	GinkgoHelper()
	d.startNoWait()
	d.waitHealthy()
}

// startNoWait runs the daemon and returns at once.
func (d *daemon) startNoWait() {
	GinkgoHelper()
	d.mu.Lock()
	defer d.mu.Unlock()
	Expect(d.exited).To(BeNil(), "cnm-overlayd already runs on %s", d.h.name)
	cmd := exec.Command(d.bin, d.args...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	// Dies with the test process. Pdeathsig fires when the thread that
	// forked the child ends: fork from a thread that stays, in the
	// host's namespace, until the child exits, and then goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := d.h.ns.Set(); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	Expect(<-started).To(Succeed())
	d.proc, d.exited = cmd.Process, exited
}

// signal sends sig to the running daemon and waits for it to exit,
// returning how it exited; a daemon not running returns nil at once.
func (d *daemon) signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exited == nil {
		return nil
	}
	_ = d.proc.Signal(sig)
	var err error
	select {
	case err = <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.proc.Kill()
		err = fmt.Errorf("cnm-overlayd on %s still runs 10s after %v: %w", d.h.name, sig, <-d.exited)
	}
	d.proc, d.exited = nil, nil
	return err
}

// kill SIGKILLs the daemon, as a crash would.
func (d *daemon) kill() { _ = d.signal(syscall.SIGKILL) }

// term stops the daemon with SIGTERM, as systemd does; it exits 0.
func (d *daemon) term() {
	GinkgoHelper()
	Expect(d.signal(syscall.SIGTERM)).To(Succeed(), "cnm-overlayd on %s exits 0 on SIGTERM", d.h.name)
}

func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exited != nil
}

// waitHealthy waits until the daemon's /healthz answers 200: its last
// full reconcile succeeded.
func (d *daemon) waitHealthy() {
	GinkgoHelper()
	Eventually(func() (string, error) {
		code, body, err := d.h.get(metricsAddress, "/healthz")
		return fmt.Sprint(code, " ", body), err
	}, 20*time.Second, 50*time.Millisecond).Should(HavePrefix("200"), "cnm-overlayd on %s healthy", d.h.name)
}

// get fetches path from a server listening at addr in h's namespace.
func (h *host) get(addr, path string) (int, string, error) {
	return testns.Get(h.ns, "http://"+addr+path)
}

// pingInterval is the continuous pinger's period.
const pingInterval = 10 * time.Millisecond

var pingerIDs atomic.Uint32

// pinger sends an ICMP echo request from a container to an address
// every pingInterval and counts the replies, by sequence number.
type pinger struct {
	from string
	to   net.IP
	id   uint16
	conn net.PacketConn

	stopSend chan struct{}
	sendDone chan struct{}
	recvDone chan struct{}

	mu      sync.Mutex
	sent    int
	replied map[uint16]bool
	errs    []string // send errors, first few
}

// startPinger pings to from c until stop, or the spec's end.
func startPinger(c *container, to net.IP) *pinger {
	GinkgoHelper()
	p := &pinger{from: c.id, to: to, id: uint16(os.Getpid()) ^ uint16(pingerIDs.Add(1)), replied: map[uint16]bool{},
		stopSend: make(chan struct{}), sendDone: make(chan struct{}), recvDone: make(chan struct{})}
	// A raw ICMP socket belongs to the namespace it is opened in.
	in(c.ns, func() error {
		var err error
		p.conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	go p.receive()
	go p.send()
	DeferCleanup(func() { p.stop() })
	return p
}

func (p *pinger) send() {
	defer close(p.sendDone)
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for seq := uint16(0); ; seq++ {
		_, err := p.conn.WriteTo(echoRequest(p.id, seq), &net.IPAddr{IP: p.to})
		p.mu.Lock()
		p.sent++
		if err != nil && len(p.errs) < 5 {
			p.errs = append(p.errs, fmt.Sprintf("seq %d: %v", seq, err))
		}
		p.mu.Unlock()
		select {
		case <-p.stopSend:
			return
		case <-t.C:
		}
	}
}

func (p *pinger) receive() {
	defer close(p.recvDone)
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed by stop
		}
		// An echo reply (type 0) to this pinger, from its destination.
		if n < 8 || buf[0] != 0 || binary.BigEndian.Uint16(buf[4:]) != p.id || !from.(*net.IPAddr).IP.Equal(p.to) {
			continue
		}
		p.mu.Lock()
		p.replied[binary.BigEndian.Uint16(buf[6:])] = true
		p.mu.Unlock()
	}
}

// echoRequest is an ICMP echo request with 8 bytes of payload.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request, code 0
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	sum = (sum >> 16) + (sum & 0xffff)
	sum += sum >> 16
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}

// pingStats is what a pinger saw.
type pingStats struct {
	what       string
	sent, lost int
	lostSeqs   []int // the first few
	errs       []string
}

func (s pingStats) String() string {
	return fmt.Sprintf("%s: %d sent, %d lost %v %v", s.what, s.sent, s.lost, s.lostSeqs, s.errs)
}

// stop stops sending, waits a second for the last replies and reports;
// stopping again reports the same.
func (p *pinger) stop() pingStats {
	select {
	case <-p.stopSend:
	default:
		close(p.stopSend)
		<-p.sendDone
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) && p.stats().lost > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		_ = p.conn.Close()
		<-p.recvDone
	}
	return p.stats()
}

func (p *pinger) stats() pingStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := pingStats{what: fmt.Sprintf("%s -> %s", p.from, p.to), sent: p.sent, errs: p.errs}
	for seq := 0; seq < p.sent; seq++ {
		if !p.replied[uint16(seq)] {
			s.lost++
			if len(s.lostSeqs) < 10 {
				s.lostSeqs = append(s.lostSeqs, seq)
			}
		}
	}
	return s
}

// pingMesh pings between every two of cs, both ways, once each to make
// sure they can (and to fill their ARP caches), then continuously.
func pingMesh(cs ...*container) []*pinger {
	GinkgoHelper()
	var ps []*pinger
	for _, a := range cs {
		for _, b := range cs {
			if a == b {
				continue
			}
			Expect(a.ping(b.ip, 0)).To(Succeed())
			ps = append(ps, startPinger(a, b.ip))
		}
	}
	return ps
}

// expectNoLoss stops ps and expects that every request was answered.
func expectNoLoss(ps []*pinger) {
	GinkgoHelper()
	var report []string
	lost := 0
	for _, p := range ps {
		s := p.stop()
		report = append(report, s.String())
		lost += s.lost
		Expect(s.sent).To(BeNumerically(">", 0))
	}
	AddReportEntry("pings", strings.Join(report, "\n"))
	fmt.Fprintln(GinkgoWriter, strings.Join(report, "\n"))
	Expect(lost).To(BeZero(), "lost replies:\n%s", strings.Join(report, "\n"))
}

// peerEntry is a peer as the specs compare what a host forwards to and
// what it should: "mac [ips] at vtep", the addresses sorted.
func peerEntry(p dataplane.Peer) string {
	ips := append([]net.IP(nil), p.IPs...)
	sort.Slice(ips, func(i, j int) bool { return bytes.Compare(ips[i], ips[j]) < 0 })
	p.IPs = ips
	return p.String()
}

// entries are the peers h forwards to on network nid now, sorted.
func (h *host) entries(nid string, hn records.HostNetwork) ([]string, error) {
	var out []string
	err := h.ns.Do(func(ns.NetNS) error {
		peers, err := dataplane.Peers(dataplaneNetwork(nid, hn))
		for _, p := range peers {
			out = append(out, peerEntry(p))
		}
		return err
	})
	sort.Strings(out)
	return out, err
}

// hostNetworksIn are h's overlay networks in the store dump kv.
func hostNetworksIn(kv map[string]string, h *host) (map[string]records.HostNetwork, error) {
	p := "hosts/" + h.name + "/hostdrivers/" + records.NetworkType + "/networks/"
	out := map[string]records.HostNetwork{}
	for k, v := range kv {
		if nid, ok := strings.CutPrefix(k, p); ok {
			hn := records.HostNetwork{}
			if err := json.Unmarshal([]byte(v), &hn); err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[nid] = hn
		}
	}
	return out, nil
}

// wantEntries are the peers h should forward to on network nid, by the
// store dump kv: the endpoints joined on other hosts, but those of a
// host known to be gone (registered, its lease expired).
func wantEntries(kv map[string]string, h *host, nid string) ([]string, error) {
	out := []string{}
	for k, v := range kv {
		if !strings.HasPrefix(k, records.StorePrefix+records.PeersPrefix+nid+"/") {
			continue
		}
		p := records.Peer{}
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		_, registered := kv[cnm.HostKey(p.Host)]
		_, live := kv[cnm.HostLiveKey(p.Host)]
		if p.Host == h.name || (registered && !live) {
			continue
		}
		mac, err := net.ParseMAC(p.MAC)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, peerEntry(dataplane.Peer{MAC: mac, IPs: p.ParseIPs(), VTEP: net.ParseIP(p.VTEP)}))
	}
	sort.Strings(out)
	return out, nil
}

// drift lists, for every host and each overlay network it has, how what
// it forwards to differs from what the store says it should; nothing
// when every host is converged.
func (w *world) drift() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := w.tryDump(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range w.hosts {
		hns, err := hostNetworksIn(kv, h)
		if err != nil {
			return nil, err
		}
		for nid, hn := range hns {
			want, err := wantEntries(kv, h, nid)
			if err != nil {
				return nil, err
			}
			got, err := h.entries(nid, hn)
			if err != nil {
				return nil, fmt.Errorf("%s: network %s: %w", h.name, nid, err)
			}
			if !equalStrings(got, want) {
				out = append(out, fmt.Sprintf("%s, network %s: has %v, want %v", h.name, nid[:10], got, want))
			}
		}
	}
	return out, nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// expectConverged waits until every host forwards to exactly the
// endpoints joined on the other hosts, as their daemons make it.
func (w *world) expectConverged(within time.Duration) {
	GinkgoHelper()
	Eventually(w.drift, within, 50*time.Millisecond).Should(BeEmpty(), "every host forwards to exactly the others' endpoints")
}

// tryDump is dump returning etcd's error, for a spec where etcd is
// coming back.
func (w *world) tryDump(ctx context.Context) (map[string]string, error) {
	resp, err := w.cli.Get(ctx, prefix+"/data/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, e := range resp.Kvs {
		kv[strings.TrimPrefix(string(e.Key), prefix+"/data/")] = string(e.Value)
	}
	return kv, nil
}

// leader is the index of the etcd member that leads, once one does.
func (w *world) leader() int {
	GinkgoHelper()
	found := -1
	Eventually(func() error {
		for i, ep := range w.etcd.Endpoints {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := w.cli.Status(ctx, ep)
			cancel()
			if err != nil {
				return fmt.Errorf("status of member %d: %w", i, err)
			}
			if st.Leader != 0 && st.Leader == st.Header.MemberId {
				found = i
				return nil
			}
		}
		return fmt.Errorf("no member leads")
	}, 20*time.Second, 100*time.Millisecond).Should(Succeed())
	return found
}
