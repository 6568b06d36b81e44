package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cnmnet/cnmnet/pkg/store"
)

const (
	// DefaultTimeout is the deadline of every etcd call when the Config
	// gives none.
	DefaultTimeout = 5 * time.Second
	// DefaultPrefix is where the keys live when the Config gives no
	// Prefix.
	DefaultPrefix = "/cnmnet"
	// MaxTxnOps is etcd's default --max-txn-ops: a commit may hold at most
	// this many compares, and this many writes. A transaction that needs
	// more fails with ErrTxnTooLarge, before anything is sent.
	MaxTxnOps = 128
	// minAttempts is how often a transaction's function runs at least
	// when its commit conflicts (or its reads meet a compaction); it runs
	// again until the store's Timeout has passed since the first run, so
	// that a burst of ADDs on one network (which all move its address
	// cursor) is served in turn rather than answered 11.
	minAttempts = 10
	// noLeaderWait is the pause before sending again a request that a
	// member refused for having no leader.
	noLeaderWait = 50 * time.Millisecond
)

// ErrTxnTooLarge is returned by a transaction that etcd would refuse for
// its size: more than MaxTxnOps compares or writes, or a request larger
// than the server's --max-request-bytes (1.5 MiB by default). Retrying it
// does not help.
var ErrTxnTooLarge = errors.New("transaction too large for etcd")

// errReadOnly is returned by a write in a View.
var errReadOnly = errors.New("write in a read-only transaction")

// errClosed is returned by the calls of a closed Store.
var errClosed = errors.New("etcd store is closed")

// errRerun marks a failure after which the transaction runs again from
// scratch: a conflicting commit, or a read at a revision compacted away.
var errRerun = errors.New("transaction must run again")

// Config says how to reach the cluster and where the keys live in it.
type Config struct {
	// Endpoints are client URLs of the cluster's members:
	// unix:///abs/path, unixs:///abs/path (TLS), http://host:port or
	// https://host:port.
	Endpoints []string
	// Prefix is the etcd key under which every key lives, "/cnmnet" say;
	// empty means DefaultPrefix, and a trailing "/" is dropped.
	Prefix string
	// Timeout is the deadline of every etcd call; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// CertFile and KeyFile are the client's certificate and key (PEM),
	// TrustedCAFile the CA that signs the members' certificates. All
	// empty means no TLS.
	CertFile, KeyFile, TrustedCAFile string
	// FailFast: after one call fails for unavailability, every later call
	// of this Store fails with store.ErrUnavailable at once, so that a
	// plugin's invocation answers within about one Timeout in all.
	FailFast bool
}

// Store is a store.Store kept in etcd. It is safe for concurrent use.
type Store struct {
	client    *clientv3.Client
	timeout   time.Duration
	failFast  bool
	endpoints string // for messages
	prefix    string
	data      string // etcd key of the store key ""
	dirs      string // etcd key of the marker of the directory ""
	schemaKey string

	rpcs   atomic.Int64
	schema atomic.Int32 // a schemaState
	down   atomic.Pointer[error]
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// What a Store knows of the schema key.
type schemaState = int32

const (
	schemaUnknown schemaState = iota
	schemaVerified
	schemaMissing // last seen missing: the next commit creates it
)

// Open makes a client of the cluster. It does not wait for a connection:
// the first call dials, within its Timeout.
func Open(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	useTLS := cfg.CertFile != "" || cfg.KeyFile != "" || cfg.TrustedCAFile != ""
	for _, ep := range cfg.Endpoints {
		if err := checkEndpoint(ep, useTLS); err != nil {
			return nil, err
		}
		// The client secures every connection as its first endpoint's.
		if scheme(ep) != scheme(cfg.Endpoints[0]) {
			return nil, fmt.Errorf("etcd store: endpoint %q: every endpoint must use the scheme of the first, %s://",
				ep, scheme(cfg.Endpoints[0]))
		}
	}
	ccfg := clientv3.Config{
		Endpoints: cfg.Endpoints,
		// A plugin's stderr is its log: the client's retries are not news.
		Logger: zap.NewNop(),
	}
	if useTLS {
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, fmt.Errorf("etcd store: TLS needs both a certificate and its key (certFile %q, keyFile %q)",
				cfg.CertFile, cfg.KeyFile)
		}
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.TrustedCAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd store: TLS: %w", err)
		}
		ccfg.TLS = tlsCfg
	}
	client, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd store: client of %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	prefix = strings.TrimRight(prefix, "/")
	s := &Store{
		client:    client,
		timeout:   cfg.Timeout,
		failFast:  cfg.FailFast,
		endpoints: strings.Join(cfg.Endpoints, ","),
		prefix:    prefix,
		data:      prefix + "/data/",
		dirs:      prefix + "/dirs/",
		schemaKey: prefix + "/schema",
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	return s, nil
}

