package main

// The overlay's test bed: a real etcd (test/etcdtest's cnm-testetcd) on
// a unix socket, an underlay namespace with a bridge, hosts as network
// namespaces on it, cnm-overlayd per host as a child process in the
// host's namespace, the plugin exec'd through libcni; and the probes the
// phases measure with: an ICMP echo prober in a container namespace, a
// watch of a host's neighbour and FDB entries, a counting proxy in front
// of etcd, the daemon's /metrics.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

// ovPrefix is the etcd key prefix of the bench's cluster store.
const ovPrefix = "/cnmbench"

// ovWorld is the overlay's cluster: etcd, the underlay and the hosts.
type ovWorld struct {
	h        *harness
	dir      string
	etcd     *etcdtest.Cluster
	underlay ns.NetNS
	hosts    []*ovHost
	daemon   string // cnm-overlayd
}

// ovHost is one "machine": a namespace with eth0 on the underlay
// (192.168.77.<i>/24, default route through it), its data directory, its
// name in the cluster and its daemon.
type ovHost struct {
	w      *ovWorld
	name   string
	ip     net.IP
	ns     ns.NetNS
	dir    string
	cni    *libcni.CNIConfig
	daemon *daemonProc
	resync string
}

// newOvWorld starts etcd in dir and makes an underlay with no hosts.
func (h *harness) newOvWorld() (*ovWorld, error) {
	w := &ovWorld{h: h, dir: filepath.Join(h.tmp, "ov"), daemon: filepath.Join(h.cnmBin, "cnm-overlayd")}
	for _, p := range []string{w.daemon, filepath.Join(h.cnmBin, "cnm-overlay")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s missing (make build): %w", p, err)
		}
	}
	// etcdtest takes bin/cnm-testetcd (make tools) when there, else builds it.
	if _, err := os.Stat(filepath.Join(h.cnmBin, "cnm-testetcd")); err == nil && os.Getenv("CNM_BIN_DIR") == "" {
		os.Setenv("CNM_BIN_DIR", h.cnmBin)
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if w.etcd, err = etcdtest.Start(filepath.Join(w.dir, "etcd"), etcdtest.Options{}); err != nil {
		return nil, err
	}
	atCleanup(func() { _ = w.etcd.Stop() })
	if w.underlay, err = newNetNS(); err != nil {
		return nil, err
	}
	err = w.underlay.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul", MTU: 1500}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	return w, err
}

// addHost puts host number i (1..253) on the underlay, without a daemon.
func (w *ovWorld) addHost(i int) (*ovHost, error) {
	h := &ovHost{w: w, name: fmt.Sprintf("node-%d", i), ip: net.IPv4(192, 168, 77, byte(i)).To4(),
		dir: filepath.Join(w.dir, fmt.Sprintf("node-%d", i)), resync: "30s"}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if h.ns, err = newNetNS(); err != nil {
		return nil, err
	}
	err = w.underlay.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName("ul")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h" + strconv.Itoa(i), MTU: 1500, MasterIndex: br.Attrs().Index},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.ns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: underlay: %w", h.name, err)
	}
	err = h.ns.Do(func(ns.NetNS) error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(h.ip.String() + "/24")
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		// The plugin's default underlay is the default route's interface.
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IPv4(192, 168, 77, 254)})
	})
	if err != nil {
		return nil, fmt.Errorf("%s: eth0: %w", h.name, err)
	}
	h.cni = libcni.NewCNIConfigWithCacheDir([]string{w.h.cnmBin}, filepath.Join(h.dir, "cache"), nil)
	w.hosts = append(w.hosts, h)
	return h, nil
}

// ovNet is an overlay network of the bench.
type ovNet struct {
	name, subnet string
	more         map[string]any
}

