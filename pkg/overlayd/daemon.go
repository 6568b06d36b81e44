package overlayd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/hostlock"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
)

const (
	// DefaultLeaseTTL is the host lease's TTL: well above an etcd
	// outage one expects, as the other hosts take this one for gone
	// once it expires.
	DefaultLeaseTTL = 60 * time.Second
	// DefaultResyncInterval is the period of the full reconcile.
	DefaultResyncInterval = 30 * time.Second
	// HealthPeriods is how many resync intervals etcd may stay silent
	// before /healthz fails.
	HealthPeriods = 3

	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
	// retryDelay is the first pause before a network whose programming
	// failed is reconciled again; it doubles while it keeps failing.
	retryDelay = time.Second
)

// Config is what a Daemon runs with.
type Config struct {
	// Etcd reaches the cluster store. FailFast is forced off: the
	// daemon rides outages.
	Etcd etcdstore.Config
	// Host is this host's name in the cluster store.
	Host string
	// UnderlayAddress is this host's address on the underlay, recorded
	// in its registration.
	UnderlayAddress net.IP
	// LeaseTTL is the host lease's TTL; 0 means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// ResyncInterval is the period of the full reconcile; 0 means
	// DefaultResyncInterval.
	ResyncInterval time.Duration
	// MetricsAddress is where /metrics and /healthz are served, "" for
	// nowhere.
	MetricsAddress string
	// Logger logs; nil means slog.Default().
	Logger *slog.Logger
	// InNetNS runs f in the host's network namespace; every netlink
	// call and the metrics listener go through it. nil runs f as it is:
	// the process is in the host's namespace.
	InNetNS func(f func() error) error
	// LockFile is the overlay's host lock, which the plugin takes around
	// its changes of a network's data plane; "" means
	// records.HostLockFile. The daemon programs entries under it, so that
	// a plugin's CreateNetwork (which makes the links and programs the
	// peers it read) and the daemon's reconcile never interleave.
	LockFile string
}

// hostLockWait bounds the wait for a plugin's step.
const hostLockWait = 30 * time.Second

// program runs f, which changes the data plane, under the host lock and
// in the host's network namespace.
func (d *Daemon) program(f func() error) error {
	return d.underHostLock(func() error { return d.cfg.InNetNS(f) })
}

// underHostLock runs f under the host lock.
func (d *Daemon) underHostLock(f func() error) error {
	release, err := hostlock.Acquire(d.cfg.LockFile, "overlay", hostLockWait)
	if err != nil {
		return err
	}
	defer release()
	return f()
}

// Daemon is one host's cnm-overlayd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	store    *etcdstore.Store
	cli      *clientv3.Client
	prefixes [numSpaces]string // etcd keys
	ln       net.Listener
	fw       *firewall.Firewall // made at the first removal that needs it
	metrics  *metrics
	health   *health

	watchers sync.WaitGroup // the watch channels' forwarders

	// Owned by Run's goroutine.
	st         *state
	programmed map[string]map[string]dataplane.Peer // by network id, endpoint id; nil map: not reconciled yet
	dirty      map[string]bool                      // networks whose programming failed

	// afterList, when set, runs after each listing and its reconcile,
	// before the watches start (tests).
	afterList func()
}

