package overlayd

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cnmnet/cnmnet/pkg/buildinfo"
	"github.com/cnmnet/cnmnet/pkg/cluster"
)

const namespace = "cnm_overlayd"

// metrics are the daemon's, in a registry of its own so that two
// daemons in one test process do not share them.
type metrics struct {
	reg              *prometheus.Registry
	peers            prometheus.Gauge
	networks         prometheus.Gauge
	registered       prometheus.Gauge
	reconciles       *prometheus.CounterVec
	reconcileSeconds prometheus.Histogram
	reconcileEntries *prometheus.CounterVec
	peerUpdates      *prometheus.CounterVec
	watchRestarts    *prometheus.CounterVec
	etcdErrors       prometheus.Counter
	networksRemoved  prometheus.Counter
	lastReconcile    prometheus.Gauge
}

func newMetrics(h *health) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "peers_programmed",
			Help: "Remote endpoints programmed on this host, over all its overlay networks."}),
		networks: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "networks",
			Help: "Overlay networks on this host (both records present)."}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "registered",
			Help: "1 while this host's lease in the cluster store is kept alive."}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reconciles_total",
			Help: "Full reconciles of every network against a listing, by result (ok, error)."}, []string{"result"}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "reconcile_duration_seconds",
			Help: "Duration of a full reconcile: listing and programming.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		reconcileEntries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reconcile_entries_total",
			Help: "Forwarding entries a full reconcile found drifted, by change (added, removed)."}, []string{"change"}),
		peerUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "peer_updates_total",
			Help: "Peers programmed from watch events, by op (set, delete) and result (ok, error)."}, []string{"op", "result"}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "watch_restarts_total",
			Help: "Watches ended for a new listing, by reason (resync, compacted, error)."}, []string{"reason"}),
		etcdErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "etcd_errors_total",
			Help: "Failed etcd calls: listings, watches, registrations."}),
		networksRemoved: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "networks_removed_total",
			Help: "Networks deleted on another host whose links, firewall state and host record this daemon removed here."}),
		lastReconcile: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "last_reconcile_timestamp_seconds",
			Help: "Unix time of the last successful full reconcile."}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "last_reconcile_age_seconds",
		Help: "Seconds since the last successful full reconcile (-1 before the first): a bound on how stale the programmed entries can be."},
		func() float64 {
			t, _ := h.lastReconcile()
			if t.IsZero() {
				return -1
			}
			return time.Since(t).Seconds()
		})
	info := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help: "The build of the daemon.", ConstLabels: prometheus.Labels{"version": buildinfo.Version(), "commit": buildinfo.Commit()}})
	info.Set(1)
	m.reg.MustRegister(m.peers, m.networks, m.registered, m.reconciles, m.reconcileSeconds, m.reconcileEntries,
		m.peerUpdates, m.watchRestarts, m.etcdErrors, m.networksRemoved, m.lastReconcile, age, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Labelled series exist from the start, so that a rate over them
	// needs no first event.
	for _, r := range []string{"ok", "error"} {
		m.reconciles.WithLabelValues(r)
		for _, op := range []string{"set", "delete"} {
			m.peerUpdates.WithLabelValues(op, r)
		}
	}
	for _, c := range []string{"added", "removed"} {
		m.reconcileEntries.WithLabelValues(c)
	}
	for _, r := range []string{"resync", "compacted", "error"} {
		m.watchRestarts.WithLabelValues(r)
	}
	return m
}

// health is what /healthz answers from.
type health struct {
	mu          sync.Mutex
	reconciled  time.Time // last successful full reconcile
	reconcileOK bool      // the last full reconcile succeeded
	reconcileEr string
	etcdOK      time.Time // etcd last answered
	registerEr  string    // why the host is not registered, "" when it is or may be
}

// registered notes the outcome of a registration: a refused address is
// a problem until a registration succeeds; etcd's errors are judged by
// etcdOK.
func (h *health) registered(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.registerEr = ""
	if errors.Is(err, cluster.ErrAddressTaken) {
		h.registerEr = err.Error()
	}
}

func (h *health) lastReconcile() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reconciled, h.reconcileOK
}

func (h *health) reconcileDone(at time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reconcileOK = err == nil
	if err == nil {
		h.reconciled, h.reconcileEr = at, ""
	} else {
		h.reconcileEr = err.Error()
	}
}

func (h *health) etcdAnswered(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.etcdOK = at
}

// problem is why the daemon is unhealthy, "" when it is not: the last
// full reconcile failed (or none ran yet), or etcd has not answered
// within window.
func (h *health) problem(now time.Time, window time.Duration) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.registerEr != "":
		return "not registered: " + h.registerEr
	case h.reconciled.IsZero() && h.reconcileEr == "":
		return "no reconcile yet"
	case !h.reconcileOK:
		return "last reconcile failed: " + h.reconcileEr
	case h.etcdOK.IsZero() || now.Sub(h.etcdOK) > window:
		return fmt.Sprintf("etcd has not answered for %v (since %s)", now.Sub(h.etcdOK).Round(time.Second), h.etcdOK.Format(time.RFC3339))
	}
	return ""
}

// Handler serves /metrics and /healthz.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p := d.health.problem(time.Now(), d.healthWindow()); p != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, p)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
