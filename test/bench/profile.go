package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Profile is where the time of a cnm-bridge ADD and DEL goes, measured
// with profmain (a copy of cnm-bridge timed phase by phase) on the
// sequential phase's network, plus what bounds any CNI plugin: the cost
// of starting a process.
type Profile struct {
	Runs int `json:"runs"`
	// StartMs is the median wall time of a process that does next to
	// nothing: /bin/true, and each plugin answering VERSION.
	StartMs map[string]float64 `json:"process_start_ms"`
	// StartCPUMs and StartFaults are the same processes' CPU time and
	// minor page faults (wait4, medians).
	StartCPUMs  map[string]float64 `json:"process_start_cpu_ms"`
	StartFaults map[string]float64 `json:"process_start_minor_faults"`
	// RealAddMs and ProfAddMs compare the shipped binary with the
	// profiling copy under the same exec (medians), to show that the
	// timing does not distort the total.
	RealAddMs float64 `json:"real_add_ms"`
	ProfAddMs float64 `json:"profmain_add_ms"`
	RealDelMs float64 `json:"real_del_ms"`
	ProfDelMs float64 `json:"profmain_del_ms"`
	// CPUMs is user+system CPU time per ADD of the real binary (median).
	AddCPUMs float64       `json:"add_cpu_ms"`
	Add      []Segment     `json:"add_segments"`
	Del      []Segment     `json:"del_segments"`
	CPUTop   []string      `json:"cpu_profile_top"`
	Syscalls []SyscallStat `json:"add_syscalls"`
	Notes    []string      `json:"notes,omitempty"`
	Veth     *VethCost     `json:"veth"`
	// Init is the package initialisation of each plugin binary
	// (GODEBUG=inittrace=1, VERSION, median of 5): total and the
	// largest packages; BinaryBytes the size of each binary.
	InitMs      map[string]float64 `json:"init_ms"`
	InitTop     map[string]string  `json:"init_top"`
	BinaryBytes map[string]int64   `json:"binary_bytes"`
	// BurstLock is filled in by the burst phase.
	BurstLock *BurstLock `json:"burst_lock,omitempty"`
}

// Segment is one phase of an invocation: median over the runs.
type Segment struct {
	Name  string  `json:"name"`
	Ms    float64 `json:"ms"`
	Depth int     `json:"depth"`
}

// SyscallStat is one row of strace -c -w for one ADD.
type SyscallStat struct {
	Name    string  `json:"name"`
	Calls   int     `json:"calls"`
	TotalMs float64 `json:"total_ms"`
}

type phaseRecord struct {
	Command    string `json:"command"`
	MainUnixNs int64  `json:"main_unix_ns"`
	ExitUs     int64  `json:"exit_us"`
	Spans      []struct {
		Name    string `json:"name"`
		StartUs int64  `json:"start_us"`
		EndUs   int64  `json:"end_us"`
		FnUs    int64  `json:"fn_us"`
	} `json:"spans"`
	Error string `json:"error"`
}

