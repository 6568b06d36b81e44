package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

// podmanHost is where a podman scenario runs podman: a network namespace
// of its own (the host namespace of the containers, with only lo and what
// the plugins create) and a private mount namespace, held open by one
// long-lived process (the holder: pause, started by launch), with the
// work dir bound over /run, /var/lib/cni, /var/lib/containers, /dev/shm
// and /var/tmp. Every podman command enters both namespaces of the holder,
// with containers.conf (CNI backend, the plugins under test) and
// storage.conf of the work dir. See /work/shared/tools/podman-e2e.md.
type podmanHost struct {
	traceDir        // the work dir: cni-trace.tsv, cni-calls/
	name     string // scenario
	dir      string // work dir
	netns    string // name under /run/netns
	dataDir  string // the plugins' store
	networks []string

	cmd   *exec.Cmd // the holder
	done  chan struct{}
	pid   int
	mntNS string
	torn  bool
}

// podmanState is what a killed run leaves for the next one to tear down.
type podmanState struct {
	Dir       string `json:"dir"`
	NetNS     string `json:"netns"`
	HolderPID int    `json:"holderPid"`
	MountNS   string `json:"mountNs"`
}

const podmanStateFile = "podman.json"

// Sub-directories of a podman host's work dir, and what they are bound over.
var podmanBinds = [][2]string{
	{"run", "/run"},
	{dirVarLibCNI, "/var/lib/cni"},
	{"var-lib-containers", "/var/lib/containers"},
	{"dev-shm", "/dev/shm"},
	// podman load unpacks an oci-archive there, whatever TMPDIR and
	// image_copy_tmp_dir say
	{"var-tmp", "/var/tmp"},
}

