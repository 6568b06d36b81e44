package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/bridge"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// errorLog keeps the count and the first few messages of a phase's errors.
type errorLog struct {
	mu       sync.Mutex
	Count    int      `json:"count"`
	Messages []string `json:"messages,omitempty"`
}

func (l *errorLog) add(err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Count++
	if len(l.Messages) < 5 {
		l.Messages = append(l.Messages, err.Error())
	}
	logf("error: %v", err)
}

// order alternates which system goes first, so that drift and any
// after-effect of one system's run hit both alike.
func order(i int) []string {
	if i%2 == 0 {
		return []string{sysCNM, sysRef}
	}
	return []string{sysRef, sysCNM}
}

// SeqSystem is one system's sequential latencies.
type SeqSystem struct {
	Label  string   `json:"label"`
	Add    Latency  `json:"add"`
	Del    Latency  `json:"del"`
	AddDel Latency  `json:"add_del"`
	Errors errorLog `json:"errors"`
	// Leftover veths in the host namespace and reservations in the
	// system's IPAM after the phase (0 expected).
	LeftoverVeths        int `json:"leftover_veths"`
	LeftoverReservations int `json:"leftover_reservations"`
}

// SeqResult is item 1: sequential ADD then DEL of one container at a time.
type SeqResult struct {
	Scenario   string                `json:"scenario"`
	Subnet     string                `json:"subnet"`
	Containers int                   `json:"containers_per_system"`
	Warmup     int                   `json:"warmup_pairs_per_system"`
	Systems    map[string]*SeqSystem `json:"systems"`
}

// sequential runs n ADD/DEL pairs per system, interleaved pair by pair.
func (h *harness) sequential(ports bool) (*SeqResult, map[string]*env, error) {
	scen := "plain"
	if ports {
		scen = "port"
	}
	const subnet = "10.88.0.0/24"
	res := &SeqResult{Scenario: scen, Subnet: subnet, Containers: h.opt.seqN, Warmup: h.opt.warmup,
		Systems: map[string]*SeqSystem{}}
	envs := map[string]*env{}
	for _, sys := range systems {
		e, err := h.newEnv(envSpec{sys: sys, net: "seq-" + scen + "-" + sys, subnet: subnet, ports: ports})
		if err != nil {
			return nil, nil, err
		}
		envs[sys] = e
		res.Systems[sys] = &SeqSystem{Label: e.label}
	}
	adds := map[string][]float64{}
	dels := map[string][]float64{}
	sums := map[string][]float64{}
	total := h.opt.warmup + h.opt.seqN
	for i := range total {
		for _, sys := range order(i) {
			e, r := envs[sys], res.Systems[sys]
			id := fmt.Sprintf("seq-%s-%s-%04d", scen, sys, i)
			c := h.pool.get(i)
			port := 0
			if ports {
				port = 20000 + i
			}
			da, err := e.add(id, c, port)
			r.Errors.add(err)
			dd, derr := e.del(id, c, port)
			r.Errors.add(derr)
			if err != nil || derr != nil {
				if r.Errors.Count > 10 {
					return nil, nil, fmt.Errorf("%s: too many errors", e.label)
				}
				continue
			}
			if i >= h.opt.warmup {
				adds[sys] = append(adds[sys], ms(da))
				dels[sys] = append(dels[sys], ms(dd))
				sums[sys] = append(sums[sys], ms(da+dd))
			}
		}
		if (i+1)%50 == 0 {
			logf("sequential %s: %d/%d pairs per system", scen, i+1, total)
		}
	}
	for _, sys := range systems {
		r := res.Systems[sys]
		r.Add, r.Del, r.AddDel = summarise(adds[sys]), summarise(dels[sys]), summarise(sums[sys])
		left, err := envs[sys].leftovers()
		if err != nil {
			return nil, nil, err
		}
		r.LeftoverVeths = len(left)
		if r.LeftoverReservations, err = envs[sys].reservations(); err != nil {
			return nil, nil, err
		}
	}
	return res, envs, nil
}

