package e2e_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
)

// cgroupPlan is where the pods' cgroups go: below the suite's own memory
// cgroup on cgroup v1 (so that they stay inside whatever memory accounting
// the session is under), else at the top; one parent per run. Created
// lists the parent directories that did not exist, to rmdir afterwards.
type cgroupPlan struct {
	Parent  string   `json:"parent"`
	Created []string `json:"created"`
}

func planCgroups(pid int) *cgroupPlan {
	name := fmt.Sprintf("cnm-e2e-%d", pid)
	p := &cgroupPlan{Parent: "/" + name}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil { // v1 or hybrid
		if memcg := ownCgroup("memory"); memcg != "" && memcg != "/" {
			p.Parent = filepath.Join(memcg, name)
		}
	}
	for _, mp := range cgroupMounts() {
		var missing []string
		for rel := p.Parent; rel != "/" && rel != "."; rel = filepath.Dir(rel) {
			if _, err := os.Stat(filepath.Join(mp, rel)); err != nil {
				missing = append(missing, filepath.Join(mp, rel))
			}
		}
		p.Created = append(p.Created, missing...) // deepest first
	}
	return p
}

// ownCgroup returns this process's cgroup in the v1 hierarchy of controller.
func ownCgroup(controller string) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2]
			}
		}
	}
	return ""
}

// cgroupMounts lists the mount points of the cgroup hierarchies.
func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	return out
}

func (p *cgroupPlan) save(path string) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// removeSandbox removes the (empty) cgroup of a sandbox runc did not get
// to delete.
func (p *cgroupPlan) removeSandbox(id string) {
	for _, mp := range cgroupMounts() {
		_ = os.Remove(filepath.Join(mp, p.Parent, id))
	}
}

// remove removes the parents the plan created and the cgroups runtimes
// left below them (podman leaves a pod's cgroup in some hierarchies);
// rmdir only, so a cgroup that still holds anything stays (and is
// reported).
func (p *cgroupPlan) remove() {
	for _, mp := range cgroupMounts() {
		removeBelow(filepath.Join(mp, p.Parent))
	}
	for _, d := range p.Created {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(GinkgoWriter, "warning: cgroup %s stays: %v\n", d, err)
		}
	}
}

// removeBelow rmdirs the cgroups below dir, deepest first.
func removeBelow(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			sub := filepath.Join(dir, e.Name())
			removeBelow(sub)
			_ = os.Remove(sub)
		}
	}
}

// nodeState is what a killed run leaves for the next one to tear down.
type nodeState struct {
	Dir           string `json:"dir"`
	NetNS         string `json:"netns"`
	ContainerdPID int    `json:"containerdPid"`
	MountNS       string `json:"mountNs"`
}

// reapStaleRuns tears down what runs that died before their teardown
// left: their containerd and pods, podman containers, network
// namespaces, cgroups and dirs.
func reapStaleRuns() {
	runs, _ := filepath.Glob(filepath.Join(workBase, "run-*"))
	for _, dir := range runs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "run-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // still running: someone else's run
		}
		fmt.Fprintf(GinkgoWriter, "tearing down what run %d left in %s\n", pid, dir)
		states, _ := filepath.Glob(filepath.Join(dir, "*", "node.json"))
		for _, s := range states {
			var st nodeState
			if b, err := os.ReadFile(s); err == nil && json.Unmarshal(b, &st) == nil {
				n := &node{name: filepath.Base(st.Dir), dir: st.Dir, netns: st.NetNS, pid: st.ContainerdPID, mntNS: st.MountNS}
				if err := n.teardown(); err != nil {
					fmt.Fprintf(GinkgoWriter, "warning: %v\n", err)
				}
			}
		}
		states, _ = filepath.Glob(filepath.Join(dir, "*", podmanStateFile))
		for _, s := range states {
			var st podmanState
			if b, err := os.ReadFile(s); err == nil && json.Unmarshal(b, &st) == nil {
				h := &podmanHost{name: filepath.Base(st.Dir), dir: st.Dir, netns: st.NetNS, pid: st.HolderPID, mntNS: st.MountNS}
				if err := h.teardown(); err != nil {
					fmt.Fprintf(GinkgoWriter, "warning: %v\n", err)
				}
			}
		}
		var cg cgroupPlan
		if b, err := os.ReadFile(filepath.Join(dir, "cgroups.json")); err == nil && json.Unmarshal(b, &cg) == nil {
			cg.remove()
		}
		// The overlay's underlay, once its nodes are gone.
		if _, err := os.Stat(filepath.Join("/run/netns", underlayNetNS(pid))); err == nil {
			if _, err := command(time.Minute, nil, "ip", "netns", "del", underlayNetNS(pid)); err != nil {
				fmt.Fprintf(GinkgoWriter, "warning: %v\n", err)
			}
		}
		if err := removeWorkDir(dir); err != nil {
			fmt.Fprintf(GinkgoWriter, "warning: %v\n", err)
		}
	}
}

// removeWorkDir removes dir unless something is still mounted below it
// (then removing would reach into the mount).
func removeWorkDir(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return fmt.Errorf("not removing %s: %s is mounted", dir, f[4])
		}
	}
	return os.RemoveAll(dir)
}

// Processes.

type procInfo struct {
	pid, ppid int
	mntNS     string
}

func processes() []procInfo {
	entries, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(stat)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)) // empty for zombies
		out = append(out, procInfo{pid: pid, ppid: ppid, mntNS: mnt})
	}
	return out
}

// inMountNS returns the live processes of mount namespace ns.
func inMountNS(ns string) []int {
	var out []int
	for _, p := range processes() {
		if p.mntNS == ns {
			out = append(out, p.pid)
		}
	}
	return out
}

// descendants returns the descendants of roots, children before their own children.
func descendants(roots []int) []int {
	kids := map[int][]int{}
	for _, p := range processes() {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range kids[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	sort.Ints(out)
	return out
}

// foreignMountNS reports whether ns is neither ours nor PID 1's: the only
// kind of namespace whose processes teardown may kill wholesale.
func foreignMountNS(ns string) bool {
	if ns == "" {
		return false
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	init, _ := os.Readlink("/proc/1/ns/mnt")
	return ns != self && ns != init
}

// waitGone waits until no live process is left in mount namespace ns.
func waitGone(ns string, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		left := inMountNS(ns)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}