// New checks cfg, opens the cluster store's client (it does not wait
// for etcd) and the metrics listener.
func New(cfg Config) (*Daemon, error) {
	if err := checkHost(cfg.Host); err != nil {
		return nil, err
	}
	if cfg.UnderlayAddress == nil || cfg.UnderlayAddress.IsUnspecified() || cfg.UnderlayAddress.IsLoopback() {
		return nil, fmt.Errorf("underlay address: %v is not a usable address", cfg.UnderlayAddress)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.LeaseTTL < 2*time.Second {
		return nil, fmt.Errorf("lease TTL: %v is below etcd's minimum of 2s", cfg.LeaseTTL)
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.ResyncInterval < 100*time.Millisecond {
		return nil, fmt.Errorf("resync interval: %v is below 100ms", cfg.ResyncInterval)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LockFile == "" {
		cfg.LockFile = records.HostLockFile
	}
	if cfg.InNetNS == nil {
		cfg.InNetNS = func(f func() error) error { return f() }
	}
	cfg.Etcd.FailFast = false
	d := &Daemon{cfg: cfg, log: cfg.Logger.With("host", cfg.Host), health: &health{}}
	d.metrics = newMetrics(d.health)
	var err error
	if d.store, err = etcdstore.Open(cfg.Etcd); err != nil {
		return nil, fmt.Errorf("cluster store: %w", err)
	}
	d.cli = d.store.Client()
	for sp, p := range storePrefixes(cfg.Host) {
		d.prefixes[sp] = d.store.Key(p)
	}
	if cfg.MetricsAddress != "" {
		err := cfg.InNetNS(func() error {
			var err error
			d.ln, err = net.Listen("tcp", cfg.MetricsAddress)
			return err
		})
		if err != nil {
			_ = d.store.Close()
			return nil, fmt.Errorf("metrics address: %w", err)
		}
	}
	return d, nil
}

// checkHost refuses a host name the cluster store's keys cannot carry,
// as the plugins' configuration does: letters, digits, "_", ".", "-".
func checkHost(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("host: %q: want 1 to 253 characters", h)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("host: %q: %q is not a letter, digit, '_', '.' or '-'", h, r)
		}
	}
	return nil
}

// Addr is the metrics listener's address, nil without one.
func (d *Daemon) Addr() net.Addr {
	if d.ln == nil {
		return nil
	}
	return d.ln.Addr()
}

func (d *Daemon) healthWindow() time.Duration { return HealthPeriods * d.cfg.ResyncInterval }

// Run serves until ctx ends, then stops the watches, the lease's renewal
// and the metrics server, and closes the client. It leaves the lease to
// expire and every programmed entry in place. It returns nil when
// stopped by ctx.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		_ = d.store.Close()
		d.watchers.Wait()
	}()

	if d.ln != nil {
		srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("metrics server", "err", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, scancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer scancel()
			_ = srv.Shutdown(sctx)
		})
	}
	wg.Go(func() { d.keepRegistered(ctx) })

	d.log.Info("starting", "underlay", d.cfg.UnderlayAddress.String(), "resync", d.cfg.ResyncInterval.String(), "leaseTTL", d.cfg.LeaseTTL.String())
	d.st = newState(d.cfg.Host)
	d.programmed = map[string]map[string]dataplane.Peer{}
	d.dirty = map[string]bool{}
	bo := newBackoff()
	for {
		reason, err := d.cycle(ctx)
		if ctx.Err() != nil {
			d.log.Info("stopping: the programmed entries and the lease stay")
			return nil
		}
		d.metrics.watchRestarts.WithLabelValues(reason).Inc()
		if err == nil {
			bo.reset()
			continue
		}
		d.metrics.etcdErrors.Inc()
		wait := bo.next()
		d.log.Warn("cluster store", "err", err, "retry", wait.String())
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// event is one watch response of a space, or its channel's end.
type event struct {
	sp     space
	resp   clientv3.WatchResponse
	closed bool
}

// cycle lists, reconciles every network, and applies the watches' events
// until the next resync (reason "resync"), a compaction ("compacted") or
// an error ("error", with err).
func (d *Daemon) cycle(ctx context.Context) (reason string, err error) {
	rev, err := d.list(ctx)
	if err != nil {
		return "error", err
	}
	d.reconcileAll()
	if d.afterList != nil {
		d.afterList()
	}

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	events := make(chan event)
	for sp := range numSpaces {
		wch := d.cli.Watch(wctx, d.prefixes[sp], clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		// Not waited for here: while etcd is unreachable the client may
		// close a cancelled watch's channel only once it reconnects, and
		// a new listing must not wait for that. Run waits for them after
		// closing the client, which closes every channel.
		d.watchers.Go(func() {
			for resp := range wch {
				select {
				case events <- event{sp: sp, resp: resp}:
				case <-wctx.Done():
					return
				}
			}
			select {
			case events <- event{sp: sp, closed: true}:
			case <-wctx.Done():
			}
		})
	}

	resync := time.NewTimer(d.cfg.ResyncInterval)
	defer resync.Stop()
	var retry <-chan time.Time
	retryBo := &backoff{cur: retryDelay}
	for {
		switch {
		case len(d.dirty) == 0:
			retry = nil
			retryBo.cur = retryDelay
		case retry == nil:
			// Longer and longer, for a network whose links stay gone
			// until the plugin makes them again.
			retry = time.After(min(retryBo.next(), d.cfg.ResyncInterval))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-resync.C:
			return "resync", nil
		case <-retry:
			retry = nil
			d.reconcileDirty()
		case ev := <-events:
			if ev.closed {
				return "error", fmt.Errorf("watch of %s ended", ev.sp)
			}
			if ev.resp.CompactRevision != 0 || errors.Is(ev.resp.Err(), rpctypes.ErrCompacted) {
				d.log.Info("watch compacted: listing again", "space", ev.sp.String(), "compactRevision", ev.resp.CompactRevision)
				return "compacted", nil
			}
			if err := ev.resp.Err(); err != nil {
				return "error", fmt.Errorf("watch of %s: %w", ev.sp, err)
			}
			d.health.etcdAnswered(time.Now())
			d.applyEvents(ev)
		}
	}
}

// list reads every space at one revision into a new state.
func (d *Daemon) list(ctx context.Context) (rev int64, err error) {
	cctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), d.store.Timeout())
	defer cancel()
	var ops []clientv3.Op
	for sp := range numSpaces {
		ops = append(ops, clientv3.OpGet(d.prefixes[sp], clientv3.WithPrefix()))
	}
	resp, err := d.cli.Txn(cctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("list: %w", err)
	}
	d.health.etcdAnswered(time.Now())
	st := newState(d.cfg.Host)
	var a affected
	for sp, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			key := strings.TrimPrefix(string(kv.Key), d.prefixes[sp])
			if err := st.apply(space(sp), key, kv.Value, &a); err != nil {
				d.log.Warn("record skipped", "err", err)
			}
		}
	}
	d.st = st
	return resp.Header.Revision, nil
}

