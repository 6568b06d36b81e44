// Command profmain is a profiling copy of cnm-bridge for the benchmark
// harness: the same packages (pkg/cnm, pkg/store, pkg/drivers/bridge,
// pkg/plugin), with ADD and DEL timed phase by phase. It does what
// pkg/plugin's ADD and DEL do — parse the request, open the store,
// register the bridge driver, run the controller's verb, print the
// result, close the store — through their exported API, with the store
// and the driver wrapped to time each call. CHECK, GC and STATUS are
// pkg/plugin's own.
//
// With $CNMBENCH_PHASES set, it appends one JSON line per invocation to
// that file: the instant main began and the timed spans (offsets from
// it). With $CNMBENCH_CPUPROFILE set, it writes a CPU profile (sampled at
// 1 kHz) to that path with its pid appended.
//
// It is not shipped and not a test; the harness builds it in a temp dir.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/bridge"
	"github.com/cnmnet/cnmnet/pkg/plugin"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Span is one timed call, offsets in µs from main's start. For a store
// transaction, FnUs is the time in the transaction's function; the rest
// of the span is bbolt's begin and commit (write and fdatasync).
type Span struct {
	Name    string `json:"name"`
	StartUs int64  `json:"start_us"`
	EndUs   int64  `json:"end_us"`
	FnUs    int64  `json:"fn_us,omitempty"`
}

// Record is what one invocation writes.
type Record struct {
	Command     string `json:"command"`
	MainUnixNs  int64  `json:"main_unix_ns"`
	ExitUs      int64  `json:"exit_us"`
	Spans       []Span `json:"spans"`
	CPUProfile  string `json:"cpu_profile,omitempty"`
	Error       string `json:"error,omitempty"`
	GoMaxProcs  int    `json:"gomaxprocs"`
	NumGC       uint32 `json:"num_gc"`
	HeapAllocKB uint64 `json:"heap_alloc_kib"`
}

type recorder struct {
	start time.Time
	mu    sync.Mutex
	rec   Record
}

func (r *recorder) since(t time.Time) int64 { return t.Sub(r.start).Microseconds() }

func (r *recorder) span(name string, start time.Time, fn time.Duration) {
	end := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Spans = append(r.rec.Spans, Span{Name: name, StartUs: r.since(start), EndUs: r.since(end), FnUs: fn.Microseconds()})
}

func main() {
	r := &recorder{start: time.Now()}
	r.rec.MainUnixNs = r.start.UnixNano()
	r.rec.Command = os.Getenv("CNI_COMMAND")
	r.rec.GoMaxProcs = runtime.GOMAXPROCS(0)
	if p := os.Getenv("CNMBENCH_CPUPROFILE"); p != "" {
		path := fmt.Sprintf("%s.%d", p, os.Getpid())
		if f, err := os.Create(path); err == nil {
			// Ahead of StartCPUProfile, which then keeps this rate (and
			// says so on stderr).
			runtime.SetCPUProfileRate(1000)
			if pprof.StartCPUProfile(f) == nil {
				r.rec.CPUProfile = path
				defer f.Close()
			}
		}
	}
	funcs := plugin.Funcs(bridge.Register)
	funcs.Add = func(args *skel.CmdArgs) error {
		return r.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
			res, err := c.Add(ctx, req)
			if err != nil {
				return err
			}
			t := time.Now()
			err = types.PrintResult(res, req.Conf.CNIVersion)
			r.span("print result", t, 0)
			return err
		})
	}
	funcs.Del = func(args *skel.CmdArgs) error {
		return r.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
			return c.Del(ctx, req)
		})
	}
	err := skel.PluginMainFuncsWithError(funcs, plugin.SupportedVersions, "cnm-bridge (cnmnet, profiling copy)")
	if r.rec.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	r.rec.NumGC, r.rec.HeapAllocKB = m.NumGC, m.HeapAlloc/1024
	if err != nil {
		r.rec.Error = err.Error()
	}
	r.rec.ExitUs = r.since(time.Now())
	if out := os.Getenv("CNMBENCH_PHASES"); out != "" {
		if b, jerr := json.Marshal(&r.rec); jerr == nil {
			if f, ferr := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); ferr == nil {
				_, _ = f.Write(append(b, '\n'))
				_ = f.Close()
			}
		}
	}
	if err != nil {
		if perr := err.Print(); perr != nil {
			fmt.Fprintln(os.Stderr, "error writing error JSON to stdout:", perr)
		}
		os.Exit(1)
	}
}