func (h *harness) profile(e *env) (*Profile, error) {
	p := &Profile{Runs: h.opt.profileRuns, StartMs: map[string]float64{}, StartCPUMs: map[string]float64{},
		StartFaults: map[string]float64{}}
	logf("profile: building the profiling copy of cnm-bridge")
	profDir := filepath.Join(h.tmp, "profbin")
	build := exec.Command("go", "build", "-o", filepath.Join(profDir, "cnm-bridge"), "./test/bench/profmain")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build builds cnm-bridge
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build profmain: %w", err)
	}
	h.profDir = profDir
	logf("profile: process start")

	// The floor: starting a process, and a Go program that does nothing,
	// built with the same toolchain.
	hello := filepath.Join(h.tmp, "hello", "hello")
	if err := os.MkdirAll(filepath.Dir(hello), 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(filepath.Dir(hello), "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"{}\\n\") }\n"), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command("go", "build", "-o", hello, src).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build hello: %w: %s", err, out)
	}
	for name, bin := range map[string]string{
		"/bin/true":                  "/bin/true",
		"Go hello world":             hello,
		"cnm-bridge VERSION":         filepath.Join(h.cnmBin, "cnm-bridge"),
		"bridge VERSION":             filepath.Join(h.refBin, "bridge"),
		"host-local VERSION":         filepath.Join(h.refBin, "host-local"),
		"portmap VERSION":            filepath.Join(h.refBin, "portmap"),
		"iptables-restore --version": "iptables-restore",
	} {
		var walls, cpu, faults []float64
		for range 20 {
			args := []string{}
			if strings.HasPrefix(name, "iptables") {
				args = []string{"--version"}
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
			t := time.Now()
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			walls = append(walls, ms(time.Since(t)))
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				cpu = append(cpu, ms(time.Duration(ru.Utime.Nano()+ru.Stime.Nano())))
				faults = append(faults, float64(ru.Minflt))
			}
		}
		p.StartMs[name] = median(walls)
		p.StartCPUMs[name], p.StartFaults[name] = median(cpu), median(faults)
	}

	p.InitMs, p.InitTop, p.BinaryBytes = map[string]float64{}, map[string]string{}, map[string]int64{}
	for name, bin := range map[string]string{"cnm-bridge": filepath.Join(h.cnmBin, "cnm-bridge"),
		"bridge": filepath.Join(h.refBin, "bridge"), "host-local": filepath.Join(h.refBin, "host-local")} {
		total, top, err := initTrace(bin, 5)
		if err != nil {
			return nil, err
		}
		p.InitMs[name], p.InitTop[name] = total, top
		if st, err := os.Stat(bin); err == nil {
			p.BinaryBytes[name] = st.Size()
		}
	}

	// Phases: the profiling copy and the real binary, interleaved.
	logf("profile: %d ADD/DEL pairs of the profiling copy and of the shipped binary", h.opt.profileRuns)
	phases := filepath.Join(h.tmp, "phases.jsonl")
	os.Setenv("CNMBENCH_PHASES", phases)
	px, rx := &measureExec{}, &measureExec{}
	pe, re := e.withExec(profDir, px), e.withExec(e.binDir, rx)
	var realAdd, realDel, profAdd, profDel, cpu []float64
	var execStarts []int64 // of the profiling copy's processes, in order
	for i := range h.opt.profileRuns {
		c := h.pool.get(i)
		envs := []*env{pe, re}
		if i%2 == 1 {
			envs = []*env{re, pe}
		}
		for _, x := range envs {
			id := fmt.Sprintf("prof-%d-%v", i, x == pe)
			da, err := x.add(id, c, 0)
			if err != nil {
				os.Unsetenv("CNMBENCH_PHASES")
				return nil, err
			}
			dd, err := x.del(id, c, 0)
			if err != nil {
				os.Unsetenv("CNMBENCH_PHASES")
				return nil, err
			}
			if x == pe {
				profAdd, profDel = append(profAdd, ms(da)), append(profDel, ms(dd))
			} else {
				realAdd, realDel = append(realAdd, ms(da)), append(realDel, ms(dd))
			}
		}
		for _, inv := range rx.take() {
			if inv.Command == "ADD" {
				cpu = append(cpu, inv.UserMs+inv.SysMs)
			}
		}
		for _, inv := range px.take() {
			execStarts = append(execStarts, inv.StartUnixNs)
		}
	}
	os.Unsetenv("CNMBENCH_PHASES")
	p.RealAddMs, p.RealDelMs = median(realAdd), median(realDel)
	p.ProfAddMs, p.ProfDelMs = median(profAdd), median(profDel)
	p.AddCPUMs = median(cpu)

	recs, err := readPhases(phases)
	if err != nil {
		return nil, err
	}
	// Records and exec starts are in the same order: ADD, DEL per run.
	if len(execStarts) != len(recs) {
		return nil, fmt.Errorf("profile: %d phase records for %d invocations", len(recs), len(execStarts))
	}
	var adds, dels [][]Segment
	for i, r := range recs {
		if r.Error != "" {
			return nil, fmt.Errorf("profile: %s failed: %s", r.Command, r.Error)
		}
		segs := segments(r, execStarts[i])
		if r.Command == "ADD" {
			adds = append(adds, segs)
		} else {
			dels = append(dels, segs)
		}
	}
	p.Add, p.Del = medianSegments(adds), medianSegments(dels)

	// CPU profile: separate runs, since sampling at 1 kHz costs time.
	logf("profile: CPU profile")
	prof := filepath.Join(h.tmp, "cpu.pprof")
	os.Setenv("CNMBENCH_CPUPROFILE", prof)
	for i := range h.opt.profileRuns {
		id := fmt.Sprintf("cpuprof-%d", i)
		c := h.pool.get(i)
		if _, err := pe.add(id, c, 0); err != nil {
			os.Unsetenv("CNMBENCH_CPUPROFILE")
			return nil, err
		}
		if _, err := pe.del(id, c, 0); err != nil {
			os.Unsetenv("CNMBENCH_CPUPROFILE")
			return nil, err
		}
	}
	os.Unsetenv("CNMBENCH_CPUPROFILE")
	px.take()
	files, _ := filepath.Glob(prof + ".*")
	if len(files) > 0 {
		args := append([]string{"tool", "pprof", "-top", "-nodecount=15"}, files...)
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			p.Notes = append(p.Notes, fmt.Sprintf("go tool pprof: %v", err))
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l = strings.TrimRight(l, " "); l != "" && !strings.HasPrefix(l, "File:") && !strings.HasPrefix(l, "Type:") &&
				!strings.HasPrefix(l, "Time:") && !strings.HasPrefix(l, "Build ID:") {
				p.CPUTop = append(p.CPUTop, l)
			}
		}
	}

	// Syscalls of one ADD of the real binary, by wall time (strace -f -c -w).
	logf("profile: strace -c")
	if p.Syscalls, err = h.straceSummary(e); err != nil {
		return nil, err
	}
	logf("profile: veth experiment")
	if p.Veth, err = vethExperiment(e.hostNS, h.pool.get(h.opt.burstSize-1), 20); err != nil {
		return nil, err
	}
	return p, nil
}

