package integration_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

var _ = Describe("cnmctl tells the truth", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("truth", "10.102.0.0/24")
	})

	DescribeTable("a read-only command on a --data-dir without a store creates nothing and says so",
		func(args ...string) {
			dir := filepath.Join(GinkgoT().TempDir(), "typo")
			out, errOut, code := runCnmctl(append([]string{"--data-dir", dir}, args...)...)
			Expect(code).To(Equal(1), "%s%s", out, errOut)
			Expect(errOut).To(ContainSubstring(dir))
			Expect(errOut).To(ContainSubstring("no store"))
			Expect(out).NotTo(ContainSubstring("agree"))
			Expect(dir).NotTo(BeADirectory())
		},
		Entry("network ls", "network", "ls"),
		Entry("network inspect", "network", "inspect", "x"),
		Entry("endpoint ls", "endpoint", "ls"),
		Entry("sandbox ls", "sandbox", "ls"),
		Entry("check", "check"),
		Entry("gc --dry-run", "gc", "--dry-run"),
	)

	It("answers -o json for every command, rm included, and errors as a CNI error object", func() {
		a := attachment{id: "a", netns: newNS(), caps: publish(8090, 80)}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		for _, args := range [][]string{
			{"network", "ls"}, {"network", "inspect", n.name},
			{"endpoint", "ls"}, {"endpoint", "inspect", "a/eth0"},
			{"endpoint", "create", "--network", n.name, "--name", "spare"},
			{"sandbox", "ls"}, {"gc", "--dry-run"}, {"gc"}, {"check"}, {"version"},
			{"endpoint", "rm", "--network", n.name, "spare"},
		} {
			out, errOut, code := w.cnmctl(append([]string{"-o", "json"}, args...)...)
			Expect(code).To(BeZero(), "%v: %s", args, errOut)
			Expect(json.Valid([]byte(out))).To(BeTrue(), "%v: %s", args, out)
		}
		var removed map[string]string
		Expect(w.del(n, a)).To(Succeed())
		w.cnmctlJSON(&removed, "network", "rm", n.name)
		Expect(removed).To(Equal(map[string]string{"removed": "network", "network": n.name}))

		out, _, code := w.cnmctl("-o", "json", "network", "inspect", "nosuch")
		Expect(code).To(Equal(1))
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		Expect(json.Unmarshal([]byte(out), &cniErr)).To(Succeed(), out)
		Expect(cniErr.Code).NotTo(BeZero())
		Expect(cniErr.Msg).To(ContainSubstring("nosuch"))

		out, _, code = w.cnmctl("-o", "json", "endpoint", "ls", "extra-argument")
		Expect(code).To(Equal(2))
		Expect(json.Unmarshal([]byte(out), &cniErr)).To(Succeed(), out)
		Expect(cniErr.Code).To(BeEquivalentTo(4))
	})

	It("check reports a network whose bridge is gone, and --repair makes it again", func() {
		a := attachment{id: "a", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		bridges := w.hostLinks("cnm-")
		Expect(bridges).To(HaveLen(1))
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(bridges[0])
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		})).To(Succeed())
		out, _, code := w.cnmctl("check")
		Expect(code).To(Equal(3), out)
		Expect(out).To(ContainSubstring(bridges[0]))
		Expect(out).To(ContainSubstring("bridge is gone"))
		_, _, code = w.cnmctl("check", "--repair")
		Expect(code).To(BeZero())
		Expect(w.hostLinks("cnm-")).To(Equal(bridges))
		out, _, code = w.cnmctl("check")
		Expect(code).To(BeZero(), out)
		Expect(w.check(n, a)).To(Succeed(), "the endpoint's veth is back on the bridge")
	})

	It("check run in another network namespace than the plugins says so, and --repair makes nothing there", func() {
		_, err := w.add(n, attachment{id: "a", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		other := newNS()
		run := func(args ...string) (string, string, int) {
			return cnmctlIn(other, append([]string{"--data-dir", w.dataDir}, args...)...)
		}
		out, _, code := run("check")
		Expect(code).To(Equal(3), out)
		Expect(out).To(ContainSubstring("where the plugins run"))
		_, _, code = run("check", "--repair")
		Expect(code).NotTo(BeZero())
		Expect(testns.LinkNames(other)).To(ConsistOf("lo"), "no bridge made in the wrong namespace")
		out, _, code = w.cnmctl("check")
		Expect(code).To(BeZero(), out)
	})

	It("prints its version and commit, as every plugin does with --version", func() {
		out, _, code := w.cnmctl("version")
		Expect(code).To(BeZero())
		Expect(out).To(MatchRegexp(`^cnmctl \S+ \(commit \S+\)\n$`))
		again, _, _ := w.cnmctl("--version")
		Expect(again).To(Equal(out))
		for _, p := range []string{"cnm-bridge", "cnm-null"} {
			got, err := exec.Command(filepath.Join(binDir, p), "--version").Output()
			Expect(err).NotTo(HaveOccurred())
			Expect(string(got)).To(MatchRegexp(`^` + p + ` \S+ \(commit \S+\)\n$`))
		}
	})

	It("counts addresses per family, and lists the same state the same way every time", func() {
		n = bridgeNet("dual", "10.103.0.0/24")
		n.ipam = ipamRanges("10.103.0.0/24", "fd03::/64")
		_, err := w.add(n, attachment{id: "a", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		out, _, code := w.cnmctl("network", "ls")
		Expect(code).To(BeZero())
		Expect(out).To(ContainSubstring("1 (IPv4), 1 (IPv6)"))
		Expect(out).To(ContainSubstring("252 (IPv4), 18446744073709551613 (IPv6)"))
		Expect(out).NotTo(ContainSubstring("18446744073709551865"), "the two families are never added")
		first, _, _ := w.cnmctl("network", "inspect", "dual")
		for range 5 {
			again, _, _ := w.cnmctl("network", "inspect", "dual")
			Expect(again).To(Equal(first))
		}
	})

	It("heads gc's listing and says an expired reservation expired", func() {
		n.extra = map[string]any{"reservationTTL": "1s"}
		a := attachment{id: "a", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "web"}}}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		out, _, _ := w.cnmctl("endpoint", "ls")
		Expect(out).To(ContainSubstring(", expires "))
		time.Sleep(1100 * time.Millisecond)
		out, _, _ = w.cnmctl("endpoint", "ls")
		Expect(out).To(ContainSubstring(", expired "))
		out, _, code := w.cnmctl("gc", "--dry-run")
		Expect(code).To(BeZero())
		Expect(strings.SplitN(out, "\n", 2)[0]).To(MatchRegexp(`^NETWORK\s+ENDPOINT\s+ACTION\s+REASON$`))
		Expect(out).To(ContainSubstring("would be deleted"))
	})
})

// runCnmctl runs cnmctl with exactly args, in a namespace of its own.
func runCnmctl(args ...string) (string, string, int) { return cnmctlIn(newNS(), args...) }