// BurstSystem is one system's burst at one width.
type BurstSystem struct {
	Label     string   `json:"label"`
	AddWallMs float64  `json:"add_wall_ms"`
	Add       Latency  `json:"add"`
	AddErrors errorLog `json:"add_errors"`
	DelWallMs float64  `json:"del_wall_ms"`
	Del       Latency  `json:"del"`
	DelErrors errorLog `json:"del_errors"`
	// AddCPUMs is the CPU time (user + system) of the plugin processes
	// of the ADD burst, and of what they executed; AddIdle is the share
	// of the machine's CPU time that was idle during it. Together they
	// say whether a burst is bound by CPU or waits for something else.
	AddCPUMs float64 `json:"add_cpu_ms,omitempty"`
	AddIdle  float64 `json:"add_idle,omitempty"`
}

// BurstResult is item 2 at one width.
type BurstResult struct {
	Width   int                     `json:"width"`
	Size    int                     `json:"size"`
	Systems map[string]*BurstSystem `json:"systems"`
}

// bursts runs, per width, size ADDs with at most width in flight (a pool
// of width goroutines, each exec'ing from its own locked thread in the
// host namespace), then DELs them all the same way; systems alternate.
func (h *harness) bursts() ([]*BurstResult, *BurstLock, error) {
	const subnet = "10.89.0.0/24"
	envs := map[string]*env{}
	for _, sys := range systems {
		e, err := h.newEnv(envSpec{sys: sys, net: "burst-" + sys, subnet: subnet})
		if err != nil {
			return nil, nil, err
		}
		envs[sys] = e
		// The network's first ADD (bridge, rules) is not part of a burst.
		for i := range 3 {
			id := fmt.Sprintf("burst-warm-%s-%d", sys, i)
			if _, err := e.add(id, h.pool.get(i), 0); err != nil {
				return nil, nil, err
			}
			if _, err := e.del(id, h.pool.get(i), 0); err != nil {
				return nil, nil, err
			}
		}
	}
	var out []*BurstResult
	for wi, width := range h.opt.burstWidths {
		br := &BurstResult{Width: width, Size: h.opt.burstSize, Systems: map[string]*BurstSystem{}}
		for _, sys := range order(wi) {
			e := envs[sys]
			r := &BurstSystem{Label: e.label}
			ids := make([]string, h.opt.burstSize)
			for j := range ids {
				ids[j] = fmt.Sprintf("burst-%s-w%d-%03d", sys, width, j)
			}
			before := takeCPU()
			wall, lat := runParallel(width, len(ids), func(j int) (time.Duration, error) {
				return e.add(ids[j], h.pool.get(j), 0)
			}, &r.AddErrors)
			r.AddWallMs, r.Add = ms(wall), summarise(lat)
			r.AddCPUMs, r.AddIdle = takeCPU().since(before)
			wall, lat = runParallel(width, len(ids), func(j int) (time.Duration, error) {
				return e.del(ids[j], h.pool.get(j), 0)
			}, &r.DelErrors)
			r.DelWallMs, r.Del = ms(wall), summarise(lat)
			br.Systems[sys] = r
			logf("burst %d-wide %s: ADD wall %.0f ms (%d errors, max %.0f ms, CPU %.0f ms, %.0f%% idle), DEL wall %.0f ms",
				width, e.label, r.AddWallMs, r.AddErrors.Count, r.Add.Max, r.AddCPUMs, 100*r.AddIdle, r.DelWallMs)
		}
		out = append(out, br)
	}
	var lock *BurstLock
	if h.profDir != "" && len(h.opt.burstWidths) > 0 {
		w := h.opt.burstWidths[len(h.opt.burstWidths)-1]
		logf("burst %d-wide with the profiling copy of cnm-bridge: store lock", w)
		var err error
		if lock, err = h.burstLock(envs[sysCNM], w); err != nil {
			return nil, nil, err
		}
	}
	for _, sys := range systems {
		if left, err := envs[sys].leftovers(); err != nil || len(left) > 0 {
			return nil, nil, fmt.Errorf("burst %s: leftover veths %v (%v)", sys, left, err)
		}
	}
	return out, lock, nil
}