// checkEndpoint refuses an endpoint the client would misread, or one that
// would drop the TLS the configuration asks for.
func checkEndpoint(ep string, useTLS bool) error {
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Errorf("etcd store: endpoint %q: %w", ep, err)
	}
	switch u.Scheme {
	case "unix", "unixs":
		if u.Host != "" || !path.IsAbs(u.Path) {
			return fmt.Errorf("etcd store: endpoint %q: a socket is %s:///absolute/path", ep, u.Scheme)
		}
	case "http", "https":
		if u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("etcd store: endpoint %q: want %s://host:port", ep, u.Scheme)
		}
		if u.Scheme == "http" && useTLS {
			return fmt.Errorf("etcd store: endpoint %q is plain http but TLS files are configured: use https://", ep)
		}
	default:
		return fmt.Errorf("etcd store: endpoint %q: scheme must be unix, unixs, http or https", ep)
	}
	return nil
}

func scheme(ep string) string {
	s, _, _ := strings.Cut(ep, "://")
	return s
}

// Client is the store's etcd client, for daemons that watch keys or hold
// leases. It is closed by Close.
func (s *Store) Client() *clientv3.Client { return s.client }

// Key is the etcd key that holds storeKey's value: a watcher of
// Key("endpoints/") with a prefix sees every endpoint's changes.
func (s *Store) Key(storeKey string) string { return s.data + storeKey }

// Timeout is the deadline of each of the Store's etcd calls, for a
// daemon's own calls of Client to match.
func (s *Store) Timeout() time.Duration { return s.timeout }

// RoundTrips is the number of etcd RPCs the Store has made.
func (s *Store) RoundTrips() int64 { return s.rpcs.Load() }

// Close closes the client; later calls of the Store fail.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}

// View implements store.Store: fn reads at one revision, and writes fail.
func (s *Store) View(fn func(store.Tx) error) error { return s.run(false, fn) }

// Update implements store.Store: fn runs, perhaps several times, until its
// commit finds nothing it read changed since (see the package doc).
func (s *Store) Update(fn func(store.Tx) error) error { return s.run(true, fn) }

func (s *Store) run(writable bool, fn func(store.Tx) error) error {
	var last error
	start := time.Now()
	attempt := 0
	for attempt < minAttempts || time.Since(start) < s.timeout {
		attempt++
		if attempt > 1 {
			backoff(attempt)
		}
		t := &tx{s: s, write: writable, seen: map[string]kv{}, writes: map[string]write{}}
		err := fn(t)
		switch {
		case t.failed != nil && errors.Is(t.failed, errRerun):
			last = t.failed
			continue
		case t.failed != nil:
			// A read failed: nothing is committed, whatever fn made of it.
			if err != nil {
				return err
			}
			return t.failed
		case err != nil:
			return err
		case !writable:
			return nil
		}
		err = t.commit()
		if !errors.Is(err, errRerun) {
			return err
		}
		last = err
	}
	return fmt.Errorf("%w: gave up after %d attempts in %s: %v", store.ErrConflict, attempt, time.Since(start).Round(time.Millisecond), last)
}

// usable fails when the Store may not make a call: closed, or failed
// fast.
func (s *Store) usable() error {
	if s.closed.Load() {
		return errClosed
	}
	if p := s.down.Load(); p != nil {
		return fmt.Errorf("%w (not tried again)", *p)
	}
	return nil
}

// call makes one etcd request, what, within the Store's deadline, and
// classifies its failure.
func (s *Store) call(what string, do func(ctx context.Context) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	// Without a leader a member refuses at once rather than wait for one
	// that may never come.
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), s.timeout)
	defer cancel()
	for {
		s.rpcs.Add(1)
		err := do(ctx)
		if err == nil {
			return nil
		}
		// A member refuses a request for having no leader before it does
		// anything with it, so sending it again is safe, commits too:
		// within the deadline, an election may give it one. So is a read
		// whose leader went while it waited for its read index ("leader
		// changed": etcd answers that to linearizable reads, read-only
		// Txns among them, never to a write), which the new leader serves.
		if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrLeaderChanged) {
			select {
			case <-time.After(noLeaderWait):
				continue
			case <-ctx.Done():
			}
		}
		return s.classify(what, err)
	}
}

// classify wraps err, the failure of the request what, in the error the
// store's users act on.
func (s *Store) classify(what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: %s: %v", errRerun, what, err)
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge), tooLarge(err):
		return fmt.Errorf("%w: %s: %v", ErrTxnTooLarge, what, err)
	case unavailable(err):
		err = fmt.Errorf("%w: etcd at %s: %s: no answer within %s: %v", store.ErrUnavailable, s.endpoints, what, s.timeout, err)
		if s.failFast {
			s.down.CompareAndSwap(nil, &err)
		}
		return err
	case s.closed.Load():
		return fmt.Errorf("%s: %w", what, errClosed)
	default:
		return fmt.Errorf("etcd at %s: %s: %w", s.endpoints, what, err)
	}
}

// unavailable reports whether err means the cluster could not answer in
// time: unreachable, without quorum or leader, or overloaded.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrTooManyRequests) {
		return true
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	} else {
		return false
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// tooLarge reports whether err is gRPC's refusal of a message past its
// size limit, the client's (2 MiB) or the server's.
func tooLarge(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max")
}

// backoff sleeps before the attempt-th run of a transaction: a jittered,
// doubling pause (2 ms to 100 ms), so that transactions that keep
// conflicting spread out.
func backoff(attempt int) {
	d := min(time.Millisecond<<attempt, 100*time.Millisecond)
	time.Sleep(d/2 + rand.N(d/2))
}