// list is n's conflist as host h's runtime has it; endpoints replaces
// etcd's client URLs (the counting proxy).
func (h *ovHost) list(n ovNet, endpoints ...string) (*libcni.NetworkConfigList, error) {
	if len(endpoints) == 0 {
		endpoints = h.w.etcd.Endpoints
	}
	p := map[string]any{
		"type": "cnm-overlay", "dataDir": filepath.Join(h.dir, "cnm"), "host": h.name,
		"cluster": map[string]any{"etcd": map[string]any{"endpoints": endpoints, "prefix": ovPrefix, "timeout": "5s"}},
		"ipam":    map[string]any{"type": "cnm", "subnet": n.subnet},
	}
	for k, v := range n.more {
		p[k] = v
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": n.name, "plugins": []any{p}})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// add runs ADD of container id (sandbox c) on h through libcni, from a
// thread in h's namespace; args are CNI_ARGS pairs. start, when not nil,
// is called right before the plugin is started (the phases' t0).
func (h *ovHost) add(l *libcni.NetworkConfigList, id string, c ns.NetNS, args [][2]string, start func()) (time.Duration, error) {
	return h.verb("ADD", l, id, c, args, start)
}

func (h *ovHost) del(l *libcni.NetworkConfigList, id string, c ns.NetNS, args [][2]string) (time.Duration, error) {
	return h.verb("DEL", l, id, c, args, nil)
}

func (h *ovHost) verb(verb string, l *libcni.NetworkConfigList, id string, c ns.NetNS, args [][2]string, start func()) (time.Duration, error) {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: c.Path(), IfName: "eth0", Args: args}
	var d time.Duration
	err := h.ns.Do(func(ns.NetNS) error {
		if start != nil {
			start()
		}
		t := time.Now()
		var err error
		if verb == "ADD" {
			_, err = h.cni.AddNetworkList(context.Background(), l, rt)
		} else {
			err = h.cni.DelNetworkList(context.Background(), l, rt)
		}
		d = time.Since(t)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("cnm-overlay %s %s on %s: %w", verb, id, h.name, err)
	}
	return d, nil
}

// daemonProc is one run of cnm-overlayd.
type daemonProc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
}

// startDaemon starts cnm-overlayd in h's namespace. It forks from a
// thread locked in that namespace and kept until the daemon exits, since
// Pdeathsig fires when the forking thread ends; the thread is never
// unlocked, so Go discards it afterwards.
func (h *ovHost) startDaemon(extra ...string) error {
	logf, err := os.OpenFile(filepath.Join(h.dir, "cnm-overlayd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{"--etcd-endpoints", strings.Join(h.w.etcd.Endpoints, ","), "--etcd-prefix", ovPrefix,
		"--host", h.name, "--underlay-address", h.ip.String(), "--metrics-address", "127.0.0.1:9725",
		"--lease-ttl", "60s", "--resync-interval", h.resync, "--log-format", "json", "--log-level", "warn"}, extra...)
	d := &daemonProc{cmd: exec.Command(h.w.daemon, args...), exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := h.ns.Set(); err != nil {
			started <- err
			return
		}
		d.started = time.Now()
		if err := d.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start cnm-overlayd on %s: %w", h.name, err)
	}
	h.daemon = d
	atCleanup(func() { _ = h.stopDaemon(syscall.SIGKILL) })
	return nil
}

// stopDaemon sends sig to the daemon and waits for it to exit.
func (h *ovHost) stopDaemon(sig syscall.Signal) error {
	d := h.daemon
	if d == nil {
		return nil
	}
	select {
	case <-d.exited:
		return nil
	default:
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-d.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("cnm-overlayd on %s: still running 10 s after %v", h.name, sig)
	}
}

// scrape reads the daemon's /metrics as "name{labels}" → value.
func (h *ovHost) scrape() (map[string]float64, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.ns.Do(func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get("http://127.0.0.1:9725/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %s", h.name, resp.Status)
	}
	out := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, s.Err()
}

// waitReconciled waits until the daemon has made n successful full
// reconciles, looking every poll, and returns its metrics then.
func (h *ovHost) waitReconciled(n float64, timeout, poll time.Duration) (map[string]float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := h.scrape()
		if err == nil && m[`cnm_overlayd_reconciles_total{result="ok"}`] >= n {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cnm-overlayd on %s: %v full reconciles not done within %v (%v)", h.name, n, timeout, err)
		}
		time.Sleep(poll)
	}
}

// procStatus reads VmRSS and VmHWM (KiB) of pid.
func procStatus(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// vxlanIndex is the index of network nid's VXLAN device in h's namespace.
func (h *ovHost) vxlanIndex(nid string) (int, error) {
	_, vx := dataplane.Names(nid)
	idx := 0
	err := h.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(vx)
		if err == nil {
			idx = l.Attrs().Index
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", h.name, vx, err)
	}
	return idx, nil
}

// networkID is the ID of the overlay network called name, from its
// cluster record.
func (w *ovWorld) networkID(name string) (string, error) {
	cli, err := w.etcd.Client()
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, ovPrefix+"/data/"+records.StorePrefix+records.NetworkKey(""), clientv3.WithPrefix())
	if err != nil {
		return "", err
	}
	for _, kv := range resp.Kvs {
		n := records.Network{}
		if json.Unmarshal(kv.Value, &n) == nil && n.Name == name {
			return n.ID, nil
		}
	}
	return "", fmt.Errorf("no overlay network %s in etcd", name)
}

