package etcdtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options say what cluster Start makes.
type Options struct {
	// Members is the cluster's size: 1 (when 0) or 3 for fault tests.
	Members int
	// TLS makes the members listen on unixs:// and require a client
	// certificate; Cluster.TLS then holds the client's files.
	TLS bool
	// Args are more cnm-testetcd flags for every member, e.g.
	// "-auto-compaction-retention=100" (revisions; off by default),
	// "-quota-backend-bytes=1048576", "-election-ms=1000" (default 500,
	// heartbeat 50).
	Args []string
}

// Cluster is a running etcd cluster of child processes.
type Cluster struct {
	// Dir holds the members' sockets, data, logs and certificates.
	Dir string
	// Endpoints are the client URLs, one per member, in member order:
	// unix:///<Dir>/m<i>.sock, or unixs:// with TLS.
	Endpoints []string
	// TLS is the client's certificate, key and CA; nil without TLS.
	TLS *TLSFiles

	bin     string
	args    []string // flags for every member
	initial string   // -initial-cluster
	certs   *certs
	mu      sync.Mutex
	members []*member
	stopped bool
}

type member struct {
	name, dataDir, sock, log, peerURL string
	proc                              *process // nil when not running
}

// process is one run of a member.
type process struct {
	pid    int
	ready  chan struct{} // closed when it printed "ready"
	exited chan struct{} // closed once it has exited and been reaped
	err    error         // how it exited, once exited is closed
}

const (
	// maxSockPath is the longest pathname a unix socket can have
	// (sun_path holds 108 bytes with the terminating NUL).
	maxSockPath = 107
	// readyTimeout bounds how long members take to join their cluster;
	// generous, for a loaded machine.
	readyTimeout = 60 * time.Second
	// bindAttempts is how often Start and Restart try again when a peer
	// port was taken between choosing it and the member binding it.
	bindAttempts = 3
)

// errPortTaken is a member failing to bind its peer port.
var errPortTaken = errors.New("peer port taken")

// Start starts a cluster with its files under dir and returns once the
// cluster serves a linearizable read. On failure it leaves nothing
// running.
func Start(dir string, opts Options) (*Cluster, error) {
	n := opts.Members
	if n == 0 {
		n = 1
	}
	if n < 0 {
		return nil, fmt.Errorf("etcdtest: Members %d: want 1 or more", n)
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin}
	scheme := "unix"
	if opts.TLS {
		scheme = "unixs"
	}
	var sockNames []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		m := &member{
			name:    name,
			dataDir: filepath.Join(dir, name),
			sock:    filepath.Join(dir, name+".sock"),
			log:     filepath.Join(dir, name+".log"),
		}
		if _, err := os.Stat(m.dataDir); err == nil {
			return nil, fmt.Errorf("etcdtest: %s holds a member already: start a cluster in a directory of its own", m.dataDir)
		}
		if len(m.sock) > maxSockPath {
			return nil, fmt.Errorf("etcdtest: socket path %s is %d bytes, over the %d a unix socket allows: use a shorter dir", m.sock, len(m.sock), maxSockPath)
		}
		c.members = append(c.members, m)
		c.Endpoints = append(c.Endpoints, scheme+"://"+m.sock)
		sockNames = append(sockNames, filepath.Base(m.sock))
	}
	if opts.TLS {
		if c.certs, err = makeCerts(filepath.Join(dir, "tls"), sockNames); err != nil {
			return nil, fmt.Errorf("etcdtest: %w", err)
		}
		c.TLS = &c.certs.client
	}
	c.args = c.commonArgs(opts)

	for attempt := 1; ; attempt++ {
		err = c.boot()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == bindAttempts {
			return nil, errors.Join(err, c.Stop())
		}
		// Start afresh with new ports: the members' data names the old ones.
		if err := c.killAll(); err != nil {
			return nil, errors.Join(err, c.Stop())
		}
		for _, m := range c.members {
			if err := os.RemoveAll(m.dataDir); err != nil {
				return nil, errors.Join(err, c.Stop())
			}
		}
	}
	if err := c.waitServing(readyTimeout); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// commonArgs are the flags every member gets.
