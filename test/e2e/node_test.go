package e2e_test

import (
	"bufio"
	"encoding/json"
	"errors"
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
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// node is one containerd "node": containerd with its CRI plugin, started
// in a network namespace of its own (the node's host namespace, with only
// lo and what the plugins create) and a private mount namespace, with one
// conflist of conf/containerd/ and the plugins under test.
type node struct {
	name     string // scenario
	dir      string // work dir
	netns    string // name under /run/netns
	netName  string // the CNI network
	dataDir  string // the plugins' store
	conflist string // the private copy CRI loads

	cmd   *exec.Cmd
	done  chan struct{} // closed when containerd has exited
	pid   int
	mntNS string
	torn  bool
}

// Sub-directories of a node's work dir.
const (
	dirVarLibCNI     = "var-lib-cni"    // bound over /var/lib/cni
	dirRunContainerd = "run-containerd" // bound over /run/containerd
	dirRunCnmnet     = "run-cnmnet"     // bound over /run/cnmnet (the firewall lock)
	dirCNIBin        = "cni-bin"
	dirCNIConf       = "cni-conf"
	dirData          = "cnm-data"
)

// startNode starts a node for the scenario with conf/containerd/<conflist>
// and registers its teardown. edits, if any, change the private copy of
// the conflist.
func startNode(scenario, conflist string, edits ...func(conf map[string]any)) *node {
	GinkgoHelper()
	return startNodeWith(scenario, conflist, nodeOptions{}, edits...)
}

// nodeOptions are what a scenario adds to a node beyond startNode's.
type nodeOptions struct {
	// plugins are more plugins of pluginsDir to put in bin_dir.
	plugins []string
	// beforeContainerd runs once the node's network namespace exists
	// (lo up), before containerd starts: to give the node an uplink.
	beforeContainerd func(n *node)
}

// startNodeWith is startNode with options.
func startNodeWith(scenario, conflist string, opts nodeOptions, edits ...func(conf map[string]any)) *node {
	GinkgoHelper()
	n := &node{
		name:  scenario,
		dir:   filepath.Join(runDir, scenario),
		netns: fmt.Sprintf("cnme2e-%s-%d", scenario, os.Getpid()),
	}
	started := false
	DeferCleanup(func() {
		if !started { // else the scenario's AfterEach showed them
			n.dumpLogs()
		}
		fmt.Fprintf(GinkgoWriter, "node %s: CNI calls: %s\n", n.name, n.callSummary())
		t := time.Now()
		defer func() {
			fmt.Fprintf(GinkgoWriter, "node %s: torn down in %s\n", n.name, time.Since(t).Round(time.Millisecond))
		}()
		if err := n.teardown(); err != nil {
			Fail(fmt.Sprintf("teardown of node %s: %v", n.name, err))
		}
	})
	for _, d := range []string{"root", "state", "opt", "logs", "cg-hold", "pods",
		dirVarLibCNI, dirRunContainerd, dirRunCnmnet, dirCNIConf, dirData, filepath.Join(dirCNIBin, "real")} {
		Expect(os.MkdirAll(filepath.Join(n.dir, d), 0o700)).To(Succeed())
	}
	n.dataDir = filepath.Join(n.dir, dirData)
	n.writeConflist(conflist, edits)
	n.writeBinDir(opts.plugins...)
	n.writeConfig()

	// Mount points for the private binds: empty directories on the real fs.
	for _, d := range []string{"/var/lib/cni", "/run/containerd", "/run/cnmnet"} {
		Expect(os.MkdirAll(d, 0o755)).To(Succeed())
	}
	mustRun(time.Minute, nil, "ip", "netns", "add", n.netns)
	n.saveState()
	mustRun(time.Minute, nil, "ip", "-n", n.netns, "link", "set", "lo", "up")
	if opts.beforeContainerd != nil {
		opts.beforeContainerd(n)
	}

	n.startContainerd()
	n.waitReady()
	t := time.Now()
	out, err := command(2*time.Minute, nil, "ctr", "--address", n.socket(), "-n", "k8s.io",
		"images", "import", "--snapshotter", snapshotter, pauseTar)
	Expect(err).NotTo(HaveOccurred(), "importing the pause image: %s", out)
	fmt.Fprintf(GinkgoWriter, "node %s: pause image imported in %s\n", n.name, time.Since(t).Round(time.Millisecond))
	_, err = n.crictl("inspecti", pauseImage)
	Expect(err).NotTo(HaveOccurred(), "CRI does not see %s", pauseImage)
	started = true
	return n
}

func (n *node) socket() string     { return filepath.Join(n.dir, "containerd.sock") }
func (n *node) nsPath() string     { return "/run/netns/" + n.netns }
func (n *node) crictlConf() string { return filepath.Join(n.dir, "crictl.yaml") }

// writeConflist copies the conflist into the private conf_dir with every
// cnmnet plugin's dataDir pointed into the work dir, and edits applied.
func (n *node) writeConflist(name string, edits []func(map[string]any)) {
	n.conflist = filepath.Join(n.dir, dirCNIConf, name)
	n.netName = writePrivateConflist(filepath.Join(repoRoot, "conf", "containerd", name), n.conflist, n.dataDir, edits)
}

// writePrivateConflist copies the conflist src to dst with every cnmnet
// plugin's dataDir set to dataDir and edits applied, and returns the
// network's name.
func writePrivateConflist(src, dst, dataDir string, edits []func(map[string]any)) string {
	GinkgoHelper()
	b, err := os.ReadFile(src)
	Expect(err).NotTo(HaveOccurred())
	var conf map[string]any
	Expect(json.Unmarshal(b, &conf)).To(Succeed())
	plugins, _ := conf["plugins"].([]any)
	Expect(plugins).NotTo(BeEmpty())
	for _, p := range plugins {
		pm := p.(map[string]any)
		if t, _ := pm["type"].(string); strings.HasPrefix(t, "cnm-") {
			pm["dataDir"] = dataDir
		}
	}
	for _, edit := range edits {
		edit(conf)
	}
	name, _ := conf["name"].(string)
	Expect(name).NotTo(BeEmpty())
	out, err := json.MarshalIndent(conf, "", "  ")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(dst, out, 0o644)).To(Succeed())
	return name
}