// runParallel runs op(0..n-1) from width goroutines and returns the wall
// time and the latencies of the successful calls.
func runParallel(width, n int, op func(int) (time.Duration, error), errs *errorLog) (time.Duration, []float64) {
	jobs := make(chan int, n)
	for j := range n {
		jobs <- j
	}
	close(jobs)
	var mu sync.Mutex
	var lat []float64
	var wg sync.WaitGroup
	start := time.Now()
	for range width {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				d, err := op(j)
				errs.add(err)
				if err == nil {
					mu.Lock()
					lat = append(lat, ms(d))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), lat
}

// ScaleSystem is one system at one scale level.
type ScaleSystem struct {
	Label     string  `json:"label"`
	Endpoints int     `json:"endpoints_present"`
	Add       Latency `json:"add"`
	Del       Latency `json:"del"`
	// StoreBytes is the size of the state the system keeps: state.db for
	// cnm-bridge, the sum of host-local's files for the reference;
	// StoreDiskBytes is what the file system allocates for it.
	StoreBytes     int64    `json:"store_bytes"`
	StoreDiskBytes int64    `json:"store_disk_bytes"`
	StoreFiles     int      `json:"store_files"`
	PrefillSeconds float64  `json:"prefill_seconds"`
	Errors         errorLog `json:"errors"`
}

// ScaleLevel is item 3 at one number of endpoints present.
type ScaleLevel struct {
	Endpoints int                     `json:"endpoints"`
	Systems   map[string]*ScaleSystem `json:"systems"`
}

// scale measures ADD and DEL with 100, 1,000 and 10,000 endpoints already
// in a /16 network, prefilled without the plugins (see prefillCNM and
// prefillHostLocal).
func (h *harness) scale() ([]*ScaleLevel, error) {
	subnets := map[string]string{sysCNM: "10.90.0.0/16", sysRef: "10.91.0.0/16"}
	envs := map[string]*env{}
	filled := map[string]int{}
	for _, sys := range systems {
		e, err := h.newEnv(envSpec{sys: sys, net: "scale-" + sys, subnet: subnets[sys]})
		if err != nil {
			return nil, err
		}
		envs[sys] = e
		// One real ADD creates the network (and its store or directory).
		for i := range 3 {
			id := fmt.Sprintf("scale-warm-%s-%d", sys, i)
			if _, err := e.add(id, h.pool.get(i), 0); err != nil {
				return nil, err
			}
			if _, err := e.del(id, h.pool.get(i), 0); err != nil {
				return nil, err
			}
		}
	}
	var out []*ScaleLevel
	for li, level := range h.opt.scaleLevels {
		lv := &ScaleLevel{Endpoints: level, Systems: map[string]*ScaleSystem{}}
		for _, sys := range order(li) {
			e := envs[sys]
			r := &ScaleSystem{Label: e.label, Endpoints: level}
			start := time.Now()
			var err error
			if sys == sysCNM {
				err = h.prefillCNM(e, filled[sys], level)
			} else {
				err = prefillHostLocal(e, filled[sys], level)
			}
			if err != nil {
				return nil, fmt.Errorf("prefill %s to %d: %w", e.label, level, err)
			}
			r.PrefillSeconds = round3(time.Since(start).Seconds())
			filled[sys] = level
			if r.StoreBytes, r.StoreDiskBytes, r.StoreFiles, err = storeSize(e); err != nil {
				return nil, err
			}
			lv.Systems[sys] = r
			logf("scale %s: %d endpoints present (prefill %.1f s), state %d bytes", e.label, level, r.PrefillSeconds, r.StoreBytes)
		}
		adds := map[string][]float64{}
		dels := map[string][]float64{}
		for i := range h.opt.scalePairs {
			for _, sys := range order(i) {
				e, r := envs[sys], lv.Systems[sys]
				id := fmt.Sprintf("scale-%s-%d-%03d", sys, level, i)
				c := h.pool.get(i)
				da, err := e.add(id, c, 0)
				r.Errors.add(err)
				dd, derr := e.del(id, c, 0)
				r.Errors.add(derr)
				if err == nil && derr == nil {
					adds[sys] = append(adds[sys], ms(da))
					dels[sys] = append(dels[sys], ms(dd))
				}
			}
		}
		for _, sys := range systems {
			lv.Systems[sys].Add, lv.Systems[sys].Del = summarise(adds[sys]), summarise(dels[sys])
			logf("scale %s at %d: ADD median %.1f ms, DEL median %.1f ms", envs[sys].label, level,
				lv.Systems[sys].Add.P50, lv.Systems[sys].Del.P50)
		}
		out = append(out, lv)
	}
	return out, nil
}

// prefillCNM brings the network of e from have to want endpoints through
// the project's own core, in-process, from the host namespace: a
// controller over the plugin's store with the bridge driver registered,
// reserving persistent endpoints (cnm.Controller.ReserveEndpoint, what
// `cnmctl endpoint create` does). Each gets an address from the built-in
// IPAM and a MAC, in the same store transactions an ADD uses; the bridge
// driver creates nothing on the host for an endpoint no sandbox joined.
func (h *harness) prefillCNM(e *env, have, want int) error {
	return e.hostNS.Do(func(ns.NetNS) error {
		s, err := store.Open(e.dataDir, store.Options{})
		if err != nil {
			return err
		}
		defer s.Close()
		c := cnm.New(s)
		if err := bridge.Register(c); err != nil {
			return err
		}
		for k := have; k < want; k++ {
			if _, err := c.ReserveEndpoint(context.Background(), e.net, fmt.Sprintf("fill-%05d", k), nil, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// prefillHostLocal writes host-local's reservations for endpoints have..want
// directly, in its on-disk format (plugins/ipam/host-local/backend/disk):
// in <dataDir>/<network>/, one file per address named after it, holding
// "<container ID>\r\n<ifname>", and last_reserved_ip.0 holding the last
// address handed out in range set 0. Addresses go up from the first
// after the gateway, skipping any that is taken.
func prefillHostLocal(e *env, have, want int) error {
	dir := filepath.Join(e.dataDir, e.net)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, subnet, err := net.ParseCIDR(e.subnet)
	if err != nil {
		return err
	}
	base := subnet.IP.To4()
	ipAt := func(k int) net.IP {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		v += uint32(k)
		return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	var last net.IP
	k := 2 // .0.0 is the network, .0.1 the gateway
	for n := have; n < want; k++ {
		ip := ipAt(k)
		path := filepath.Join(dir, ip.String())
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f, "fill-%05d\r\neth0", n)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		last = ip
		n++
	}
	if last == nil {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "last_reserved_ip.0"), []byte(last.String()), 0o600)
}

// storeSize measures what a system keeps on disk for its network.
func storeSize(e *env) (size, disk int64, files int, err error) {
	if e.sys == sysCNM {
		var st os.FileInfo
		if st, err = os.Stat(filepath.Join(e.dataDir, store.FileName)); err != nil {
			return 0, 0, 0, err
		}
		return st.Size(), diskBytes(st), 1, nil
	}
	dir := filepath.Join(e.dataDir, e.net)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, en := range entries {
		st, err := en.Info()
		if err != nil {
			return 0, 0, 0, err
		}
		size += st.Size()
		disk += diskBytes(st)
		files++
	}
	if st, err := os.Stat(dir); err == nil {
		disk += diskBytes(st) // the directory's own blocks grow with its entries
	}
	return size, disk, files, nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