func (c *Cluster) commonArgs(opts Options) []string {
	args := []string{"-unsafe-no-fsync", "-initial-cluster-token", "cnm-testetcd-" + randomHex(6)}
	if c.certs != nil {
		s := c.certs.server
		args = append(args, "-cert-file", s.CertFile, "-key-file", s.KeyFile,
			"-trusted-ca-file", s.CAFile, "-client-cert-auth")
	}
	return append(args, opts.Args...)
}

// boot gives every member a free peer port, starts them all at once, as
// a new cluster forms only once a quorum of it runs, and waits until each
// is ready.
func (c *Cluster) boot() error {
	ports, err := freePorts(len(c.members))
	if err != nil {
		return err
	}
	var initial []string
	for i, m := range c.members {
		m.peerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		initial = append(initial, m.name+"="+m.peerURL)
	}
	c.initial = strings.Join(initial, ",")
	for _, m := range c.members {
		if err := c.spawn(m); err != nil {
			return err
		}
	}
	return c.waitReady(c.members, readyTimeout)
}

// spawn starts m's process.
func (c *Cluster) spawn(m *member) error {
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("etcdtest: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("etcdtest: %w", err)
	}
	defer w.Close() // the child has its own copy
	args := append([]string{"-name", m.name, "-data-dir", m.dataDir,
		"-listen-client", c.scheme() + "://" + m.sock, "-listen-peer", m.peerURL,
		"-initial-cluster", c.initial}, c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = w, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	p := &process{ready: make(chan struct{}), exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child ends, not
		// only the process: fork from a thread kept until the child exits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		r.Close()
		return fmt.Errorf("etcdtest: start member %s: %w", m.name, err)
	}
	go func() {
		defer r.Close()
		s := bufio.NewScanner(r)
		for s.Scan() {
			if s.Text() == "ready" {
				close(p.ready)
				break
			}
		}
		for s.Scan() { // drained until the child exits
		}
	}()
	m.proc = p
	return nil
}

func (c *Cluster) scheme() string {
	if c.certs != nil {
		return "unixs"
	}
	return "unix"
}

// waitReady waits until every member in ms has joined the cluster, and
// fails as soon as one of them exits.
func (c *Cluster) waitReady(ms []*member, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	pending := ms
	for {
		var still []*member
		for _, m := range pending {
			select {
			case <-m.proc.ready:
			case <-m.proc.exited:
				return exitError(m)
			default:
				still = append(still, m)
			}
		}
		pending = still
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			m := pending[0]
			return fmt.Errorf("etcdtest: member %s not ready after %s (a member joins only while a quorum runs); its log ends:\n%s",
				m.name, timeout, logTail(m.log, 2048))
		}
		<-tick.C
	}
}

// exitError says why member m exited before it was ready, and forgets
// its process.
func exitError(m *member) error {
	p := m.proc
	m.proc = nil
	log := logTail(m.log, 2048)
	if strings.Contains(log, "address already in use") {
		return fmt.Errorf("etcdtest: member %s: %w: %s", m.name, errPortTaken, m.peerURL)
	}
	return fmt.Errorf("etcdtest: member %s exited before it was ready (%v); its log ends:\n%s", m.name, p.err, log)
}

// waitServing waits until the cluster answers a linearizable read,
// which needs a leader and a quorum.
func (c *Cluster) waitServing(timeout time.Duration) error {
	cli, err := c.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "etcdtest-probe")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcdtest: cluster does not serve a read after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill SIGKILLs the given members and waits until they are gone. Their
// data stays (Restart brings them back), and so do their socket files,
// as after a crash. Killing a member that is not running does nothing.
func (c *Cluster) Kill(members ...int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, i := range members {
		m, err := c.member(i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, kill(m))
	}
	return errors.Join(errs...)
}

