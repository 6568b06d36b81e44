package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnmnet/cnmnet/test/bench/internal/hwm"
)

// measureExec is a libcni invoke.Exec that runs a plugin the way libcni's
// RawExec does (the environment and stdin libcni builds, stdout parsed
// as the result or a CNI error) and records each process's resource
// usage; with strace set it runs the plugin under strace -f instead.
type measureExec struct {
	version.PluginDecoder
	strace string // output file prefix; "" runs the plugin directly
	// hwm: read the plugin's own peak RSS at its exit (package hwm).
	hwm bool

	mu    sync.Mutex
	calls []invocation
}

// invocation is one plugin process. HWM is its own peak RSS (VmHWM at
// exit, with measureExec.hwm); CPU times are wait4's, for the plugin and
// the descendants it waited for.
type invocation struct {
	Plugin  string  `json:"plugin"`
	Command string  `json:"command"`
	WallMs  float64 `json:"wall_ms"`
	HWMKiB  int64   `json:"vmhwm_kib,omitempty"`
	UserMs  float64 `json:"user_ms"`
	SysMs   float64 `json:"sys_ms"`
	Trace   string  `json:"-"`
	// StartUnixNs is when the harness started the process.
	StartUnixNs int64  `json:"-"`
	Stderr      string `json:"-"`
}

var _ invoke.Exec = (*measureExec)(nil)

func (x *measureExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (x *measureExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	inv := invocation{Plugin: filepath.Base(pluginPath)}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			inv.Command = v
		}
	}
	var cmd *exec.Cmd
	if x.strace != "" {
		x.mu.Lock()
		inv.Trace = fmt.Sprintf("%s.%d", x.strace, len(x.calls))
		x.mu.Unlock()
		cmd = exec.CommandContext(ctx, "strace", "-f", "-qq", "-yy", "-s", "0", "-e", "signal=none",
			"-e", "trace=execve,sendto,sendmsg", "-o", inv.Trace, pluginPath)
	} else {
		cmd = exec.CommandContext(ctx, pluginPath)
	}
	var stdout, stderr bytes.Buffer
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdinData)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	inv.StartUnixNs = start.UnixNano()
	var err error
	if x.hwm {
		inv.HWMKiB, err = hwm.Run(cmd)
	} else {
		err = cmd.Run()
	}
	inv.Stderr = stderr.String()
	inv.WallMs = round3(ms(time.Since(start)))
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			inv.UserMs = round3(ms(time.Duration(ru.Utime.Nano())))
			inv.SysMs = round3(ms(time.Duration(ru.Stime.Nano())))
		}
	}
	x.mu.Lock()
	x.calls = append(x.calls, inv)
	x.mu.Unlock()
	if err != nil {
		e := &types.Error{}
		if jerr := json.Unmarshal(stdout.Bytes(), e); jerr != nil || e.Code == 0 && e.Msg == "" {
			e = &types.Error{Code: 999, Msg: fmt.Sprintf("%s: %v: %s", inv.Plugin, err, strings.TrimSpace(stderr.String()))}
		}
		return nil, e
	}
	return stdout.Bytes(), nil
}

func (x *measureExec) take() []invocation {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := x.calls
	x.calls = nil
	return out
}

// tracer is the tracing directories of item 4: every CNI plugin of both
// systems and every iptables/nft executable on PATH, replaced by
// tracewrap, which logs each process and runs the real one.
type tracer struct {
	dir     string
	log     string
	cniDirs map[string]string // system -> CNI_PATH directory of wrappers
	pathDir string            // prepended to PATH
}

// firewallTools are the executables the plugins may run through PATH.
var firewallToolPattern = regexp.MustCompile(`^(iptables|ip6tables|ebtables|arptables|xtables)(-.*)?$|^(nft|ip|conntrack|modprobe)$`)

