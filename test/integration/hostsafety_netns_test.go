package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// pidNS is a private PID namespace whose procfs is mounted at proc, so
// that /proc/<pid>/ns/net paths of its processes can be handed to a
// plugin, and whose PIDs the test chooses (ns_last_pid is per PID
// namespace): the way to reproduce a PID being reused.
type pidNS struct {
	initPID int // host PID of its PID 1
	proc    string
}

func newPIDNS() *pidNS {
	GinkgoHelper()
	init := exec.Command("unshare", "--pid", "--fork", "--kill-child", "sleep", "3600")
	Expect(init.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = init.Process.Kill()
		_ = init.Wait()
	})
	p := &pidNS{initPID: childOf(init.Process.Pid), proc: filepath.Join(GinkgoT().TempDir(), "proc")}
	Expect(os.Mkdir(p.proc, 0o755)).To(Succeed())
	// A procfs shows the PID namespace of the process that mounts it.
	p.run("mount", "-t", "proc", "proc", p.proc)
	DeferCleanup(func() { Expect(unix.Unmount(p.proc, unix.MNT_DETACH)).To(Succeed()) })
	return p
}

// childOf waits for the one child of the process pid and returns it.
func childOf(pid int) int {
	GinkgoHelper()
	var child int
	Eventually(func() error {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return err
		}
		fields := strings.Fields(string(raw))
		if len(fields) != 1 {
			return fmt.Errorf("process %d has children %q", pid, fields)
		}
		child, err = strconv.Atoi(fields[0])
		return err
	}).WithTimeout(5 * time.Second).WithPolling(5 * time.Millisecond).Should(Succeed())
	return child
}

// run runs a command as a process of the PID namespace.
func (p *pidNS) run(command ...string) {
	GinkgoHelper()
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(p.initPID), "--pid", "--"}, command...)...)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%v: %s", command, out)
}

// spawnAs starts a process with a network namespace of its own as PID pid
// of the namespace, and returns it; the process is killed when the spec
// ends if it is still there.
func (p *pidNS) spawnAs(pid int) *exec.Cmd {
	GinkgoHelper()
	// tee is given its PID before it writes, so the next process is pid.
	tee := exec.Command("nsenter", "--target", strconv.Itoa(p.initPID), "--pid", "--",
		"tee", "/proc/sys/kernel/ns_last_pid")
	tee.Stdin = strings.NewReader(strconv.Itoa(pid - 1))
	out, err := tee.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "set ns_last_pid: %s", out)
	cmd := exec.Command("nsenter", "--target", strconv.Itoa(p.initPID), "--pid", "--",
		"unshare", "--net", "sleep", "3600")
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { kill(cmd) })
	hostNS, err := os.Readlink(p.netnsPath(1))
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() (string, error) { return os.Readlink(p.netnsPath(pid)) }).
		WithTimeout(5*time.Second).WithPolling(5*time.Millisecond).
		ShouldNot(Equal(hostNS), "PID %d of the namespace has a network namespace of its own", pid)
	return cmd
}

// netnsPath is /proc/<pid>/ns/net for a PID of the namespace.
func (p *pidNS) netnsPath(pid int) string {
	return filepath.Join(p.proc, strconv.Itoa(pid), "ns", "net")
}

// kill ends a process started by spawnAs: nsenter's child, which nsenter
// reaps, so that its PID is free again.
func kill(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	for _, f := range strings.Fields(string(raw)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = cmd.Wait()
}

// bystander gives the namespace at path an eth0 of its own, with an
// address: what a DEL acting in the wrong namespace would delete.
func bystander(path string) {
	GinkgoHelper()
	n, err := ns.GetNS(path)
	Expect(err).NotTo(HaveOccurred())
	defer n.Close()
	Expect(n.Do(func(ns.NetNS) error {
		// A veth pair: this kernel may have no dummy links.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}); err != nil {
			return err
		}
		return upWithAddr("eth0", "198.51.100.7/24")
	})).To(Succeed())
}

// expectBystanderIntact says the eth0 bystander made is still there.
func expectBystanderIntact(path string) {
	GinkgoHelper()
	n, err := ns.GetNS(path)
	Expect(err).NotTo(HaveOccurred())
	defer n.Close()
	link, addrs := linkIn(n, "eth0")
	Expect(link).NotTo(BeNil(), "the other namespace's eth0 was deleted")
	Expect(link.Type()).To(Equal("veth"))
	Expect(addrs).To(ContainElement(WithTransform(func(a netlink.Addr) string { return a.IPNet.String() }, Equal("198.51.100.7/24"))))
}