// applyEvents applies one watch response and programs the networks it
// changed.
func (d *Daemon) applyEvents(ev event) {
	var a affected
	for _, e := range ev.resp.Events {
		key := strings.TrimPrefix(string(e.Kv.Key), d.prefixes[ev.sp])
		var value []byte
		if e.Type == clientv3.EventTypePut {
			value = e.Kv.Value
		}
		if err := d.st.apply(ev.sp, key, value, &a); err != nil {
			d.log.Warn("record skipped", "err", err)
		}
	}
	nets := a.nets
	if a.all {
		nets = map[string]bool{}
		for nid := range d.programmed {
			nets[nid] = true
		}
		for _, nid := range d.st.activeNetworks() {
			nets[nid] = true
		}
	}
	for nid := range nets {
		d.syncNetwork(nid)
	}
	d.updateGauges()
}

// reconcileAll makes every network's entries exactly its wanted peers.
func (d *Daemon) reconcileAll() {
	start := time.Now()
	var errs []error
	active := map[string]bool{}
	for _, nid := range d.st.activeNetworks() {
		active[nid] = true
		if err := d.reconcile(nid); err != nil {
			errs = append(errs, err)
		}
	}
	for nid := range d.programmed {
		if !active[nid] {
			d.forget(nid)
		}
	}
	for _, nid := range d.st.deletedNetworks() {
		if err := d.removeDeleted(nid); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	d.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
	d.health.reconcileDone(time.Now(), err)
	if err != nil {
		d.metrics.reconciles.WithLabelValues("error").Inc()
		d.log.Error("reconcile", "err", err)
	} else {
		d.metrics.reconciles.WithLabelValues("ok").Inc()
		d.metrics.lastReconcile.SetToCurrentTime()
	}
	d.updateGauges()
}

// reconcileDirty reconciles again the networks whose programming failed.
func (d *Daemon) reconcileDirty() {
	for nid := range d.dirty {
		if d.st.deleted(nid) {
			if err := d.removeDeleted(nid); err != nil {
				d.log.Warn("remove deleted network", "network", nid, "err", err)
			}
			continue
		}
		if _, ok, _ := d.st.network(nid); !ok {
			delete(d.dirty, nid)
			continue
		}
		if err := d.reconcile(nid); err != nil {
			d.log.Warn("reconcile", "network", nid, "err", err)
		}
	}
	d.updateGauges()
}

// reconcile makes network nid's entries exactly its wanted peers.
func (d *Daemon) reconcile(nid string) error {
	n, ok, err := d.st.network(nid)
	if !ok {
		return err
	}
	want, errs := d.st.wanted(nid, n.LocalIP)
	for _, e := range errs {
		d.log.Warn("peer skipped", "err", e)
	}
	peers := make([]dataplane.Peer, 0, len(want))
	for _, p := range want {
		peers = append(peers, p)
	}
	var added, removed int
	err = d.program(func() error {
		var err error
		added, removed, err = dataplane.Reconcile(n, peers)
		return err
	})
	d.metrics.reconcileEntries.WithLabelValues("added").Add(float64(added))
	d.metrics.reconcileEntries.WithLabelValues("removed").Add(float64(removed))
	if added+removed > 0 {
		d.log.Info("reconciled", "network", nid, "peers", len(peers), "added", added, "removed", removed)
	}
	d.programmed[nid] = want
	if err != nil {
		d.dirty[nid] = true
		return fmt.Errorf("network %s: %w", nid, err)
	}
	delete(d.dirty, nid)
	return nil
}

// forget drops a network that is no longer this host's: its links are
// the plugin's to remove, so its entries are left alone.
func (d *Daemon) forget(nid string) {
	delete(d.programmed, nid)
	delete(d.dirty, nid)
}

// syncNetwork brings network nid's entries from what was programmed to
// what is wanted, one peer at a time; a network not reconciled yet is
// reconciled whole.
func (d *Daemon) syncNetwork(nid string) {
	n, ok, err := d.st.network(nid)
	if err != nil {
		d.log.Warn("network skipped", "network", nid, "err", err)
	}
	if !ok {
		if d.st.deleted(nid) {
			if err := d.removeDeleted(nid); err != nil {
				d.log.Warn("remove deleted network", "network", nid, "err", err)
			}
			return
		}
		d.forget(nid)
		return
	}
	have, known := d.programmed[nid]
	if !known || d.dirty[nid] {
		if err := d.reconcile(nid); err != nil {
			d.log.Warn("reconcile", "network", nid, "err", err)
		}
		return
	}
	want, errs := d.st.wanted(nid, n.LocalIP)
	for _, e := range errs {
		d.log.Warn("peer skipped", "err", e)
	}
	failed := false
	note := func(op, eid string, p dataplane.Peer, err error) {
		if err != nil {
			failed = true
			d.metrics.peerUpdates.WithLabelValues(op, "error").Inc()
			d.log.Warn("program peer", "op", op, "network", nid, "endpoint", eid, "peer", p.String(), "err", err)
			return
		}
		d.metrics.peerUpdates.WithLabelValues(op, "ok").Inc()
		d.log.Debug("program peer", "op", op, "network", nid, "endpoint", eid, "peer", p.String())
	}
	if err := d.program(func() error {
		for eid, old := range have {
			w, keep := want[eid]
			if keep && bytes.Equal(old.MAC, w.MAC) && len(dropped(old, w)) == 0 {
				continue // unchanged, or SetPeer changes it in place
			}
			// Gone, or its MAC or some address changed: SetPeer would
			// leave the old entries.
			err := dataplane.DeletePeer(n, old)
			note("delete", eid, old, err)
			if err == nil {
				delete(have, eid)
			}
		}
		for eid, w := range want {
			if old, ok := have[eid]; ok && samePeer(old, w) {
				continue
			}
			err := dataplane.SetPeer(n, w)
			note("set", eid, w, err)
			if err == nil {
				have[eid] = w
			}
		}
		return nil
	}); err != nil {
		failed = true
		d.log.Warn("program peers", "network", nid, "err", err)
	}
	if failed {
		d.dirty[nid] = true
	}
}

// errNotDeleted says that a network's cluster record is there after all
// (its put not seen yet), or that its host record changed: nothing to
// remove.
var errNotDeleted = errors.New("not deleted")

// removeDeleted removes this host's part of network nid, whose cluster
// record is gone (state.deleted): what the plugin's DeleteNetwork removes
// on its own host, that is its links, its firewall state and its host
// record, then forgets it. Under the host lock, it first reads both
// records again and goes on only if the cluster record is absent and the
// host record is there and readable; it deletes the host record only if
// it still holds what it removed, in a transaction that sees the cluster
// record still absent. An etcd error removes nothing and marks the
// network for a retry. The host lock keeps a plugin's CreateNetwork of
// the network from writing the host record between the reads and the
// delete.
func (d *Daemon) removeDeleted(nid string) error {
	clusterKey := records.StorePrefix + records.NetworkKey(nid)
	hostKey := storePrefixes(d.cfg.Host)[spaceHostNetworks] + nid
	var h records.HostNetwork
	err := d.underHostLock(func() error {
		var raw []byte
		err := d.store.View(func(tx store.Tx) error {
			if _, err := tx.Get(clusterKey); err == nil {
				return errNotDeleted
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			var err error
			raw, err = tx.Get(hostKey)
			return err
		})
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return fmt.Errorf("host record: %w", err)
		}
		if err := d.cfg.InNetNS(func() error { return d.tearDown(nid, &h) }); err != nil {
			return err
		}
		return d.store.Update(func(tx store.Tx) error {
			if _, err := tx.Get(clusterKey); err == nil {
				return errNotDeleted
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			cur, err := tx.Get(hostKey)
			if err != nil {
				return err
			}
			if !bytes.Equal(cur, raw) {
				return errNotDeleted
			}
			return tx.Delete(hostKey)
		})
	})
	switch {
	case errors.Is(err, errNotDeleted):
		d.log.Debug("network not deleted after all", "network", nid)
		delete(d.dirty, nid)
		return nil
	case errors.Is(err, store.ErrNotFound):
		// The host record went meanwhile: the plugin removed it.
		delete(d.st.hostNets, nid)
		d.forget(nid)
		return nil
	case err != nil:
		d.dirty[nid] = true
		return fmt.Errorf("remove deleted network %s: %w", nid, err)
	}
	delete(d.st.hostNets, nid)
	d.forget(nid)
	d.metrics.networksRemoved.Inc()
	d.log.Info("removed a deleted network from this host", "network", nid, "name", h.Name, "bridge", h.Bridge, "vxlan", h.VXLAN)
	return nil
}

// tearDown removes network nid's firewall state and links here, as the
// plugin's DeleteNetwork does on its host.
func (d *Daemon) tearDown(nid string, h *records.HostNetwork) error {
	return overlay.RemoveHostState(nid, h, d.firewall)
}

func (d *Daemon) firewall() (*firewall.Firewall, error) {
	if d.fw == nil {
		fw, err := firewall.New()
		if err != nil {
			return nil, err
		}
		d.fw = fw
	}
	return d.fw, nil
}

func (d *Daemon) updateGauges() {
	total := 0
	for _, peers := range d.programmed {
		total += len(peers)
	}
	d.metrics.peers.Set(float64(total))
	d.metrics.networks.Set(float64(len(d.programmed)))
}

// keepRegistered registers the host, and registers it again whenever its
// lease is lost, until ctx ends. The lease is left to expire then: a
// daemon restarted within the TTL is never taken for gone.
func (d *Daemon) keepRegistered(ctx context.Context) {
	bo := newBackoff()
	rec := cnm.HostRecord{Name: d.cfg.Host, Address: d.cfg.UnderlayAddress.String()}
	for ctx.Err() == nil {
		reg, err := cluster.Register(ctx, d.store, rec, d.cfg.LeaseTTL)
		d.health.registered(err)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := bo.next()
			if errors.Is(err, cluster.ErrAddressTaken) {
				// Not etcd's fault: the operator's to fix. Tried again,
				// as the other host may go.
				d.log.Error("register: not registered", "err", err, "retry", wait.String())
			} else {
				d.metrics.etcdErrors.Inc()
				d.log.Warn("register", "err", err, "retry", wait.String())
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		bo.reset()
		d.metrics.registered.Set(1)
		d.log.Info("registered", "address", rec.Address)
		select {
		case <-ctx.Done():
			return
		case <-reg.Done():
		}
		d.metrics.registered.Set(0)
		if ctx.Err() == nil {
			d.log.Warn("lease lost: registering again")
		}
	}
}

// backoff is a jittered exponential backoff.
type backoff struct{ cur time.Duration }

func newBackoff() *backoff { return &backoff{cur: minBackoff} }

func (b *backoff) reset() { b.cur = minBackoff }

func (b *backoff) next() time.Duration {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, maxBackoff)
	return d
}