// writeBinDir fills the CNI bin_dir: a cnitrace copy per plugin name, the
// real plugins under real/ — ours (and more of pluginsDir) and the
// reference loopback, which containerd always runs for lo.
func (n *node) writeBinDir(more ...string) {
	bin := filepath.Join(n.dir, dirCNIBin)
	plugins := map[string]string{
		"cnm-bridge": filepath.Join(pluginsDir, "cnm-bridge"),
		"cnm-null":   filepath.Join(pluginsDir, "cnm-null"),
		"loopback":   refLoopback,
	}
	for _, name := range more {
		plugins[name] = filepath.Join(pluginsDir, name)
	}
	for name, src := range plugins {
		Expect(copyFile(src, filepath.Join(bin, "real", name), 0o755)).To(Succeed())
		Expect(copyFile(filepath.Join(toolsDir, "cnitrace"), filepath.Join(bin, name), 0o755)).To(Succeed())
	}
}

func (n *node) writeConfig() {
	w := n.dir
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %[3]q

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    # pod netns bind mounts under state, not /var/run/netns
    netns_mounts_under_state_dir = true
    # no CAP_SYS_RESOURCE on some machines: the sandbox's oom_score_adj of
    # -998 would make runc fail
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = %[6]q
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
      max_conf_num = 1
`, filepath.Join(w, "root"), filepath.Join(w, "state"), n.socket(), filepath.Join(w, "opt"),
		pauseImage, snapshotter, filepath.Join(w, dirCNIBin), filepath.Join(w, dirCNIConf))
	Expect(os.WriteFile(filepath.Join(w, "config.toml"), []byte(config), 0o600)).To(Succeed())
	crictl := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\ndebug: false\npull-image-on-create: false\n",
		n.socket(), n.socket())
	Expect(os.WriteFile(n.crictlConf(), []byte(crictl), 0o600)).To(Succeed())
}

func (n *node) saveState() {
	b, err := json.Marshal(nodeState{Dir: n.dir, NetNS: n.netns, ContainerdPID: n.pid, MountNS: n.mntNS})
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(n.dir, "node.json"), b, 0o600)).To(Succeed())
}

// startContainerd runs containerd in the node's netns and a new mount
// namespace (a slave of ours) prepared by launch.
func (n *node) startContainerd() {
	w := n.dir
	args := []string{"--net=" + n.nsPath(), "--",
		"unshare", "--mount", "--propagation", "slave", "--",
		filepath.Join(toolsDir, "launch"), filepath.Join(w, "cg-hold"),
		filepath.Join(w, dirVarLibCNI) + "=/var/lib/cni",
		filepath.Join(w, dirRunContainerd) + "=/run/containerd",
		filepath.Join(w, dirRunCnmnet) + "=/run/cnmnet",
		"--", "containerd", "--config", filepath.Join(w, "config.toml")}
	log, err := os.Create(filepath.Join(w, "logs", "containerd.log"))
	Expect(err).NotTo(HaveOccurred())
	n.cmd = exec.Command("nsenter", args...)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	// If the suite dies, containerd goes with it (the next run reaps the rest).
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(n.cmd.Start()).To(Succeed())
	log.Close()
	n.pid = n.cmd.Process.Pid
	n.done = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		close(n.done)
	}()

	containerd, err := exec.LookPath("containerd")
	Expect(err).NotTo(HaveOccurred())
	containerd, _ = filepath.EvalSymlinks(containerd)
	Eventually(func() (string, error) {
		select {
		case <-n.done:
			return "", StopTrying("containerd exited: " + n.logTail(20))
		default:
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", n.pid))
		return exe, nil
	}).WithTimeout(10*time.Second).WithPolling(20*time.Millisecond).Should(Equal(containerd),
		"containerd did not start")
	n.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.pid))
	Expect(err).NotTo(HaveOccurred())
	n.saveState()
	Expect(foreignMountNS(n.mntNS)).To(BeTrue(), "containerd is not in a private mount namespace")
	cdNet, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", n.pid))
	rootNet, _ := os.Readlink("/proc/self/ns/net")
	Expect(cdNet).NotTo(Equal(rootNet), "containerd runs in the root network namespace")
}

// waitReady waits for CRI's RuntimeReady and NetworkReady; NetworkReady
// that stays false means the conflist did not load.
func (n *node) waitReady() {
	start := time.Now()
	var info struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status bool   `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
		LastCNILoadStatus string `json:"lastCNILoadStatus"`
	}
	var runtimeReady time.Time
	for {
		select {
		case <-n.done:
			Fail("containerd exited: " + n.logTail(20))
		default:
		}
		if out, err := n.crictl("info"); err == nil && json.Unmarshal([]byte(out), &info) == nil {
			ready := map[string]bool{}
			for _, c := range info.Status.Conditions {
				ready[c.Type] = c.Status
			}
			if ready["RuntimeReady"] && ready["NetworkReady"] {
				fmt.Fprintf(GinkgoWriter, "node %s: containerd %d ready in %s\n", n.name, n.pid, time.Since(start).Round(time.Millisecond))
				return
			}
			if ready["RuntimeReady"] && runtimeReady.IsZero() {
				runtimeReady = time.Now()
			}
			if !runtimeReady.IsZero() && time.Since(runtimeReady) > 5*time.Second {
				Fail(fmt.Sprintf("CRI network not ready: the conflist did not load: %s", info.LastCNILoadStatus))
			}
		}
		if time.Since(start) > 30*time.Second {
			Fail("CRI not ready after 30s: " + n.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crictl runs crictl against the node's containerd.
func (n *node) crictl(args ...string) (string, error) {
	return command(2*time.Minute, nil, crictlBin, append([]string{"--config", n.crictlConf()}, args...)...)
}

func (n *node) alive() bool {
	if n.done != nil {
		select {
		case <-n.done:
			return false
		default:
			return true
		}
	}
	// A node of an earlier run: its containerd, if that PID is still it.
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.pid))
	return n.pid > 0 && err == nil && mnt == n.mntNS
}

// stopContainerd stops containerd (SIGTERM, then SIGKILL after 10s) and
// waits for it.
func (n *node) stopContainerd() {
	if n.pid <= 0 || !n.alive() {
		return
	}
	_ = syscall.Kill(n.pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for n.alive() {
		if time.Now().After(deadline) {
			_ = syscall.Kill(n.pid, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
		}
		if n.done != nil {
			select {
			case <-n.done:
			case <-time.After(50 * time.Millisecond):
			}
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// teardown removes everything the node made, whatever state it is in:
// the pods (through CRI, so that CNI DEL runs), containerd, what runc
// still knows, every process left in the private mount namespace and their
// descendants, the network namespace, and the sandboxes' cgroups. It is
// idempotent and carries on past errors, which it returns together.
func (n *node) teardown() error {
	if n.torn {
		return nil
	}
	n.torn = true
	var errs []error
	if n.alive() && crictlBin != "" {
		if out, err := n.crictl("pods", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				if _, err := n.crictl("stopp", id); err != nil {
					errs = append(errs, err)
				}
				if _, err := n.crictl("rmp", id); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	n.stopContainerd()

	// Containers runc still knows: runc kills them and removes their cgroups.
	errs = append(errs, runcDeleteAll(filepath.Join(n.dir, dirRunContainerd, "runc", "k8s.io"), "node "+n.name)...)

	// Shims and whatever else lives in the private mount namespace, and
	// their descendants (pause has a mount namespace of its own).
	if foreignMountNS(n.mntNS) {
		roots := inMountNS(n.mntNS)
		for _, pid := range append(descendants(roots), roots...) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				fmt.Fprintf(GinkgoWriter, "node %s: killed leftover process %d\n", n.name, pid)
			}
		}
		if left := waitGone(n.mntNS, 10*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes %v stay in the mount namespace %s", left, n.mntNS))
		}
	}

	if n.netns != "" {
		if _, err := os.Stat(n.nsPath()); err == nil {
			if _, err := command(time.Minute, nil, "ip", "netns", "del", n.netns); err != nil {
				errs = append(errs, err)
			}
		}
	}

	// Cgroups of sandboxes that runc did not get to delete.
	if cgroups != nil {
		ids, _ := filepath.Glob(filepath.Join(n.dir, "root", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
		for _, d := range ids {
			cgroups.removeSandbox(filepath.Base(d))
		}
	}
	_ = os.Remove(filepath.Join(n.dir, "node.json"))
	return errors.Join(errs...)
}

// logTail returns the last lines of containerd's log.
func (n *node) logTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "logs", "containerd.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// dumpLogs writes the node's error log lines and CNI trace to the report.
func (n *node) dumpLogs() {
	fmt.Fprintf(GinkgoWriter, "--- node %s: containerd errors (%s)\n", n.name, filepath.Join(n.dir, "logs", "containerd.log"))
	if f, err := os.Open(filepath.Join(n.dir, "logs", "containerd.log")); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "level=error") {
				fmt.Fprintln(GinkgoWriter, sc.Text())
			}
		}
		f.Close()
	}
	fmt.Fprintf(GinkgoWriter, "--- node %s: CNI calls\n", n.name)
	for _, c := range n.trace() {
		fmt.Fprintf(GinkgoWriter, "%s %s %s %s exit %d netns %q\n", c.Command, c.Plugin, short(c.ContainerID), c.IfName, c.Exit, c.NetNS)
	}
}

// inHost runs fn in the node's host network namespace.
func (n *node) inHost(fn func() error) error {
	return ns.WithNetNSPath(n.nsPath(), func(ns.NetNS) error { return fn() })
}

// hostCmd runs a program in the node's host network namespace.
func (n *node) hostCmd(name string, args ...string) (string, error) {
	return command(time.Minute, nil, "nsenter", append([]string{"--net=" + n.nsPath(), "--", name}, args...)...)
}

// The CNI call trace (see cnitrace).

type cniCall struct {
	Time        int64
	Command     string
	Plugin      string
	ContainerID string
	IfName      string
	Exit        int
	NetNS       string
	Args        string
	Call        string // stem of its stdin and stdout files in cni-calls/
}

// traceDir is a work dir whose CNI bin dir is made of cnitrace copies:
// it holds cni-trace.tsv and cni-calls/.
type traceDir string

func (n *node) trace() []cniCall { return traceDir(n.dir).trace() }

func (n *node) callsFor(plugin, sandboxID string, commands ...string) []cniCall {
	return traceDir(n.dir).callsFor(plugin, sandboxID, commands...)
}

func (n *node) callSummary() string { return traceDir(n.dir).callSummary() }

func (n *node) output(c cniCall) string { return traceDir(n.dir).output(c) }

func (d traceDir) trace() []cniCall {
	b, err := os.ReadFile(filepath.Join(string(d), "cni-trace.tsv"))
	if err != nil {
		return nil
	}
	var calls []cniCall
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 9 {
			continue
		}
		t, _ := strconv.ParseInt(f[0], 10, 64)
		code, _ := strconv.Atoi(f[5])
		calls = append(calls, cniCall{t, f[1], f[2], f[3], f[4], code, f[6], f[7], f[8]})
	}
	// In the order the calls started.
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Time < calls[j].Time })
	return calls
}

// callsFor returns the traced calls of plugin for a sandbox ("": any), in
// order.
func (d traceDir) callsFor(plugin, sandboxID string, commands ...string) []cniCall {
	var out []cniCall
	for _, c := range d.trace() {
		if c.Plugin != plugin || (sandboxID != "" && c.ContainerID != sandboxID) {
			continue
		}
		if len(commands) == 0 {
			out = append(out, c)
			continue
		}
		for _, cmd := range commands {
			if c.Command == cmd {
				out = append(out, c)
			}
		}
	}
	return out
}

// callSummary counts the traced calls by command and plugin.
func (d traceDir) callSummary() string {
	count := map[string]int{}
	var keys []string
	for _, c := range d.trace() {
		k := c.Command + " " + c.Plugin
		if count[k] == 0 {
			keys = append(keys, k)
		}
		count[k]++
		if c.Exit != 0 {
			k = k + " failed"
			if count[k] == 0 {
				keys = append(keys, k)
			}
			count[k]++
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s x%d", k, count[k]))
	}
	return strings.Join(parts, ", ")
}

// stdin returns what the call read on stdin (the network configuration).
func (d traceDir) stdin(c cniCall) string {
	b, _ := os.ReadFile(filepath.Join(string(d), "cni-calls", c.Call+".stdin"))
	return string(b)
}

// output returns what the call wrote on stdout (its result or error).
func (d traceDir) output(c cniCall) string {
	b, _ := os.ReadFile(filepath.Join(string(d), "cni-calls", c.Call+".stdout"))
	return string(b)
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// runcDeleteAll has runc kill and remove every container it knows under
// root (a runtime's runc state directory), with their cgroups; who names
// the runtime in the log.
func runcDeleteAll(root, who string) []error {
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	var errs []error
	out, _ := command(time.Minute, nil, "runc", "--root", root, "list", "-q")
	for _, id := range strings.Fields(out) {
		if _, err := command(time.Minute, nil, "runc", "--root", root, "delete", "--force", id); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(GinkgoWriter, "%s: runc delete --force %s\n", who, id)
		}
	}
	return errs
}