func (h *harness) newTracer() (*tracer, error) {
	t := &tracer{dir: filepath.Join(h.tmp, "trace"), cniDirs: map[string]string{}}
	t.log = filepath.Join(t.dir, "exec.log")
	wrapper := filepath.Join(t.dir, "tracewrap")
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return nil, err
	}
	build := exec.Command("go", "build", "-o", wrapper, "./test/bench/tracewrap")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build tracewrap: %w", err)
	}
	link := func(dir, name, real string) error {
		if err := os.MkdirAll(filepath.Join(dir, ".real"), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(real, filepath.Join(dir, ".real", name)); err != nil {
			return err
		}
		return os.Link(wrapper, filepath.Join(dir, name))
	}
	srcs := map[string]string{sysCNM: h.cnmBin, sysRef: h.refBin}
	for _, sys := range systems {
		d := filepath.Join(t.dir, "cni-"+sys)
		entries, err := os.ReadDir(srcs[sys])
		if err != nil {
			return nil, err
		}
		for _, en := range entries {
			if en.IsDir() {
				continue
			}
			if err := link(d, en.Name(), filepath.Join(srcs[sys], en.Name())); err != nil {
				return nil, err
			}
		}
		t.cniDirs[sys] = d
	}
	t.pathDir = filepath.Join(t.dir, "path")
	seen := map[string]bool{}
	for _, pd := range filepath.SplitList(os.Getenv("PATH")) {
		entries, err := os.ReadDir(pd)
		if err != nil {
			continue
		}
		for _, en := range entries {
			name := en.Name()
			if seen[name] || !firewallToolPattern.MatchString(name) {
				continue
			}
			real, err := exec.LookPath(name)
			if err != nil {
				continue
			}
			seen[name] = true
			if err := link(t.pathDir, name, real); err != nil {
				return nil, err
			}
		}
	}
	if !seen["iptables-restore"] || !seen["iptables"] {
		return nil, fmt.Errorf("iptables and iptables-restore must be on PATH")
	}
	return t, nil
}

// traced runs f with the tracing PATH and log in the environment the
// plugins inherit, and returns the processes logged, by name.
func (t *tracer) traced(f func() error) (map[string]int, []traceLine, error) {
	if err := os.WriteFile(t.log, nil, 0o600); err != nil {
		return nil, nil, err
	}
	oldPath := os.Getenv("PATH")
	os.Setenv("PATH", t.pathDir+string(os.PathListSeparator)+oldPath)
	os.Setenv("CNMBENCH_TRACE_LOG", t.log)
	err := f()
	os.Setenv("PATH", oldPath)
	os.Unsetenv("CNMBENCH_TRACE_LOG")
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(t.log)
	if err != nil {
		return nil, nil, err
	}
	counts := map[string]int{}
	var lines []traceLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(l, "\t")
		if len(f) < 5 {
			continue
		}
		tl := traceLine{Name: f[0]}
		tl.WallUs, _ = strconv.ParseInt(f[2], 10, 64)
		tl.MaxRSSKiB, _ = strconv.ParseInt(f[3], 10, 64)
		tl.Exit, _ = strconv.Atoi(f[4])
		lines = append(lines, tl)
		counts[tl.Name]++
	}
	return counts, lines, nil
}

type traceLine struct {
	Name      string
	WallUs    int64
	MaxRSSKiB int64
	Exit      int
}

// WorkSystem is item 4 and 5 for one system in one scenario.
type WorkSystem struct {
	Label string `json:"label"`
	// Processes per ADD / DEL (the plugins themselves included), by
	// executable, averaged over the traced pairs.
	ProcsPerAdd   float64            `json:"procs_per_add"`
	ProcsPerDel   float64            `json:"procs_per_del"`
	AddProcs      map[string]float64 `json:"add_procs_by_name"`
	DelProcs      map[string]float64 `json:"del_procs_by_name"`
	IptablesAdd   float64            `json:"iptables_execs_per_add"`
	IptablesDel   float64            `json:"iptables_execs_per_del"`
	NetlinkAdd    map[string]int     `json:"netlink_sends_per_add_by_process"`
	NetlinkDel    map[string]int     `json:"netlink_sends_per_del_by_process"`
	NetlinkAddSum int                `json:"netlink_sends_per_add"`
	NetlinkDelSum int                `json:"netlink_sends_per_del"`
	// Peak RSS (VmHWM) of the main plugin process (cnm-bridge or bridge)
	// alone, median over the measured ADDs / DELs, and the largest of
	// each other executable's processes during the traced ADDs. CPU time
	// is the main plugin's with its waited-for children's (wait4).
	MainPlugin     string             `json:"main_plugin"`
	AddMaxRSSKiB   int64              `json:"add_vmhwm_kib"`
	DelMaxRSSKiB   int64              `json:"del_vmhwm_kib"`
	ChildMaxRSSKiB map[string]int64   `json:"other_vmhwm_kib"`
	AddCPUMs       float64            `json:"add_cpu_ms"`
	AddPluginsMs   map[string]float64 `json:"add_wall_ms_by_plugin"`
	// ProcWallMs is the median lifetime of each executable's processes
	// during the traced ADDs (as the tracing wrapper saw its child).
	ProcWallMs  map[string]float64 `json:"add_proc_wall_ms_by_name"`
	Invocations []invocation       `json:"invocations"`
}

