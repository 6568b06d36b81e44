package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine is what the numbers were measured on.
type Machine struct {
	CPUs       int     `json:"nproc"`
	Model      string  `json:"cpu_model"`
	Kernel     string  `json:"kernel"`
	Go         string  `json:"go"`
	MemGiB     float64 `json:"mem_gib"`
	Iptables   string  `json:"iptables"`
	RefPlugins string  `json:"reference_plugins"`
	LoadStart  string  `json:"loadavg_start"`
	LoadEnd    string  `json:"loadavg_end"`
	// Busy lists other processes that used more than 5% of a CPU over
	// one second at the start of the run.
	Busy []string `json:"busy_processes_at_start"`
	// During is what the monitor saw while the run went on.
	During *Monitor `json:"during_run,omitempty"`
}

func (m Machine) String() string {
	return fmt.Sprintf("%d × %s, %.0f GiB, Linux %s, %s, %s, reference plugins %s; load average %s",
		m.CPUs, m.Model, m.MemGiB, m.Kernel, m.Go, m.Iptables, m.RefPlugins, m.LoadStart)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemGiB = float64(si.Totalram) * float64(si.Unit) / (1 << 30)
	}
	if out, err := exec.Command("iptables", "--version").Output(); err == nil {
		m.Iptables = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Package} ${Version}", "containernetworking-plugins").Output(); err == nil {
		m.RefPlugins = strings.TrimSpace(string(out))
	}
	m.Busy = busyProcesses(time.Second)
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Monitor samples, every few seconds during the run, the load average
// and the processes outside the harness's own tree that used CPU.
type Monitor struct {
	Samples  int     `json:"samples"`
	LoadMean float64 `json:"load1_mean"`
	LoadMax  float64 `json:"load1_max"`
	// Others: command name -> the largest share of a CPU it used in one
	// interval, and in how many intervals it used more than 10%.
	Others map[string]MonitorProc `json:"other_processes"`

	stop chan struct{}
	done chan struct{}
}

// MonitorProc is one command name seen by the monitor.
type MonitorProc struct {
	MaxPct    float64 `json:"max_pct"`
	Intervals int     `json:"intervals_over_10pct"`
}

type procStat struct {
	name  string
	ppid  int
	ticks int64
}

func readProcs() map[int]procStat {
	out := map[int]procStat{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = procStat{name: s[open+1 : close], ppid: ppid, ticks: ut + st}
	}
	return out
}

// startMonitor samples every interval until stopped.
func startMonitor(interval time.Duration) *Monitor {
	m := &Monitor{Others: map[string]MonitorProc{}, stop: make(chan struct{}), done: make(chan struct{})}
	self := os.Getpid()
	ours := func(procs map[int]procStat, pid int) bool {
		for i := 0; pid > 1 && i < 64; i++ {
			if pid == self {
				return true
			}
			pid = procs[pid].ppid
		}
		return false
	}
	go func() {
		defer close(m.done)
		prev := readProcs()
		loadSum := 0.0
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				if m.Samples > 0 {
					m.LoadMean = round3(loadSum / float64(m.Samples))
				}
				return
			case <-t.C:
			}
			cur := readProcs()
			m.Samples++
			if f := strings.Fields(loadavg()); len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					loadSum += v
					m.LoadMax = max(m.LoadMax, v)
				}
			}
			// Per command name: processes of the same name add up.
			use := map[string]float64{}
			for pid, p := range cur {
				if ours(cur, pid) {
					continue
				}
				kthread := p.ppid == 2 || pid == 2
				before, seen := prev[pid]
				if !seen || before.name != p.name && !kthread {
					before.ticks = 0 // started during the interval
				}
				name := p.name
				if kthread {
					// Kernel threads (kworkers renamed by their work
					// queue), busy in part with the benchmark's own
					// namespaces and links.
					name = "[kernel threads]"
				}
				use[name] += float64(p.ticks-before.ticks) / 100 / interval.Seconds() * 100
			}
			for name, pct := range use {
				if pct < 10 {
					continue
				}
				o := m.Others[name]
				o.MaxPct = max(o.MaxPct, math.Round(pct))
				o.Intervals++
				m.Others[name] = o
			}
			prev = cur
		}
	}()
	return m
}

func (m *Monitor) finish() {
	close(m.stop)
	<-m.done
}

// busyProcesses samples the CPU time of every process twice, window
// apart, and lists those (other than this one) that used more than 5%.
func busyProcesses(window time.Duration) []string {
	sample := func() map[int]struct {
		name  string
		ticks int64
	} {
		out := map[int]struct {
			name  string
			ticks int64
		}{}
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			pid, err := strconv.Atoi(filepath.Base(d))
			if err != nil || pid == os.Getpid() {
				continue
			}
			b, err := os.ReadFile(d + "/stat")
			if err != nil {
				continue
			}
			s := string(b)
			open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
			if open < 0 || close < open {
				continue
			}
			f := strings.Fields(s[close+1:])
			if len(f) < 13 {
				continue
			}
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			out[pid] = struct {
				name  string
				ticks int64
			}{s[open+1 : close], ut + st}
		}
		return out
	}
	a := sample()
	time.Sleep(window)
	b := sample()
	hz := 100.0 // USER_HZ on Linux
	type busy struct {
		desc string
		pct  float64
	}
	var list []busy
	for pid, x := range b {
		y, ok := a[pid]
		if !ok || y.name != x.name {
			continue
		}
		pct := float64(x.ticks-y.ticks) / hz / window.Seconds() * 100
		if pct > 5 {
			list = append(list, busy{fmt.Sprintf("%s (pid %d, %.0f%%)", x.name, pid, pct), pct})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].pct > list[j].pct })
	var out []string
	for _, x := range list {
		out = append(out, x.desc)
	}
	return out
}

// cpuMark is a point in time as CPU counters: the CPU time of the
// harness's reaped children and the machine's idle and total time.
type cpuMark struct {
	children    time.Duration
	idle, total uint64 // clock ticks of /proc/stat's first line
}

func takeCPU() cpuMark {
	var m cpuMark
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_CHILDREN, &ru) == nil {
		m.children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			continue
		}
		m.total += v
		if i == 3 || i == 4 { // idle, iowait
			m.idle += v
		}
	}
	return m
}

// since returns the children's CPU time in milliseconds between m0 and m,
// and the idle share of the machine's CPU time.
func (m cpuMark) since(m0 cpuMark) (cpuMs, idle float64) {
	cpuMs = ms(m.children - m0.children)
	if dt := m.total - m0.total; dt > 0 {
		idle = round3(float64(m.idle-m0.idle) / float64(dt))
	}
	return cpuMs, idle
}