func kill(m *member) error {
	p := m.proc
	if p == nil {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("etcdtest: kill member %s: %w", m.name, err)
	}
	select {
	case <-p.exited:
		m.proc = nil
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("etcdtest: member %s (pid %d) still there 10s after SIGKILL", m.name, p.pid)
	}
}

// Restart starts the given members again with their data and waits until
// each has rejoined the cluster, which needs a quorum running: to bring
// back a cluster that lost its quorum, restart enough members in one
// call.
func (c *Cluster) Restart(members ...int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("etcdtest: cluster stopped")
	}
	var ms []*member
	for _, i := range members {
		m, err := c.member(i)
		if err != nil {
			return err
		}
		if m.proc != nil {
			return fmt.Errorf("etcdtest: member %s is running", m.name)
		}
		ms = append(ms, m)
	}
	for attempt := 1; ; attempt++ {
		err := c.restart(ms)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == bindAttempts {
			return err
		}
		// A member's peer port is fixed in the cluster: wait for it.
		for _, m := range ms {
			if err := kill(m); err != nil {
				return err
			}
		}
		time.Sleep(time.Second)
	}
}

func (c *Cluster) restart(ms []*member) error {
	for _, m := range ms {
		if err := c.spawn(m); err != nil {
			return err
		}
	}
	return c.waitReady(ms, readyTimeout)
}

func (c *Cluster) member(i int) (*member, error) {
	if i < 0 || i >= len(c.members) {
		return nil, fmt.Errorf("etcdtest: no member %d in a cluster of %d", i, len(c.members))
	}
	return c.members[i], nil
}

// Pid is member i's process id, 0 when it is not running: for a test
// that stops it (SIGSTOP) to play a hung member.
func (c *Cluster) Pid(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.member(i)
	if err != nil || m.proc == nil {
		return 0
	}
	return m.proc.pid
}

// Stop kills every member and removes the sockets, data, logs and
// certificates it made under Dir. Calling it again does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	errs := []error{c.killAll()}
	for _, m := range c.members {
		for _, path := range []string{m.sock, m.log, m.dataDir} {
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.certs != nil {
		errs = append(errs, os.RemoveAll(filepath.Join(c.Dir, "tls")))
	}
	return errors.Join(errs...)
}

func (c *Cluster) killAll() error {
	var errs []error
	for _, m := range c.members {
		errs = append(errs, kill(m))
	}
	return errors.Join(errs...)
}

// ClientConfig is a client configuration for the whole cluster, with the
// client certificate when TLS, and no client logging. Dial a single
// member by setting Endpoints to one of c.Endpoints.
func (c *Cluster) ClientConfig() (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   append([]string(nil), c.Endpoints...),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if c.TLS != nil {
		info := transport.TLSInfo{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return cfg, fmt.Errorf("etcdtest: client TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	return cfg, nil
}

// Client is a client of the whole cluster (see ClientConfig); the
// caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: client: %w", err)
	}
	return cli, nil
}

// TB is what StartForTest needs of a test: GinkgoT() or a *testing.T.
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Failed() bool
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// StartForTest starts a cluster in a directory of t's that goes when the
// test ends, and stops it then, pass or fail; when the test failed it
// first writes the end of each member's log to t's log. It fails t if
// the cluster does not start.
func StartForTest(t TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range c.members {
				t.Logf("etcd member %s log ends:\n%s", m.name, logTail(m.log, 8192))
			}
		}
		if err := c.Stop(); err != nil {
			t.Fatalf("stop etcd: %v", err)
		}
	})
	return c
}

// freePorts finds n distinct free loopback TCP ports. Another process may
// take one before a member binds it; Start then tries again.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: find a free port: %w", err)
		}
		defer l.Close() // held until all are chosen, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// logTail is the last n bytes of the file at path, for error messages.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