// startPodman prepares a podman host for the scenario with the conflists
// of conf/podman/ given (edits change the private copy of the first),
// loads the pause image, and registers the teardown. It skips the
// scenario, saying why, when podman cannot run here.
func startPodman(scenario string, conflists []string, edits ...func(conf map[string]any)) *podmanHost {
	GinkgoHelper()
	if podmanUnavailable != "" {
		Skip(podmanUnavailable)
	}
	h := &podmanHost{
		name:  scenario,
		dir:   filepath.Join(runDir, scenario),
		netns: fmt.Sprintf("cnme2e-%s-%d", scenario, os.Getpid()),
	}
	h.traceDir = traceDir(h.dir)
	DeferCleanup(func() {
		fmt.Fprintf(GinkgoWriter, "podman %s: CNI calls: %s\n", h.name, h.callSummary())
		t := time.Now()
		defer func() {
			fmt.Fprintf(GinkgoWriter, "podman %s: torn down in %s\n", h.name, time.Since(t).Round(time.Millisecond))
		}()
		if err := h.teardown(); err != nil {
			Fail(fmt.Sprintf("teardown of podman host %s: %v", h.name, err))
		}
	})
	dirs := []string{"storage", "runroot", "tmp", "logs", "cg-hold", dirCNIConf, dirData, filepath.Join(dirCNIBin, "real")}
	for _, b := range podmanBinds {
		dirs = append(dirs, b[0])
	}
	for _, d := range dirs {
		Expect(os.MkdirAll(filepath.Join(h.dir, d), 0o700)).To(Succeed())
	}
	h.dataDir = filepath.Join(h.dir, dirData)
	for i, c := range conflists {
		var e []func(map[string]any)
		if i == 0 {
			e = edits
		}
		h.addConflist(c, e...)
	}
	h.writeBinDir()
	h.writeConfig()

	// Mount points for the private binds: empty directories on the real fs.
	for _, b := range podmanBinds {
		Expect(os.MkdirAll(b[1], 0o755)).To(Succeed())
	}
	mustRun(time.Minute, nil, "ip", "netns", "add", h.netns)
	h.saveState()
	mustRun(time.Minute, nil, "ip", "-n", h.netns, "link", "set", "lo", "up")
	h.startHolder()

	// podman 5 has no CNI backend: it refuses the configuration.
	backend, err := h.podman("info", "--format", "{{.Host.NetworkBackend}}")
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "cni") {
		Skip("podman cannot use its CNI network backend here, which the podman scenarios need: " + err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	if b := strings.TrimSpace(backend); b != "cni" {
		Skip(fmt.Sprintf("podman's network backend is %q, not cni: this podman cannot run CNI plugins", b))
	}
	t := time.Now()
	out, err := h.podman("load", "-i", pauseTar)
	Expect(err).NotTo(HaveOccurred(), "podman load of the pause image: %s", out)
	fmt.Fprintf(GinkgoWriter, "podman %s: pause image loaded in %s\n", h.name, time.Since(t).Round(time.Millisecond))
	return h
}

func (h *podmanHost) nsPath() string { return "/run/netns/" + h.netns }

// addConflist copies conf/podman/<name>, edited, into the private CNI
// config dir, its dataDir pointed into the work dir, and returns the
// network's name: podman offers every network of that dir, read afresh
// by each command.
func (h *podmanHost) addConflist(name string, edits ...func(map[string]any)) string {
	GinkgoHelper()
	dst := filepath.Join(h.dir, dirCNIConf, fmt.Sprintf("%d-%s", len(h.networks), name))
	net := writePrivateConflist(filepath.Join(repoRoot, "conf", "podman", name), dst, h.dataDir, edits)
	h.networks = append(h.networks, net)
	return net
}

// writeBinDir fills the CNI plugin dir: a cnitrace copy per plugin name,
// the real plugins under real/ (podman brings lo up itself).
func (h *podmanHost) writeBinDir() {
	bin := filepath.Join(h.dir, dirCNIBin)
	for _, name := range []string{"cnm-bridge", "cnm-null"} {
		Expect(copyFile(filepath.Join(pluginsDir, name), filepath.Join(bin, "real", name), 0o755)).To(Succeed())
		Expect(copyFile(filepath.Join(toolsDir, "cnitrace"), filepath.Join(bin, name), 0o755)).To(Succeed())
	}
}

// writeConfig writes containers.conf and storage.conf.
func (h *podmanHost) writeConfig() {
	w := h.dir
	nofile, nproc := ulimits()
	driver := "overlay"
	if snapshotter != "overlayfs" {
		driver = "vfs"
	}
	containers := fmt.Sprintf(`[containers]
# podman asks for 1048576 by default; raising a hard limit needs
# CAP_SYS_RESOURCE, which these machines do not give
default_ulimits = ["nofile=%[1]d:%[1]d", "nproc=%[2]d:%[2]d"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %[3]q
# crun refuses hybrid cgroups
runtime = "runc"
tmp_dir = %[4]q
image_copy_tmp_dir = %[5]q
# pods' infra containers: the suite's own image, no registry
infra_image = %[6]q
infra_command = "/pause"

[network]
network_backend = "cni"
cni_plugin_dirs = [%[7]q]
network_config_dir = %[8]q
`, nofile, nproc, filepath.Join(w, "logs", "events.log"), filepath.Join(w, "run", "libpod"),
		filepath.Join(w, "tmp"), pauseImage, filepath.Join(w, dirCNIBin), filepath.Join(w, dirCNIConf))
	Expect(os.WriteFile(filepath.Join(w, "containers.conf"), []byte(containers), 0o600)).To(Succeed())
	storage := fmt.Sprintf("[storage]\ndriver = %q\ngraphroot = %q\nrunroot = %q\n",
		driver, filepath.Join(w, "storage"), filepath.Join(w, "runroot"))
	Expect(os.WriteFile(filepath.Join(w, "storage.conf"), []byte(storage), 0o600)).To(Succeed())
}

// ulimits are the container limits podman can set without
// CAP_SYS_RESOURCE: its own hard limits. podman caps its own RLIMIT_NPROC
// at kernel.pid_max, so a higher one fails in runc with "error setting
// rlimit type 6: operation not permitted".
func ulimits() (nofile, nproc uint64) {
	var l unix.Rlimit
	Expect(unix.Getrlimit(unix.RLIMIT_NOFILE, &l)).To(Succeed())
	nofile = l.Max
	Expect(unix.Getrlimit(unix.RLIMIT_NPROC, &l)).To(Succeed())
	nproc = l.Max
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if max, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && max < nproc {
			nproc = max
		}
	}
	return nofile, nproc
}