// fdb lists the permanent FDB entries of the device at index as MAC →
// destination VTEP, and counts its neighbour entries.
func (h *ovHost) fdb(index int) (map[string]string, int, error) {
	out := map[string]string{}
	neighs := 0
	err := h.ns.Do(func(ns.NetNS) error {
		fdb, err := netlink.NeighList(index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, e := range fdb {
			if e.State&netlink.NUD_PERMANENT != 0 && e.IP != nil {
				out[e.HardwareAddr.String()] = e.IP.String()
			}
		}
		n, err := netlink.NeighList(index, unix.AF_INET)
		neighs = len(n)
		return err
	})
	return out, neighs, err
}

// entryWatch records when FDB (MAC) and neighbour (IP) entries appear on
// one device of a host, from a netlink subscription in its namespace.
type entryWatch struct {
	mu    sync.Mutex
	fdb   map[string]time.Time
	neigh map[string]time.Time
	done  chan struct{}
}

func (h *ovHost) watchEntries(index int) (*entryWatch, error) {
	handle, err := netns.GetFromPath(h.ns.Path())
	if err != nil {
		return nil, err
	}
	w := &entryWatch{fdb: map[string]time.Time{}, neigh: map[string]time.Time{}, done: make(chan struct{})}
	ch := make(chan netlink.NeighUpdate, 1<<14)
	err = netlink.NeighSubscribeWithOptions(ch, w.done, netlink.NeighSubscribeOptions{Namespace: &handle,
		ReceiveBufferSize: 4 << 20, ErrorCallback: func(err error) {
			select {
			case <-w.done: // the socket closed by stop
			default:
				logf("neighbour watch on %s: %v", h.name, err)
			}
		}})
	handle.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: subscribe to neighbours: %w", h.name, err)
	}
	go func() {
		for u := range ch {
			if u.Type != unix.RTM_NEWNEIGH || u.LinkIndex != index {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			if u.Family == unix.AF_BRIDGE {
				if k := u.HardwareAddr.String(); w.fdb[k].IsZero() {
					w.fdb[k] = now
				}
			} else if u.IP != nil {
				if k := u.IP.String(); w.neigh[k].IsZero() {
					w.neigh[k] = now
				}
			}
			w.mu.Unlock()
		}
	}()
	atCleanup(w.stop)
	return w, nil
}

func (w *entryWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// seen waits up to timeout for both entries of mac and ip and returns
// when each appeared (zero: not seen).
func (w *entryWatch) seen(mac, ip string, timeout time.Duration) (fdb, neigh time.Time) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		fdb, neigh = w.fdb[mac], w.neigh[ip]
		w.mu.Unlock()
		if !fdb.IsZero() && !neigh.IsZero() || time.Now().After(deadline) {
			return fdb, neigh
		}
		time.Sleep(time.Millisecond)
	}
}

// prober sends ICMP echo requests from a container's namespace, on a raw
// socket made there, and records every reply it gets.
type prober struct {
	conn *net.IPConn
	id   uint16
	mu   sync.Mutex
	seq  uint16
	// replies by source address: receive times, and seqs answered.
	replies map[string][]time.Time
	seqs    map[string]map[uint16]bool
}

