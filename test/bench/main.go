// Command bench is the benchmark harness of cnmnet (`make bench`): it
// compares cnm-bridge with the reference bridge + host-local (+ portmap)
// plugins of Debian's containernetworking-plugins, invoked through libcni
// as a runtime does, in throwaway network namespaces it creates and
// removes. It must run as root from the module's root directory.
//
// It measures, in one run and interleaving the two systems: sequential
// ADD/DEL latency (with and without a published port), bursts of
// concurrent ADDs, ADD latency and state size with 100 to 10,000
// endpoints present, processes and netlink calls per ADD, peak RSS of a
// plugin process, and (for cnm-bridge) where the time of an ADD goes. It
// prints a markdown table and writes docs/bench/latest.json,
// docs/bench/latest.md and docs/bench/latency.png.
//
// See docs/benchmarks.md.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	cnmBin      string
	refBin      string
	out         string
	seqN        int
	warmup      int
	burstSize   int
	burstWidths []int
	scaleLevels []int
	scalePairs  int
	profileRuns int
	keep        bool
	quick       bool
	from        string
	// only selects the phases: "" (all), "bridge" or "overlay".
	only string
	ov   ovOptions
}

type harness struct {
	opt    options
	tmp    string
	cnmBin string
	refBin string
	pool   *pool
	// profDir holds the profiling copy of cnm-bridge once built.
	profDir string
}