// VethCost compares, on this kernel, the two ways of giving a sandbox
// one end of a veth pair (medians, ms): creating the pair in the host
// namespace and moving one end (what cnm-bridge did before commit
// 0e01d2a), or creating the pair with that end in the sandbox from the
// start (what the reference bridge does, and cnm-bridge since).
type VethCost struct {
	Runs           int     `json:"runs"`
	CreateHostMs   float64 `json:"create_in_host_ms"`
	MoveMs         float64 `json:"move_end_to_sandbox_ms"`
	CreateAcrossMs float64 `json:"create_with_end_in_sandbox_ms"`
	DeleteMs       float64 `json:"delete_pair_ms"`
	// ParallelMoves is the wall time of ParallelN moves started at once
	// from as many threads: about ParallelN × MoveMs when the kernel
	// serialises them (RTNL is held across the move's RCU wait).
	ParallelN       int     `json:"parallel_n"`
	ParallelMovesMs float64 `json:"parallel_moves_wall_ms"`
}

func vethExperiment(hostNS, sandbox ns.NetNS, runs int) (*VethCost, error) {
	var createHost, move, across, del []float64
	err := hostNS.Do(func(ns.NetNS) error {
		for i := range runs {
			for k, moveIt := range []bool{i%2 == 0, i%2 != 0} {
				host, peer := fmt.Sprintf("bxh%d", 2*i+k), fmt.Sprintf("bxc%d", 2*i+k)
				v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer}
				if !moveIt {
					v.PeerNamespace = netlink.NsFd(int(sandbox.Fd()))
				}
				t := time.Now()
				if err := netlink.LinkAdd(v); err != nil {
					return fmt.Errorf("veth experiment: add: %w", err)
				}
				d := ms(time.Since(t))
				if moveIt {
					createHost = append(createHost, d)
					l, err := netlink.LinkByName(peer)
					if err != nil {
						return err
					}
					t = time.Now()
					if err := netlink.LinkSetNsFd(l, int(sandbox.Fd())); err != nil {
						return fmt.Errorf("veth experiment: move: %w", err)
					}
					move = append(move, ms(time.Since(t)))
				} else {
					across = append(across, d)
				}
				t = time.Now()
				if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}}); err != nil {
					return fmt.Errorf("veth experiment: delete: %w", err)
				}
				del = append(del, ms(time.Since(t)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	vc := &VethCost{Runs: runs, CreateHostMs: median(createHost), MoveMs: median(move),
		CreateAcrossMs: median(across), DeleteMs: median(del), ParallelN: 10}
	// Moves started together, each from its own thread in the host namespace.
	err = hostNS.Do(func(ns.NetNS) error {
		for i := range vc.ParallelN {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("bph%d", i)}, PeerName: fmt.Sprintf("bpc%d", i)}
			if err := netlink.LinkAdd(v); err != nil {
				return fmt.Errorf("veth experiment: add: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var errs errorLog
	wall, _ := runParallel(vc.ParallelN, vc.ParallelN, func(i int) (time.Duration, error) {
		return 0, hostNS.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(fmt.Sprintf("bpc%d", i))
			if err != nil {
				return err
			}
			return netlink.LinkSetNsFd(l, int(sandbox.Fd()))
		})
	}, &errs)
	vc.ParallelMovesMs = round3(ms(wall))
	err = hostNS.Do(func(ns.NetNS) error {
		for i := range vc.ParallelN {
			if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("bph%d", i)}}); err != nil {
				return err
			}
		}
		return nil
	})
	if errs.Count > 0 {
		return nil, fmt.Errorf("veth experiment: parallel moves: %v", errs.Messages)
	}
	return vc, err
}