func newProber(c ns.NetNS) (*prober, error) {
	p := &prober{id: uint16(rand.Uint32()), replies: map[string][]time.Time{}, seqs: map[string]map[uint16]bool{}}
	err := c.Do(func(ns.NetNS) error {
		conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		p.conn = conn.(*net.IPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prober: %w", err)
	}
	atCleanup(func() { p.conn.Close() })
	go p.read()
	return p, nil
}

func (p *prober) read() {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		now := time.Now()
		// Go strips the IPv4 header: buf is the ICMP message.
		if n < 8 || buf[0] != 0 || buf[1] != 0 || binary.BigEndian.Uint16(buf[4:]) != p.id {
			continue
		}
		seq := binary.BigEndian.Uint16(buf[6:])
		src := from.(*net.IPAddr).IP.String()
		p.mu.Lock()
		p.replies[src] = append(p.replies[src], now)
		if p.seqs[src] == nil {
			p.seqs[src] = map[uint16]bool{}
		}
		p.seqs[src][seq] = true
		p.mu.Unlock()
	}
}

// send sends one echo request to dst and returns its sequence number.
func (p *prober) send(dst net.IP) uint16 {
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.mu.Unlock()
	msg := make([]byte, 16)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], p.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	binary.BigEndian.PutUint64(msg[8:], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	// Unresolved neighbours and the like fail some sends: the missing
	// reply is what counts.
	_, _ = p.conn.WriteTo(msg, &net.IPAddr{IP: dst})
	return seq
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// every sends to dst every interval until stop is closed; it returns the
// sequence numbers sent, once stopped.
func (p *prober) every(dst net.IP, interval time.Duration, stop <-chan struct{}) <-chan []uint16 {
	out := make(chan []uint16, 1)
	go func() {
		var sent []uint16
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			sent = append(sent, p.send(dst))
			select {
			case <-stop:
				out <- sent
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// firstAfter is the first reply from src received after t.
func (p *prober) firstAfter(src string, t time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies[src] {
		if r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// lastBefore is the last reply from src received before t.
func (p *prober) lastBefore(src string, t time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, r := range p.replies[src] {
		if r.Before(t) {
			last = r
		}
	}
	return last
}

// answered counts the seqs of sent that src answered.
func (p *prober) answered(src string, sent []uint16) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range sent {
		if p.seqs[src][s] {
			n++
		}
	}
	return n
}

// fastARP lowers the ARP retransmit time of a prober's namespace, so that
// a request made before the entry exists is retried within milliseconds
// rather than after the default second: the measure is then the
// overlay's, not the prober's own ARP backoff. A sysctl of the container
// namespace, not of the root one.
func fastARP(c ns.NetNS, ms int) error {
	return c.Do(func(ns.NetNS) error {
		for _, dev := range []string{"default", "eth0"} {
			p := "/proc/sys/net/ipv4/neigh/" + dev + "/retrans_time_ms"
			if err := os.WriteFile(p, []byte(strconv.Itoa(ms)), 0o644); err != nil && dev == "eth0" {
				return err
			}
		}
		return nil
	})
}

// etcdCounter is a proxy in front of etcd's client socket that counts
// the gRPC requests (HTTP/2 streams, by :path) clients send through it:
// etcd requests per plugin invocation, counted outside the plugin.
type etcdCounter struct {
	l        net.Listener
	upstream string
	URL      string
	mu       sync.Mutex
	counts   map[string]int
	// waited is the sum over requests of the time from the request's
	// headers reaching the proxy to the response's headers leaving etcd
	// reaching it: time the client spent waiting for etcd.
	waited time.Duration
	active atomic.Int64 // connections open
}

func newEtcdCounter(sock, upstream string) (*etcdCounter, error) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	c := &etcdCounter{l: l, upstream: upstream, URL: "unix://" + sock, counts: map[string]int{}}
	atCleanup(func() { l.Close() })
	go c.serve()
	return c, nil
}

func (c *etcdCounter) serve() {
	for {
		cc, err := c.l.Accept()
		if err != nil {
			return
		}
		c.active.Add(1)
		go c.proxy(cc)
	}
}

func (c *etcdCounter) proxy(cc net.Conn) {
	defer c.active.Add(-1)
	defer cc.Close()
	up, err := net.Dial("unix", c.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	var mu sync.Mutex
	open := map[uint32]time.Time{} // streams sent, not yet answered
	go func() {
		defer cc.Close()
		// What etcd sends goes to the client as the framer reads it.
		fr := http2.NewFramer(io.Discard, io.TeeReader(up, cc))
		fr.SetMaxReadFrameSize(1 << 24)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				_, _ = io.Copy(cc, up)
				return
			}
			if h, ok := f.(*http2.HeadersFrame); ok {
				now := time.Now()
				mu.Lock()
				if t, ok := open[h.StreamID]; ok {
					delete(open, h.StreamID)
					c.mu.Lock()
					c.waited += now.Sub(t)
					c.mu.Unlock()
				}
				mu.Unlock()
			}
		}
	}()
	// What the client sends goes upstream as the framer reads it.
	r := io.TeeReader(cc, up)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		_, _ = io.Copy(io.Discard, r)
		return
	}
	fr := http2.NewFramer(io.Discard, r)
	fr.SetMaxReadFrameSize(1 << 24)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if _, ok := err.(http2.StreamError); ok {
				continue
			}
			_, _ = io.Copy(io.Discard, r)
			return
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			if path := h.PseudoValue("path"); path != "" {
				mu.Lock()
				open[h.StreamID] = time.Now()
				mu.Unlock()
				c.mu.Lock()
				c.counts[path]++
				c.mu.Unlock()
			}
		}
	}
}

// take returns the counts and the time waited since the last take, once
// every connection has closed (the plugin exited), and resets them.
func (c *etcdCounter) take() (map[string]int, time.Duration) {
	for deadline := time.Now().Add(2 * time.Second); c.active.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out, waited := c.counts, c.waited
	c.counts, c.waited = map[string]int{}, 0
	return out, waited
}