var started = time.Now()

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, a...))
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func main() {
	var o options
	var widths, levels string
	flag.StringVar(&o.cnmBin, "bin", "bin", "directory with the cnm-bridge binary (make build)")
	flag.StringVar(&o.refBin, "ref", "/usr/lib/cni", "directory with the reference plugins (Debian containernetworking-plugins)")
	flag.StringVar(&o.out, "out", "docs/bench", "directory for latest.json, latest.md and latency.png (\"\": write nothing)")
	flag.IntVar(&o.seqN, "n", 200, "sequential ADD/DEL pairs per system and scenario")
	flag.IntVar(&o.warmup, "warmup", 5, "unmeasured pairs per system before the sequential runs")
	flag.IntVar(&o.burstSize, "burst", 100, "ADDs per burst")
	flag.StringVar(&widths, "widths", "10,25,50", "burst widths (ADDs in flight)")
	flag.StringVar(&levels, "levels", "100,1000,10000", "endpoints present for the scale runs")
	flag.IntVar(&o.scalePairs, "scale-pairs", 20, "ADD/DEL pairs per system at each scale level")
	flag.IntVar(&o.profileRuns, "profile-runs", 30, "cnm-bridge ADD/DEL pairs of the time breakdown (0: skip)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&o.from, "from", "", "measure nothing: render the table and chart of this latest.json again")
	flag.BoolVar(&o.quick, "quick", false, "a short run for development: 40 pairs, bursts 10,50, levels 100,1000; writes nothing unless -out is given")
	flag.StringVar(&o.only, "only", "", "run only these phases: bridge (cnm-bridge against the reference), burst (only its bursts, for development: writes nothing unless -out is given) or overlay")
	var ovLevels string
	ovEndpoints := flag.Int("overlay-endpoints", 0, "overlay convergence: endpoints added on one host and probed from another (default 200, quick 20)")
	ovPairs := flag.Int("overlay-pairs", 0, "overlay: ADD/DEL pairs of cnm-overlay and of cnm-bridge (default 100, quick 10)")
	ovMoves := flag.Int("overlay-moves", 0, "overlay: moves of a persistent endpoint between two hosts (default 50, quick 5)")
	ovKills := flag.Int("overlay-kills", 0, "overlay: SIGKILL and restart rounds of a host's cnm-overlayd (default 5, quick 1)")
	flag.StringVar(&ovLevels, "overlay-levels", "", "overlay: endpoints in the cluster for the daemon's scale runs (default 1000,10000, quick 100,1000)")
	flag.Parse()
	if o.only != "" && o.only != "bridge" && o.only != "burst" && o.only != "overlay" {
		fatal(fmt.Errorf("-only %q: want bridge, burst or overlay", o.only))
	}
	o.ov = ovDefaults(o.quick)
	for _, x := range []struct {
		v   int
		dst *int
	}{{*ovEndpoints, &o.ov.endpoints}, {*ovPairs, &o.ov.pairs}, {*ovMoves, &o.ov.moves}, {*ovKills, &o.ov.kills}} {
		if x.v > 0 {
			*x.dst = x.v
		}
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.only == "burst" && !set["out"] {
		o.out = ""
	}
	if o.quick {
		if !set["n"] {
			o.seqN = 40
		}
		if !set["widths"] {
			widths = "10,50"
		}
		if !set["levels"] {
			levels = "100,1000"
		}
		if !set["scale-pairs"] {
			o.scalePairs = 10
		}
		if !set["profile-runs"] {
			o.profileRuns = 10
		}
		if !set["out"] {
			o.out = ""
		}
	}
	var err error
	if o.burstWidths, err = intList(widths); err != nil {
		fatal(fmt.Errorf("-widths: %w", err))
	}
	if o.scaleLevels, err = intList(levels); err != nil {
		fatal(fmt.Errorf("-levels: %w", err))
	}
	if ovLevels != "" {
		if o.ov.levels, err = intList(ovLevels); err != nil {
			fatal(fmt.Errorf("-overlay-levels: %w", err))
		}
	}

	// A reader that goes away (`| head`) must not kill the run before it
	// removes its namespaces: the writes fail instead, and the run goes on.
	signal.Ignore(syscall.SIGPIPE)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		logf("%v: cleaning up", s)
		runCleanups()
		os.Exit(130)
	}()

	var res *Results
	if o.from != "" {
		// The goals are this build's: a run is judged by them again.
		if res, err = load(o.from); err == nil {
			res.Targets = targets(res)
		}
	} else {
		res, err = run(o)
	}
	runCleanups()
	if err != nil {
		fatal(err)
	}
	md := markdown(res)
	fmt.Print(md)
	if o.out != "" {
		if err := write(o.out, res, md); err != nil {
			fatal(err)
		}
		logf("wrote %s/latest.json, latest.md, latency.png", o.out)
	}
}

func fatal(err error) {
	runCleanups()
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// Results is everything one run measured; docs/bench/latest.json.
type Results struct {
	Date string `json:"date"`
	// Commit is the checkout measured: HEAD, and "+changes" when pkg/ or
	// cmd/ differ from it.
	Commit     string         `json:"commit,omitempty"`
	Machine    Machine        `json:"machine"`
	Options    map[string]any `json:"options"`
	Sequential []*SeqResult   `json:"sequential"`
	Work       []*WorkResult  `json:"work"`
	Burst      []*BurstResult `json:"burst"`
	Scale      []*ScaleLevel  `json:"scale"`
	Alloc      []GoBench      `json:"ipam_allocate_bench"`
	Profile    *Profile       `json:"profile,omitempty"`
	Overlay    *OverlayResult `json:"overlay,omitempty"`
	Targets    []Target       `json:"targets"`
	DurationS  float64        `json:"duration_s"`
}

func run(o options) (*Results, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("must run as root: it creates network namespaces")
	}
	h := &harness{opt: o}
	var err error
	if h.cnmBin, err = filepath.Abs(o.cnmBin); err != nil {
		return nil, err
	}
	if h.refBin, err = filepath.Abs(o.refBin); err != nil {
		return nil, err
	}
	for _, p := range []string{filepath.Join(h.cnmBin, "cnm-bridge"), filepath.Join(h.refBin, "bridge"),
		filepath.Join(h.refBin, "host-local"), filepath.Join(h.refBin, "portmap")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s missing (make build; apt-get install containernetworking-plugins): %w", p, err)
		}
	}
	if _, err := os.Stat("go.mod"); err != nil {
		return nil, fmt.Errorf("run from the module's root directory: %w", err)
	}
	ensureSbinInPath()
	// The state directories are on the disk that holds the temporary
	// directory, as /var/lib/cni would be: fsync costs are real.
	if h.tmp, err = os.MkdirTemp("", "cnmbench-"); err != nil {
		return nil, err
	}
	if !o.keep {
		atCleanup(func() { os.RemoveAll(h.tmp) })
	} else {
		logf("keeping %s", h.tmp)
	}
	res := &Results{Date: time.Now().UTC().Format(time.RFC3339), Commit: commit(), Machine: machine(),
		Options: map[string]any{
			"sequential_pairs": o.seqN, "warmup": o.warmup, "burst_size": o.burstSize,
			"burst_widths": o.burstWidths, "scale_levels": o.scaleLevels, "scale_pairs": o.scalePairs,
			"profile_runs": o.profileRuns, "tmpdir": h.tmp, "only": o.only,
		}}
	logf("machine: %s", res.Machine)
	mon := startMonitor(5 * time.Second)
	defer func() {
		mon.finish()
		res.Machine.During = mon
	}()

	if o.only != "overlay" {
		if err := h.bridgePhases(res); err != nil {
			return nil, err
		}
	}
	if o.only == "" || o.only == "overlay" {
		if res.Overlay, err = h.overlay(o.ov); err != nil {
			return nil, fmt.Errorf("overlay: %w", err)
		}
	}
	res.Machine.LoadEnd = loadavg()
	res.DurationS = round3(time.Since(started).Seconds())
	res.Targets = targets(res)
	return res, nil
}