// run is pkg/plugin's run with timing: parse the request, open the
// store, build the controller, call verb, and turn a failure into a CNI
// error.
func (r *recorder) run(args *skel.CmdArgs, verb func(context.Context, *cnm.Controller, *cnm.Request) error) error {
	r.span("runtime init + skel (env, stdin, version)", r.start, 0)
	t := time.Now()
	conf, err := cnm.LoadNetConf(args.StdinData)
	if err != nil {
		return cnm.AsCNIError(err)
	}
	a, err := cnm.ParseArgs(args.Args)
	if err != nil {
		return cnm.AsCNIError(err)
	}
	req := &cnm.Request{Conf: conf, Args: a, ContainerID: args.ContainerID, NetNS: args.Netns,
		IfName: args.IfName, Path: args.Path, RawArgs: args.Args}
	r.span("parse config", t, 0)
	t = time.Now()
	s, err := store.Open(conf.DataDir, store.Options{})
	r.span("store open (flock, mmap, schema)", t, 0)
	if err != nil {
		return cnm.AsCNIError(err)
	}
	defer func() {
		t := time.Now()
		_ = s.Close()
		r.span("store close", t, 0)
	}()
	c := cnm.New(&timedStore{Store: s, r: r, label: "core"})
	if err := bridge.Register(&timedRegisterer{c: c, raw: s, r: r}); err != nil {
		return cnm.AsCNIError(err)
	}
	t = time.Now()
	err = verb(context.Background(), c, req)
	r.span("verb "+r.rec.Command, t, 0)
	if err != nil {
		return cnm.AsCNIError(err)
	}
	return nil
}

// timedStore times each transaction, and the function inside it.
type timedStore struct {
	store.Store
	r     *recorder
	label string
}

func (s *timedStore) View(fn func(store.Tx) error) error {
	t := time.Now()
	var in time.Duration
	err := s.Store.View(func(tx store.Tx) error {
		t0 := time.Now()
		defer func() { in = time.Since(t0) }()
		return fn(tx)
	})
	s.r.span(s.label+" View", t, in)
	return err
}

func (s *timedStore) Update(fn func(store.Tx) error) error {
	return s.timed("Update", s.Store.Update, fn)
}

// UpdateVolatile times a volatile Update, as the plugin makes it.
func (s *timedStore) UpdateVolatile(fn func(store.Tx) error) error {
	return s.timed("UpdateVolatile", func(fn func(store.Tx) error) error { return store.UpdateVolatile(s.Store, fn) }, fn)
}

func (s *timedStore) timed(what string, update func(func(store.Tx) error) error, fn func(store.Tx) error) error {
	t := time.Now()
	var in time.Duration
	err := update(func(tx store.Tx) error {
		t0 := time.Now()
		defer func() { in = time.Since(t0) }()
		return fn(tx)
	})
	s.r.span(s.label+" "+what, t, in)
	return err
}

// timedRegisterer registers the driver wrapped, and gives it a timed
// store: the same key space Controller.DriverStore gives.
type timedRegisterer struct {
	c   *cnm.Controller
	raw store.Store
	r   *recorder
}

func (t *timedRegisterer) RegisterDriver(name string, d driverapi.Driver, cap driverapi.Capability) error {
	return t.c.RegisterDriver(name, &timedDriver{Driver: d, r: t.r}, cap)
}

func (t *timedRegisterer) DriverStore(name string) store.Store {
	return &timedStore{Store: store.Prefixed(t.raw, "drivers/"+name+"/"), r: t.r, label: "driver"}
}

func (t *timedRegisterer) DriverHostStore(name string) store.Store {
	return &timedStore{Store: store.Prefixed(t.raw, "hostdrivers/"+name+"/"), r: t.r, label: "driver"}
}

// timedDriver times the driver's calls (the core's ADD and DEL use no
// optional driver interface).
type timedDriver struct {
	driverapi.Driver
	r *recorder
}

func (d *timedDriver) CreateNetwork(nid string, n driverapi.NetworkInfo) error {
	defer d.r.span("driver CreateNetwork", time.Now(), 0)
	return d.Driver.CreateNetwork(nid, n)
}

func (d *timedDriver) DeleteNetwork(nid string) error {
	defer d.r.span("driver DeleteNetwork", time.Now(), 0)
	return d.Driver.DeleteNetwork(nid)
}

func (d *timedDriver) CreateEndpoint(nid, eid string, ep driverapi.EndpointInfo, o driverapi.Options) error {
	defer d.r.span("driver CreateEndpoint", time.Now(), 0)
	return d.Driver.CreateEndpoint(nid, eid, ep, o)
}

func (d *timedDriver) DeleteEndpoint(nid, eid string) error {
	defer d.r.span("driver DeleteEndpoint", time.Now(), 0)
	return d.Driver.DeleteEndpoint(nid, eid)
}

func (d *timedDriver) Join(nid, eid, key string, ji driverapi.JoinInfo, o driverapi.Options) error {
	defer d.r.span("driver Join", time.Now(), 0)
	return d.Driver.Join(nid, eid, key, ji, o)
}

func (d *timedDriver) Leave(nid, eid string) error {
	defer d.r.span("driver Leave", time.Now(), 0)
	return d.Driver.Leave(nid, eid)
}