// WorkResult is items 4 and 5 for one scenario.
type WorkResult struct {
	Scenario string                 `json:"scenario"`
	Pairs    int                    `json:"traced_pairs"`
	Systems  map[string]*WorkSystem `json:"systems"`
}

func isIptables(name string) bool {
	return strings.HasPrefix(name, "iptables") || strings.HasPrefix(name, "ip6tables") || strings.HasPrefix(name, "xtables")
}

// work measures processes, netlink calls, memory and CPU per ADD and DEL
// on the sequential phase's environments (networks already created).
func (h *harness) work(scen string, envs map[string]*env, t *tracer) (*WorkResult, error) {
	const pairs = 5
	res := &WorkResult{Scenario: scen, Pairs: pairs, Systems: map[string]*WorkSystem{}}
	for _, sys := range systems {
		e := envs[sys]
		w := &WorkSystem{Label: e.label, AddProcs: map[string]float64{}, DelProcs: map[string]float64{},
			ChildMaxRSSKiB: map[string]int64{}, AddPluginsMs: map[string]float64{}}
		w.MainPlugin = e.list.Plugins[0].Network.Type
		res.Systems[sys] = w
		port := func(i int) int {
			if e.ports {
				return 30000 + i
			}
			return 0
		}

		// Processes: through the tracing directories.
		te := e.withExec(t.cniDirs[sys], nil)
		procWall := map[string][]float64{}
		for i := range pairs {
			id := fmt.Sprintf("work-%s-%s-%d", scen, sys, i)
			c := h.pool.get(i)
			addc, addl, err := t.traced(func() error { _, err := te.add(id, c, port(i)); return err })
			if err != nil {
				return nil, err
			}
			delc, _, err := t.traced(func() error { _, err := te.del(id, c, port(i)); return err })
			if err != nil {
				return nil, err
			}
			for n, k := range addc {
				w.AddProcs[n] += float64(k) / pairs
				w.ProcsPerAdd += float64(k) / pairs
				if isIptables(n) {
					w.IptablesAdd += float64(k) / pairs
				}
			}
			for n, k := range delc {
				w.DelProcs[n] += float64(k) / pairs
				w.ProcsPerDel += float64(k) / pairs
				if isIptables(n) {
					w.IptablesDel += float64(k) / pairs
				}
			}
			for _, l := range addl {
				procWall[l.Name] = append(procWall[l.Name], float64(l.WallUs)/1000)
				if l.Name != w.MainPlugin && l.MaxRSSKiB > w.ChildMaxRSSKiB[l.Name] {
					w.ChildMaxRSSKiB[l.Name] = l.MaxRSSKiB
				}
			}
		}

		w.ProcWallMs = map[string]float64{}
		for n, v := range procWall {
			w.ProcWallMs[n] = median(v)
		}

		// Memory and CPU: the plugins exec'd directly, their wait4 rusage.
		x := &measureExec{hwm: true}
		me := e.withExec(e.binDir, x)
		var addRSS, delRSS, addCPU []float64
		wall := map[string][]float64{}
		for i := range pairs {
			id := fmt.Sprintf("rss-%s-%s-%d", scen, sys, i)
			c := h.pool.get(i)
			if _, err := me.add(id, c, port(i)); err != nil {
				return nil, err
			}
			for _, inv := range x.take() {
				wall[inv.Plugin] = append(wall[inv.Plugin], inv.WallMs)
				if inv.Plugin == w.MainPlugin {
					addRSS = append(addRSS, float64(inv.HWMKiB))
					addCPU = append(addCPU, inv.UserMs+inv.SysMs)
				}
				w.Invocations = append(w.Invocations, inv)
			}
			if _, err := me.del(id, c, port(i)); err != nil {
				return nil, err
			}
			for _, inv := range x.take() {
				if inv.Plugin == w.MainPlugin {
					delRSS = append(delRSS, float64(inv.HWMKiB))
				}
				w.Invocations = append(w.Invocations, inv)
			}
		}
		w.AddMaxRSSKiB, w.DelMaxRSSKiB = int64(median(addRSS)), int64(median(delRSS))
		w.AddCPUMs = median(addCPU)
		for p, v := range wall {
			w.AddPluginsMs[p] = median(v)
		}

		// Netlink: one ADD and one DEL under strace -f.
		sx := &measureExec{strace: filepath.Join(h.tmp, "strace-"+scen+"-"+sys)}
		se := e.withExec(e.binDir, sx)
		id := fmt.Sprintf("strace-%s-%s", scen, sys)
		c := h.pool.get(0)
		var err error
		if _, err := se.add(id, c, port(99)); err != nil {
			return nil, err
		}
		if w.NetlinkAdd, err = netlinkSends(sx.take()); err != nil {
			return nil, err
		}
		if _, err := se.del(id, c, port(99)); err != nil {
			return nil, err
		}
		if w.NetlinkDel, err = netlinkSends(sx.take()); err != nil {
			return nil, err
		}
		for _, v := range w.NetlinkAdd {
			w.NetlinkAddSum += v
		}
		for _, v := range w.NetlinkDel {
			w.NetlinkDelSum += v
		}
		logf("work %s %s: %.1f processes per ADD (%.1f iptables), %d netlink sends per ADD, maxrss %d KiB",
			scen, e.label, w.ProcsPerAdd, w.IptablesAdd, w.NetlinkAddSum, w.AddMaxRSSKiB)
	}
	return res, nil
}