// BurstLock is how the store lock was used during a burst of ADDs by the
// profiling copy: how long each ADD waited to open the store (bbolt's
// flock, retried every 50 ms) and held it, and how much of the burst's
// wall time the lock was held by anyone.
type BurstLock struct {
	Width      int     `json:"width"`
	Adds       int     `json:"adds"`
	WallMs     float64 `json:"wall_ms"`
	Errors     int     `json:"errors"`
	WaitMeanMs float64 `json:"lock_wait_mean_ms"`
	WaitMaxMs  float64 `json:"lock_wait_max_ms"`
	HeldMeanMs float64 `json:"lock_held_mean_ms"`
	HeldSumMs  float64 `json:"lock_held_sum_ms"`
	// BusyMs is the union of the held intervals; IdleMs the rest of the
	// span from the first ADD's start to the last one's end.
	BusyMs float64 `json:"lock_busy_ms"`
	IdleMs float64 `json:"lock_idle_ms"`
	// StartMeanMs is the mean time from exec to the store open call.
	StartMeanMs float64 `json:"start_to_open_mean_ms"`
}

// burstLock runs one burst of ADDs (then DELs) of the profiling copy on e
// and analyses the store lock from the phase records.
func (h *harness) burstLock(e *env, width int) (*BurstLock, error) {
	phases := filepath.Join(h.tmp, fmt.Sprintf("burst-phases-%d.jsonl", width))
	os.Setenv("CNMBENCH_PHASES", phases)
	defer os.Unsetenv("CNMBENCH_PHASES")
	pe := e.withExec(h.profDir, nil)
	n := h.opt.burstSize
	var errs errorLog
	wall, _ := runParallel(width, n, func(j int) (time.Duration, error) {
		return pe.add(fmt.Sprintf("lock-%d-%03d", width, j), h.pool.get(j), 0)
	}, &errs)
	os.Unsetenv("CNMBENCH_PHASES")
	_, _ = runParallel(width, n, func(j int) (time.Duration, error) {
		return pe.del(fmt.Sprintf("lock-%d-%03d", width, j), h.pool.get(j), 0)
	}, &errs)
	recs, err := readPhases(phases)
	if err != nil {
		return nil, err
	}
	bl := &BurstLock{Width: width, WallMs: round3(ms(wall)), Errors: errs.Count}
	type iv struct{ a, b int64 } // µs since the epoch
	var held []iv
	var waits, holds, starts []float64
	first, last := int64(-1), int64(0)
	for _, r := range recs {
		if r.Command != "ADD" {
			continue
		}
		base := r.MainUnixNs / 1000
		var open, close *struct {
			Name    string `json:"name"`
			StartUs int64  `json:"start_us"`
			EndUs   int64  `json:"end_us"`
			FnUs    int64  `json:"fn_us"`
		}
		for i := range r.Spans {
			switch {
			case strings.HasPrefix(r.Spans[i].Name, "store open"):
				open = &r.Spans[i]
			case r.Spans[i].Name == "store close":
				close = &r.Spans[i]
			}
		}
		if open == nil || close == nil {
			continue
		}
		bl.Adds++
		waits = append(waits, float64(open.EndUs-open.StartUs)/1000)
		holds = append(holds, float64(close.EndUs-open.EndUs)/1000)
		starts = append(starts, float64(open.StartUs)/1000)
		held = append(held, iv{base + open.EndUs, base + close.EndUs})
		if first < 0 || base < first {
			first = base
		}
		if end := base + r.ExitUs; end > last {
			last = end
		}
	}
	if bl.Adds == 0 {
		return bl, nil
	}
	sort.Slice(held, func(i, j int) bool { return held[i].a < held[j].a })
	var busy int64
	cur := held[0]
	for _, x := range held[1:] {
		if x.a > cur.b {
			busy += cur.b - cur.a
			cur = x
		} else if x.b > cur.b {
			cur.b = x.b
		}
	}
	busy += cur.b - cur.a
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return round3(s / float64(len(v)))
	}
	sum := 0.0
	for _, x := range holds {
		sum += x
	}
	maxWait := 0.0
	for _, x := range waits {
		maxWait = max(maxWait, x)
	}
	bl.WaitMeanMs, bl.WaitMaxMs = mean(waits), round3(maxWait)
	bl.HeldMeanMs, bl.HeldSumMs = mean(holds), round3(sum)
	bl.BusyMs = round3(float64(busy) / 1000)
	bl.IdleMs = round3(float64(last-first-busy) / 1000)
	bl.StartMeanMs = mean(starts)
	return bl, nil
}