func (h *podmanHost) saveState() {
	b, err := json.Marshal(podmanState{Dir: h.dir, NetNS: h.netns, HolderPID: h.pid, MountNS: h.mntNS})
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(h.dir, podmanStateFile), b, 0o600)).To(Succeed())
}

// startHolder starts the process that holds the private mount namespace
// open: launch (fresh sysfs for the netns, cgroups kept, the binds) then
// pause, in the host's netns and a new private mount namespace.
func (h *podmanHost) startHolder() {
	args := []string{"--net=" + h.nsPath(), "--",
		"unshare", "--mount", "--propagation", "private", "--",
		filepath.Join(toolsDir, "launch"), filepath.Join(h.dir, "cg-hold")}
	for _, b := range podmanBinds {
		args = append(args, filepath.Join(h.dir, b[0])+"="+b[1])
	}
	args = append(args, "--", filepath.Join(toolsDir, "pause"))
	log, err := os.Create(filepath.Join(h.dir, "logs", "holder.log"))
	Expect(err).NotTo(HaveOccurred())
	h.cmd = exec.Command("nsenter", args...)
	h.cmd.Stdout, h.cmd.Stderr = log, log
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(h.cmd.Start()).To(Succeed())
	log.Close()
	h.pid = h.cmd.Process.Pid
	h.done = make(chan struct{})
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	pause := filepath.Join(toolsDir, "pause")
	Eventually(func() (string, error) {
		select {
		case <-h.done:
			b, _ := os.ReadFile(filepath.Join(h.dir, "logs", "holder.log"))
			return "", StopTrying("the holder exited: " + string(b))
		default:
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.pid))
		return exe, nil
	}).WithTimeout(10*time.Second).WithPolling(10*time.Millisecond).Should(Equal(pause), "the namespace holder did not start")
	h.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.pid))
	Expect(err).NotTo(HaveOccurred())
	h.saveState()
	Expect(foreignMountNS(h.mntNS)).To(BeTrue(), "the holder is not in a private mount namespace")
	hNet, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", h.pid))
	rootNet, _ := os.Readlink("/proc/self/ns/net")
	Expect(hNet).NotTo(Equal(rootNet), "podman would run in the root network namespace")
}

func (h *podmanHost) alive() bool {
	if h.done != nil {
		select {
		case <-h.done:
			return false
		default:
			return true
		}
	}
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.pid))
	return h.pid > 0 && err == nil && mnt == h.mntNS
}