var (
	straceLine   = regexp.MustCompile(`^(\d+) +(.*)$`)
	straceExecve = regexp.MustCompile(`^execve\("([^"]*)"`)
	straceSend   = regexp.MustCompile(`^(sendto|sendmsg)\((\d+)<NETLINK:`)
)

// netlinkSends counts, per executable, the sendto/sendmsg calls on
// netlink sockets in the strace logs of invs.
func netlinkSends(invs []invocation) (map[string]int, error) {
	out := map[string]int{}
	for _, inv := range invs {
		if inv.Trace == "" {
			continue
		}
		f, err := os.Open(inv.Trace)
		if err != nil {
			return nil, err
		}
		names := map[string]string{}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m := straceLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			pid, call := m[1], m[2]
			if em := straceExecve.FindStringSubmatch(call); em != nil {
				if !strings.Contains(call, "= -1") {
					names[pid] = filepath.Base(em[1])
				}
				continue
			}
			if straceSend.MatchString(call) {
				name := names[pid]
				if name == "" {
					name = inv.Plugin
				}
				out[name]++
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func diskBytes(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name    string             `json:"name"`
	N       int64              `json:"n"`
	NsPerOp float64            `json:"ns_per_op"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// allocBench runs the IPAM allocator's own Go benchmark (an allocation and
// its release, each committed, with 0 and 60,000 addresses in use).
func allocBench() ([]GoBench, string, error) {
	cmd := exec.Command("go", "test", "-count=1", "-run", "^$", "-bench", "Allocate", "./pkg/ipam/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, out.String(), fmt.Errorf("go test -bench Allocate: %w\n%s", err, out.String())
	}
	var res []GoBench
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := GoBench{Name: f[0], Metrics: map[string]float64{}}
		b.N, _ = strconv.ParseInt(f[1], 10, 64)
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			if f[i+1] == "ns/op" {
				b.NsPerOp = v
			} else {
				b.Metrics[f[i+1]] = v
			}
		}
		res = append(res, b)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, out.String(), nil
}
