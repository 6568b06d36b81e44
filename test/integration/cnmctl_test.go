package integration_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// cnmctl runs the operator's tool in the world's host namespace on the
// world's store and returns its stdout, stderr and exit code.
func (w *world) cnmctl(args ...string) (string, string, int) {
	return cnmctlIn(w.hostNS, append([]string{"--data-dir", w.dataDir, "--cni-path", binDir}, args...)...)
}

// cnmctlIn runs cnmctl with exactly args in the namespace n and returns
// its stdout, stderr and exit code.
func cnmctlIn(n ns.NetNS, args ...string) (string, string, int) {
	GinkgoHelper()
	var stdout, stderr bytes.Buffer
	code := 0
	Expect(n.Do(func(ns.NetNS) error {
		cmd := exec.Command(filepath.Join(binDir, "cnmctl"), args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			return nil
		}
		return err
	})).To(Succeed())
	GinkgoWriter.Printf("cnmctl %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String(), stderr.String(), code
}

func (w *world) cnmctlJSON(v any, args ...string) {
	out, errOut, code := w.cnmctl(append([]string{"-o", "json"}, args...)...)
	Expect(code).To(BeZero(), errOut)
	Expect(json.Unmarshal([]byte(out), v)).To(Succeed(), out)
}

var _ = Describe("cnmctl", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("ops", "10.82.0.0/24")
		// The network exists once it had its first ADD.
		_, err := w.add(n, attachment{id: "first", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
	})

	It("reserves an endpoint that a later ADD joins, keeps it after DEL, and removes it", func() {
		out, errOut, code := w.cnmctl("endpoint", "create", "--network", "ops", "--name", "web", "--ip", "10.82.0.40")
		Expect(code).To(BeZero(), errOut)
		Expect(out).To(ContainSubstring("10.82.0.40/24"))
		Expect(out).To(ContainSubstring("created"))

		a := attachment{id: "web-ctr", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "web"}}}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.82.0.40/24"))

		var eps []map[string]any
		w.cnmctlJSON(&eps, "endpoint", "ls", "--network", "ops")
		Expect(eps).To(HaveLen(2))
		out, _, _ = w.cnmctl("endpoint", "inspect", "web")
		Expect(out).To(ContainSubstring("joined web-ctr"))
		Expect(out).To(ContainSubstring(a.netns.Path()))

		Expect(w.del(n, a)).To(Succeed())
		out, _, _ = w.cnmctl("endpoint", "ls")
		Expect(out).To(MatchRegexp(`web\s+persistent\s+10\.82\.0\.40/24\s+\S+\s+left since`))

		out, errOut, code = w.cnmctl("endpoint", "rm", "web")
		Expect(code).To(BeZero(), errOut)
		Expect(out).To(ContainSubstring("removed endpoint web"))
		Expect(w.dump()).NotTo(HaveKey("endpoints/ops/web"))
		Expect(w.dump()).NotTo(HaveKey("ipam/ops/addr/10.82.0.40"))
	})

	It("refuses to remove a joined endpoint without --force, and detaches it with", func() {
		_, errOut, code := w.cnmctl("endpoint", "rm", "first/eth0")
		Expect(code).To(Equal(1))
		Expect(errOut).To(ContainSubstring("--force"))
		Expect(w.hostLinks("veth")).To(HaveLen(1))
		_, errOut, code = w.cnmctl("endpoint", "rm", "--force", "first/eth0")
		Expect(code).To(BeZero(), errOut)
		Expect(w.hostLinks("veth")).To(BeEmpty())
		Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
	})

	It("lists networks and sandboxes, as tables and as JSON", func() {
		_, err := w.add(nullNet("1.1.0"), attachment{id: "nul", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		out, _, code := w.cnmctl("network", "ls")
		Expect(code).To(BeZero())
		Expect(out).To(MatchRegexp(`(?m)^ops\s+cnm-bridge\s+10\.82\.0\.0/24\s+cnm-\S+\s+1\s+1\s+1\s+252$`))
		Expect(out).To(MatchRegexp(`(?m)^nullnet\s+cnm-null\s+-\s+-\s+1\s+1\s+-\s+-$`))
		var nets []map[string]any
		w.cnmctlJSON(&nets, "network", "ls")
		Expect(nets).To(HaveLen(2))
		var nw map[string]any
		w.cnmctlJSON(&nw, "network", "inspect", "ops")
		Expect(nw["host"]).To(HaveKeyWithValue("bridge", HavePrefix("cnm-")))
		var sbs []map[string]any
		w.cnmctlJSON(&sbs, "sandbox", "ls")
		Expect(sbs).To(HaveLen(2))
	})

	It("gc --dry-run changes nothing; gc leaves endpoints whose sandbox is gone", func() {
		gone := attachment{id: "gone", netns: newNS()}
		_, err := w.add(n, gone)
		Expect(err).NotTo(HaveOccurred())
		removeNS(gone.netns)
		before := w.dump()
		out, _, code := w.cnmctl("gc", "--dry-run")
		Expect(code).To(BeZero())
		Expect(out).To(ContainSubstring("gone/eth0"))
		Expect(out).To(ContainSubstring("would be deleted"))
		Expect(w.dump()).To(Equal(before))
		out, _, code = w.cnmctl("gc")
		Expect(code).To(BeZero())
		Expect(out).To(ContainSubstring("gone/eth0"))
		Expect(w.dump()).NotTo(HaveKey("endpoints/ops/gone/eth0"))
		Expect(w.dump()).To(HaveKey("endpoints/ops/first/eth0"))
		Expect(w.hostLinks("veth")).To(HaveLen(1))
	})

	It("check finds an orphan veth and an orphan rule, and --repair removes exactly those", func() {
		web := attachment{id: "web", netns: newNS(), caps: publish(8085, 80)}
		_, err := w.add(n, web)
		Expect(err).NotTo(HaveOccurred())
		out, _, code := w.cnmctl("check")
		Expect(code).To(BeZero())
		Expect(out).To(ContainSubstring("store and host agree"))

		var nw struct{ Host map[string]any }
		w.cnmctlJSON(&nw, "network", "inspect", "ops")
		bridgeName := nw.Host["bridge"].(string)
		// An orphan veth of cnmnet's on the bridge and an orphan DNAT rule
		// of a gone endpoint.
		orphan := w.plugOrphanVeth(bridgeName, "deadbeef0123456789abcdef01234567")
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			chain := firewall.NetworkChains("ops").DNAT
			rule := []string{"-t", "nat", "-A", chain, "-p", "tcp", "--dport", "9999", "-m", "comment", "--comment", "cnm:ops/deadbeef",
				"-j", "DNAT", "--to-destination", "10.82.0.99:80"}
			if out, err := exec.Command("iptables", rule...).CombinedOutput(); err != nil {
				return errors.New(string(out))
			}
			return nil
		})).To(Succeed())
		rulesBefore := w.iptablesSave()
		Expect(rulesBefore).To(ContainSubstring("--dport 9999"))

		var found []map[string]any
		out, _, code = w.cnmctl("-o", "json", "check")
		Expect(code).To(Equal(3))
		Expect(json.Unmarshal([]byte(out), &found)).To(Succeed())
		Expect(found).To(ConsistOf(
			And(HaveKeyWithValue("kind", "link"), HaveKeyWithValue("object", orphan)),
			And(HaveKeyWithValue("kind", "rule"), HaveKeyWithValue("object", "deadbeef")),
		))

		out, _, code = w.cnmctl("check", "--repair")
		Expect(code).To(BeZero(), out)
		Expect(w.hostLinks(orphan)).To(BeEmpty())
		Expect(w.hostLinks("orphanpeer")).To(BeEmpty())
		rules := w.iptablesSave()
		Expect(rules).NotTo(ContainSubstring("--dport 9999"))
		Expect(rules).To(ContainSubstring("--dport 8085"), "the live endpoint's rule stays")
		Expect(w.hostLinks("veth")).To(HaveLen(2), "the live endpoints' veths stay")
		out, _, code = w.cnmctl("check")
		Expect(code).To(BeZero(), out)
	})

	It("check finds an endpoint whose sandbox vanished and an address no endpoint holds", func() {
		gone := attachment{id: "gone", netns: newNS()}
		_, err := w.add(n, gone)
		Expect(err).NotTo(HaveOccurred())
		removeNS(gone.netns)
		s, err := store.Open(w.dataDir, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Update(func(tx store.Tx) error { return tx.Put("ipam/ops/addr/10.82.0.77", []byte("nobody")) })).To(Succeed())
		Expect(s.Close()).To(Succeed())
		out, _, code := w.cnmctl("check")
		Expect(code).To(Equal(3))
		Expect(out).To(ContainSubstring("gone/eth0"))
		Expect(out).To(ContainSubstring("10.82.0.77"))
		_, _, code = w.cnmctl("check", "--repair")
		Expect(code).To(BeZero())
		Expect(w.dump()).NotTo(HaveKey("ipam/ops/addr/10.82.0.77"))
		Expect(w.dump()).NotTo(HaveKey("endpoints/ops/gone/eth0"))
	})

	It("removes a network only with --force while it has endpoints, with its bridge and rules", func() {
		_, errOut, code := w.cnmctl("network", "rm", "ops")
		Expect(code).To(Equal(1))
		Expect(errOut).To(ContainSubstring("--force"))
		_, errOut, code = w.cnmctl("network", "rm", "--force", "ops")
		Expect(code).To(BeZero(), errOut)
		Expect(w.hostLinks("cnm-")).To(BeEmpty())
		Expect(w.hostLinks("veth")).To(BeEmpty())
		Expect(w.iptablesSave()).NotTo(ContainSubstring("cnm:ops"))
		kv := w.dump()
		Expect(keysUnder(kv, "networks/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/")).To(BeEmpty())
		Expect(keysUnder(kv, "drivers/cnm-bridge/networks/")).To(BeEmpty())
	})

	DescribeTable("answers bad requests with a clear error and exit code",
		func(args []string, code int, says string) {
			before := w.dump()
			_, errOut, got := w.cnmctl(args...)
			Expect(got).To(Equal(code))
			Expect(errOut).To(ContainSubstring(says))
			Expect(w.dump()).To(Equal(before))
		},
		Entry("an unknown network", []string{"network", "inspect", "nope"}, 1, `network "nope" does not exist`),
		Entry("an unknown endpoint", []string{"endpoint", "inspect", "nope"}, 1, `no endpoint named "nope"`),
		Entry("create in an unknown network", []string{"endpoint", "create", "--network", "nope", "--name", "x"}, 1, `network "nope" does not exist`),
		Entry("an endpoint name with ../", []string{"endpoint", "create", "--network", "ops", "--name", "../x"}, 1, "endpoint name"),
		Entry("an address outside the subnet", []string{"endpoint", "create", "--network", "ops", "--name", "x", "--ip", "10.99.0.1"}, 1, "10.99.0.1"),
		Entry("an address that is not one", []string{"endpoint", "create", "--network", "ops", "--name", "x", "--ip", "ten"}, 2, `--ip "ten"`),
		Entry("create without --name", []string{"endpoint", "create", "--network", "ops"}, 2, "--name"),
		Entry("a relative data dir", []string{"--data-dir", "rel", "network", "ls"}, 2, "--data-dir"),
		Entry("an unknown output format", []string{"-o", "yaml", "network", "ls"}, 2, "yaml"),
		Entry("an unknown flag", []string{"network", "ls", "--bogus"}, 2, "bogus"),
	)

	It("waits for a plugin holding the store, then says it is locked", func() {
		s, err := store.Open(w.dataDir, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		defer s.Close()
		// A plugin holds the store for as long as one of its transactions.
		Expect(s.Update(func(store.Tx) error {
			_, errOut, code := w.cnmctl("--wait", "300ms", "network", "ls")
			Expect(code).To(Equal(75))
			Expect(errOut).To(ContainSubstring("locked"))
			return nil
		})).To(Succeed())
	})
})