// podman runs podman in the holder's namespaces.
func (h *podmanHost) podman(args ...string) (string, error) {
	if !h.alive() {
		return "", fmt.Errorf("podman %s: the namespace holder is gone", strings.Join(args, " "))
	}
	w := h.dir
	env := []string{
		"CONTAINERS_CONF=" + filepath.Join(w, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(w, "storage.conf"),
		"TMPDIR=" + filepath.Join(w, "tmp"),
	}
	full := append([]string{"-t", strconv.Itoa(h.pid), "-m", "-n", "--", "podman",
		"--root", filepath.Join(w, "storage"), "--runroot", filepath.Join(w, "runroot"),
		"--cgroup-manager", "cgroupfs", "--events-backend", "file"}, args...)
	return command(2*time.Minute, env, "nsenter", full...)
}

// container is what the suite asks podman for.
type container struct {
	Name, Network string
	IP, MAC       string // --ip, --mac-address
	HostPort      int    // -p hostPort:containerPort
	Pod           string // --pod: join that pod's namespaces
}

// tryRun runs a pause container and returns podman's error as it is.
func (h *podmanHost) tryRun(c container) (*pod, error) {
	args := []string{"run", "-d", "--pull", "never", "--name", c.Name}
	if c.Pod != "" {
		args = append(args, "--pod", c.Pod) // its network and cgroup
	} else {
		args = append(args, "--network", c.Network, "--cgroup-parent", cgroups.Parent)
	}
	if c.IP != "" {
		args = append(args, "--ip", c.IP)
	}
	if c.MAC != "" {
		args = append(args, "--mac-address", c.MAC)
	}
	if c.HostPort != 0 {
		args = append(args, "-p", fmt.Sprintf("%d:%d", c.HostPort, containerPort))
	}
	t := time.Now()
	out, err := h.podman(append(args, pauseImage)...)
	if err != nil {
		fmt.Fprintf(GinkgoWriter, "podman %s: run %s refused in %s\n", h.name, c.Name, time.Since(t).Round(time.Millisecond))
		return nil, err
	}
	p := &pod{spec: podSpec{Name: c.Name}, ID: strings.TrimSpace(out)}
	fmt.Fprintf(GinkgoWriter, "podman %s: run %s: %s in %s\n", h.name, c.Name, short(p.ID), time.Since(t).Round(time.Millisecond))
	h.inspect(p, c.Network)
	return p, nil
}

// run runs a pause container, which must come up.
func (h *podmanHost) run(c container) *pod {
	GinkgoHelper()
	p, err := h.tryRun(c)
	Expect(err).NotTo(HaveOccurred())
	Expect(p.State).To(Equal("running"))
	Expect(p.PID).To(BeNumerically(">", 1))
	return p
}

// inspect reads a container's state, PID, address and MAC on network
// from podman.
func (h *podmanHost) inspect(p *pod, network string) {
	GinkgoHelper()
	out, err := h.podman("inspect", "--type", "container", "--format", "json", p.ID)
	Expect(err).NotTo(HaveOccurred())
	var r []struct {
		State struct {
			Status string `json:"Status"`
			Pid    int    `json:"Pid"`
		} `json:"State"`
		NetworkSettings struct {
			Networks map[string]struct {
				IPAddress  string `json:"IPAddress"`
				MacAddress string `json:"MacAddress"`
			} `json:"Networks"`
		} `json:"NetworkSettings"`
	}
	Expect(json.Unmarshal([]byte(out), &r)).To(Succeed(), out)
	Expect(r).To(HaveLen(1))
	p.State, p.PID = r[0].State.Status, r[0].State.Pid
	if n, ok := r[0].NetworkSettings.Networks[network]; ok {
		p.IP, p.MAC = n.IPAddress, n.MacAddress
	}
}

// runPod creates and starts a podman pod on network: its infra container
// (the pause image) holds the pod's network namespace.
func (h *podmanHost) runPod(name, network string) *pod {
	GinkgoHelper()
	t := time.Now()
	_, err := h.podman("pod", "create", "--name", name, "--network", network, "--cgroup-parent", cgroups.Parent)
	Expect(err).NotTo(HaveOccurred())
	_, err = h.podman("pod", "start", name)
	Expect(err).NotTo(HaveOccurred())
	out, err := h.podman("pod", "inspect", "--format", "{{.InfraContainerID}}", name)
	Expect(err).NotTo(HaveOccurred())
	p := &pod{spec: podSpec{Name: name}, ID: strings.TrimSpace(out)}
	fmt.Fprintf(GinkgoWriter, "podman %s: pod %s (infra %s) up in %s\n", h.name, name, short(p.ID), time.Since(t).Round(time.Millisecond))
	h.inspect(p, network)
	Expect(p.State).To(Equal("running"))
	return p
}

// removePod removes a pod with its containers.
func (h *podmanHost) removePod(p *pod) {
	GinkgoHelper()
	t := time.Now()
	_, err := h.podman("pod", "rm", "-f", "-t", "0", p.spec.Name)
	Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(GinkgoWriter, "podman %s: pod rm %s in %s\n", h.name, p.spec.Name, time.Since(t).Round(time.Millisecond))
}

// remove removes a container (podman rm -f, no grace period), timing it.
func (h *podmanHost) remove(p *pod) {
	GinkgoHelper()
	t := time.Now()
	_, err := h.podman("rm", "-f", "-t", "0", p.ID)
	Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(GinkgoWriter, "podman %s: rm %s in %s\n", h.name, p.spec.Name, time.Since(t).Round(time.Millisecond))
}

// hostCmd runs a program in the host network namespace of the containers.
func (h *podmanHost) hostCmd(name string, args ...string) (string, error) {
	return command(time.Minute, nil, "nsenter", append([]string{"--net=" + h.nsPath(), "--", name}, args...)...)
}

// hostLinks returns the links of the host network namespace.
func (h *podmanHost) hostLinks() []iface {
	GinkgoHelper()
	var out []iface
	Expect(ns.WithNetNSPath(h.nsPath(), func(ns.NetNS) (err error) {
		out, err = listLinks()
		return err
	})).To(Succeed())
	return out
}

// dumpLogs writes the CNI calls to the report.
func (h *podmanHost) dumpLogs() {
	fmt.Fprintf(GinkgoWriter, "--- podman %s: CNI calls (%s)\n", h.name, filepath.Join(h.dir, "cni-calls"))
	for _, c := range h.trace() {
		fmt.Fprintf(GinkgoWriter, "%s %s %s %s exit %d netns %q args %q\n", c.Command, c.Plugin, short(c.ContainerID), c.IfName, c.Exit, c.NetNS, c.Args)
	}
}

// teardown removes everything the podman host made, whatever state it is
// in: the pods and containers (through podman, so that CNI DEL runs),
// what runc still knows, the holder and every process left in the
// private mount namespace with their descendants (conmon and the
// containers), and the network namespace. It is idempotent and carries
// on past errors, which it returns together.
func (h *podmanHost) teardown() error {
	if h.torn {
		return nil
	}
	h.torn = true
	var errs []error
	if h.alive() {
		for _, args := range [][]string{{"pod", "rm", "-a", "-f", "-t", "0"}, {"rm", "-a", "-f", "-t", "0"}} {
			if _, err := h.podman(args...); err != nil {
				errs = append(errs, err)
			}
		}
	}

	// Containers runc still knows (podman's runc root is /run/runc, the
	// work dir's run/ in the private namespace): runc kills them and
	// removes their cgroups.
	errs = append(errs, runcDeleteAll(filepath.Join(h.dir, "run", "runc"), "podman "+h.name)...)

	if foreignMountNS(h.mntNS) {
		// conmon, the containers below it, and what conmon's exit
		// command (podman container cleanup) started.
		roots := inMountNS(h.mntNS)
		killed := map[int]bool{h.pid: true}
		for _, pid := range append(descendants(roots), roots...) {
			if !killed[pid] && syscall.Kill(pid, syscall.SIGKILL) == nil {
				fmt.Fprintf(GinkgoWriter, "podman %s: killed leftover process %d\n", h.name, pid)
			}
			killed[pid] = true
		}
		if h.pid > 0 && h.alive() {
			_ = syscall.Kill(h.pid, syscall.SIGKILL)
		}
		if left := waitGone(h.mntNS, 10*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes %v stay in the mount namespace %s", left, h.mntNS))
		}
	}
	if h.done != nil {
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("the namespace holder did not exit"))
		}
	}

	if h.netns != "" {
		if _, err := os.Stat(h.nsPath()); err == nil {
			if _, err := command(time.Minute, nil, "ip", "netns", "del", h.netns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	_ = os.Remove(filepath.Join(h.dir, podmanStateFile))
	return errors.Join(errs...)
}