var _ = Describe("host safety: a sandbox is acted in only if it is the namespace the endpoint joined", Label("hostsafety"), func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("safens", "10.96.0.0/24")
	})

	add := func(containerID, netns, args string) types.Result {
		GinkgoHelper()
		out, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: containerID, netns: netns, args: args, stdin: w.stdin(n, nil)})
		Expect(err).NotTo(HaveOccurred())
		res, err := current.NewResult(out)
		Expect(err).NotTo(HaveOccurred())
		return res
	}
	del := func(containerID, netns string) {
		GinkgoHelper()
		_, err := w.exec("cnm-bridge", invocation{command: "DEL", containerID: containerID, netns: netns, stdin: w.stdin(n, nil)})
		Expect(err).NotTo(HaveOccurred())
	}

	// Each way the runtime or an operator can release an endpoint whose
	// sandbox path now names another process's namespace.
	type release func(path string)
	releases := map[string]release{
		"DEL without CNI_NETNS":      func(string) { del("victim", "") },
		"DEL with the recorded path": func(path string) { del("victim", path) },
		"GC without the attachment": func(string) {
			_, err := w.exec("cnm-bridge", invocation{command: "GC",
				stdin: w.stdin(n, map[string]any{"cni.dev/valid-attachments": []any{}})})
			Expect(err).NotTo(HaveOccurred())
		},
		"cnmctl endpoint rm --force": func(string) { cnmctlOK(w, "endpoint", "rm", "--network", n.name, "--force", "victim/eth0") },
		"cnmctl check --repair":      func(string) { cnmctlOK(w, "check", "--repair") },
		"cnmctl gc":                  func(string) { cnmctlOK(w, "gc") },
		"DEL without CNI_NETNS, then with the path": func(path string) {
			del("victim", "")
			del("victim", path)
		},
	}
	releaseEntries := func() []TableEntry {
		var out []TableEntry
		for name := range releases {
			out = append(out, Entry(name, name))
		}
		return out
	}

	DescribeTable("a /proc/<pid>/ns/net path whose PID was reused: nothing in the new process's namespace is touched",
		func(how string) {
			p := newPIDNS()
			const pid = 4242
			path := p.netnsPath(pid)
			victim := p.spawnAs(pid)
			add("victim", path, "")
			kill(victim) // the container dies; its runtime has not sent DEL
			p.spawnAs(pid)
			bystander(path)

			releases[how](path)
			expectBystanderIntact(path)
			w.expectNoEndpointState(n.name)
			Expect(w.hostLinks("veth")).To(BeEmpty())
		},
		releaseEntries())

	It("refuses CHECK against a path that holds another namespace now", func() {
		p := newPIDNS()
		const pid = 4343
		path := p.netnsPath(pid)
		victim := p.spawnAs(pid)
		add("victim", path, "")
		kill(victim)
		p.spawnAs(pid)
		bystander(path)
		res, err := w.exec("cnm-bridge", invocation{command: "CHECK", containerID: "victim", netns: path, stdin: w.stdin(n, map[string]any{"prevResult": nil})})
		Expect(err).To(HaveOccurred(), "%s", res)
		Expect(cniCode(err)).To(BeEquivalentTo(4))
		Expect(err.Error()).To(ContainSubstring("is not the network namespace endpoint victim/eth0 joined"))
		expectBystanderIntact(path)
	})

	Describe("a named netns removed and made again under the same path", func() {
		var (
			path string
			old  ns.NetNS
		)
		BeforeEach(func() {
			old = newNS()
			path = old.Path()
		})
		recreate := func() ns.NetNS {
			removeNS(old)
			return testns.NewAt(path)
		}

		It("is not the old sandbox: DEL of the old container leaves the new namespace alone", func() {
			add("old", path, "")
			recreate()
			bystander(path)
			del("old", path)
			del("old", "")
			expectBystanderIntact(path)
			w.expectNoEndpointState(n.name)
		})

		It("lets a persistent endpoint stuck on the old sandbox be taken over, with its address and MAC", func() {
			first := add("c1", path, "CNM_ENDPOINT=web")
			recreate()
			second := add("c2", path, "CNM_ENDPOINT=web") // was error 101
			Expect(firstIP(second)).To(Equal(firstIP(first)))
			Expect(macOf(second)).To(Equal(macOf(first)))
			// The old container's late DEL finds nothing of its own.
			del("c1", path)
			_, err := w.exec("cnm-bridge", invocation{command: "CHECK", containerID: "c2", netns: path,
				args: "CNM_ENDPOINT=web", stdin: w.stdin(n, map[string]any{"prevResult": second})})
			Expect(err).NotTo(HaveOccurred())
		})

		It("still refuses a second live sandbox of a persistent endpoint with error 101", func() {
			add("c1", path, "CNM_ENDPOINT=web")
			other := newNS()
			_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "c2", netns: other.Path(),
				args: "CNM_ENDPOINT=web", stdin: w.stdin(n, nil)})
			Expect(cniCode(err)).To(BeEquivalentTo(101))
		})
	})
})

// cnmctlOK runs cnmctl and expects it to succeed (exit 0, or 3 for a
// check that found and repaired something).
func cnmctlOK(w *world, args ...string) {
	GinkgoHelper()
	out, errOut, code := w.cnmctl(args...)
	Expect(code).To(Or(BeZero(), Equal(3)), "%s%s", out, errOut)
}