// initTrace runs bin (VERSION) with GODEBUG=inittrace=1 and returns the
// median total of the package initialisers' clock time and the five
// largest, as text.
func initTrace(bin string, runs int) (float64, string, error) {
	var totals []float64
	per := map[string][]float64{}
	for range runs {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION", "GODEBUG=inittrace=1")
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return 0, "", fmt.Errorf("%s VERSION: %w", bin, err)
		}
		total := 0.0
		for _, l := range strings.Split(stderr.String(), "\n") {
			// init <package> @<t> ms, <clock> ms clock, <bytes> bytes, <n> allocs
			f := strings.Fields(l)
			if len(f) < 7 || f[0] != "init" || f[6] != "clock," {
				continue
			}
			v, err := strconv.ParseFloat(f[4], 64)
			if err != nil {
				continue
			}
			total += v
			per[f[1]] = append(per[f[1]], v)
		}
		totals = append(totals, total)
	}
	type pkg struct {
		name string
		ms   float64
	}
	var pkgs []pkg
	for n, v := range per {
		pkgs = append(pkgs, pkg{n, median(v)})
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].ms > pkgs[j].ms })
	var top []string
	for _, x := range pkgs[:min(5, len(pkgs))] {
		top = append(top, fmt.Sprintf("%s %.2f", x.name, x.ms))
	}
	return median(totals), strings.Join(top, ", "), nil
}

// segments turns one record into the phases of the invocation: the start
// of the process, the spans at the top level, the verb's parts (its
// spans and the gaps between them, named by position), and the exit.
func segments(r phaseRecord, execStart int64) []Segment {
	us := func(v int64) float64 { return float64(v) / 1000 }
	var segs []Segment
	segs = append(segs, Segment{Name: "fork+exec until main (harness exec -> main)", Ms: us((r.MainUnixNs - execStart) / 1000)})
	// Top-level spans and the verb's children.
	type span = struct {
		Name    string `json:"name"`
		StartUs int64  `json:"start_us"`
		EndUs   int64  `json:"end_us"`
		FnUs    int64  `json:"fn_us"`
	}
	spans := append([]span(nil), r.Spans...)
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartUs < spans[j].StartUs })
	var verb *span
	for i := range spans {
		if strings.HasPrefix(spans[i].Name, "verb ") {
			verb = &spans[i]
		}
	}
	inside := func(s span, outer *span) bool {
		return outer != nil && s.StartUs >= outer.StartUs && s.EndUs <= outer.EndUs && s.Name != outer.Name
	}
	counts := map[string]int{}
	name := func(n string) string {
		counts[n]++
		return fmt.Sprintf("%s #%d", n, counts[n])
	}
	last, lastName := int64(0), ""
	for i := 0; i < len(spans); i++ {
		s := spans[i]
		if inside(s, verb) {
			continue
		}
		if s.StartUs > last && last > 0 {
			segs = append(segs, Segment{Name: "between " + lastName + " and " + s.Name, Ms: us(s.StartUs - last)})
		}
		segs = append(segs, Segment{Name: s.Name, Ms: us(s.EndUs - s.StartUs)})
		last, lastName = s.EndUs, s.Name
		if verb == nil || s.Name != verb.Name {
			continue
		}
		// The verb's direct children, the gaps between them, and within
		// each its own children (a driver call's transactions).
		var direct []span
		for _, c := range spans {
			if !inside(c, verb) {
				continue
			}
			nested := false
			for _, o := range spans {
				if o.Name != c.Name && o.Name != verb.Name && inside(c, &o) {
					nested = true
				}
			}
			if !nested {
				direct = append(direct, c)
			}
		}
		at, prev := verb.StartUs, "start of the verb"
		for _, c := range direct {
			n := name(c.Name)
			if c.StartUs-at > 0 {
				segs = append(segs, Segment{Name: "core code between " + prev + " and " + n, Ms: us(c.StartUs - at), Depth: 1})
			}
			if strings.Contains(c.Name, "Update") || strings.Contains(c.Name, "View") {
				segs = append(segs, Segment{Name: n, Ms: us(c.EndUs - c.StartUs), Depth: 1})
				segs = append(segs, Segment{Name: n + ": in the transaction", Ms: us(c.FnUs), Depth: 2})
				segs = append(segs, Segment{Name: n + ": begin + commit (write, fdatasync)", Ms: us(c.EndUs - c.StartUs - c.FnUs), Depth: 2})
			} else {
				segs = append(segs, Segment{Name: n, Ms: us(c.EndUs - c.StartUs), Depth: 1})
				for _, g := range spans {
					if inside(g, &c) {
						segs = append(segs, Segment{Name: n + ": " + name(g.Name), Ms: us(g.EndUs - g.StartUs), Depth: 2})
					}
				}
			}
			at, prev = c.EndUs, n
		}
		if verb.EndUs > at {
			segs = append(segs, Segment{Name: "core code after " + prev, Ms: us(verb.EndUs - at), Depth: 1})
		}
	}
	if r.ExitUs > last {
		segs = append(segs, Segment{Name: "skel output + exit bookkeeping", Ms: us(r.ExitUs - last)})
	}
	return segs
}