// bridgePhases measure cnm-bridge against the reference plugins.
func (h *harness) bridgePhases(res *Results) error {
	o := h.opt
	var err error
	size := max(o.burstSize, 10)
	logf("creating %d container namespaces", size)
	if h.pool, err = newPool(size); err != nil {
		return err
	}
	tr, err := h.newTracer()
	if err != nil {
		return err
	}

	for _, ports := range []bool{false, true} {
		if o.only == "burst" {
			break
		}
		seq, envs, err := h.sequential(ports)
		if err != nil {
			return err
		}
		res.Sequential = append(res.Sequential, seq)
		for _, sys := range systems {
			s := seq.Systems[sys]
			logf("sequential %s %s: ADD p50 %.1f ms, DEL p50 %.1f ms, ADD+DEL p50 %.1f ms",
				seq.Scenario, s.Label, s.Add.P50, s.Del.P50, s.AddDel.P50)
		}
		w, err := h.work(seq.Scenario, envs, tr)
		if err != nil {
			return err
		}
		res.Work = append(res.Work, w)
		if !ports && o.profileRuns > 0 {
			if res.Profile, err = h.profile(envs[sysCNM]); err != nil {
				return err
			}
		}
	}
	var lock *BurstLock
	if res.Burst, lock, err = h.bursts(); err != nil {
		return err
	}
	if res.Profile != nil {
		res.Profile.BurstLock = lock
	}
	if o.only == "burst" {
		return nil
	}
	if res.Scale, err = h.scale(); err != nil {
		return err
	}
	logf("go test -bench Allocate ./pkg/ipam/")
	if res.Alloc, _, err = allocBench(); err != nil {
		return err
	}
	return nil
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--", "pkg", "cmd").Output(); err == nil && len(st) > 0 {
		c += "+changes"
	}
	return c
}

// ensureSbinInPath makes sure iptables is found where Debian installs it.
func ensureSbinInPath() {
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	os.Setenv("PATH", path)
}

func load(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := &Results{}
	if err := json.Unmarshal(b, res); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

func write(dir string, res *Results, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if len(res.Sequential) == 0 {
		return nil // an overlay-only run: the chart is of the bridge phases
	}
	return chart(res, filepath.Join(dir, "latency.png"))
}