// medianSegments takes the median of each segment over runs whose
// sequences agree (the first run's sequence); runs that differ are left
// out.
func medianSegments(runs [][]Segment) []Segment {
	if len(runs) == 0 {
		return nil
	}
	// The most common sequence of names.
	key := func(s []Segment) string {
		var b strings.Builder
		for _, x := range s {
			b.WriteString(x.Name)
			b.WriteByte('|')
		}
		return b.String()
	}
	freq := map[string]int{}
	for _, r := range runs {
		freq[key(r)]++
	}
	best, bestN := "", 0
	for k, n := range freq {
		if n > bestN {
			best, bestN = k, n
		}
	}
	var chosen [][]Segment
	for _, r := range runs {
		if key(r) == best {
			chosen = append(chosen, r)
		}
	}
	out := make([]Segment, len(chosen[0]))
	for i := range out {
		var v []float64
		for _, r := range chosen {
			v = append(v, r[i].Ms)
		}
		out[i] = Segment{Name: chosen[0][i].Name, Ms: median(v), Depth: chosen[0][i].Depth}
	}
	return out
}

func readPhases(path string) ([]phaseRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []phaseRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r phaseRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// straceSummary runs one ADD of the real cnm-bridge under strace -f -c -w
// and returns the syscalls that took the most wall time.
func (h *harness) straceSummary(e *env) ([]SyscallStat, error) {
	out := filepath.Join(h.tmp, "strace-c.txt")
	wrapDir := filepath.Join(h.tmp, "stracec")
	if err := os.MkdirAll(wrapDir, 0o755); err != nil {
		return nil, err
	}
	script := fmt.Sprintf("#!/bin/sh\nexec strace -f -c -w -o %s %s \"$@\"\n", out, filepath.Join(h.cnmBin, "cnm-bridge"))
	if err := os.WriteFile(filepath.Join(wrapDir, "cnm-bridge"), []byte(script), 0o755); err != nil {
		return nil, err
	}
	se := e.withExec(wrapDir, nil)
	c := h.pool.get(0)
	if _, err := se.add("strace-c", c, 0); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if _, err := e.del("strace-c", c, 0); err != nil {
		return nil, err
	}
	var stats []SyscallStat
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		// % time, seconds, usecs/call, calls, [errors], syscall
		if len(f) < 5 || strings.HasPrefix(f[0], "%") || strings.HasPrefix(f[0], "-") || f[len(f)-1] == "total" {
			continue
		}
		secs, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		calls, _ := strconv.Atoi(f[3])
		name := f[len(f)-1]
		switch name {
		case "futex", "epoll_pwait", "nanosleep", "sched_yield", "rt_sigreturn":
			// Idle Go runtime threads waiting, not work of the ADD.
			continue
		}
		stats = append(stats, SyscallStat{Name: name, Calls: calls, TotalMs: round3(secs * 1000)})
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].TotalMs > stats[j].TotalMs })
	if len(stats) > 12 {
		stats = stats[:12]
	}
	return stats, nil
}
