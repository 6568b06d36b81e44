package integration_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/test/testns"
)

// soak scales the reliability tests: `make soak` sets CNM_SOAK to a
// factor (default 1, as in `make test`).
func soak() int {
	if n, err := strconv.Atoi(os.Getenv("CNM_SOAK")); err == nil && n > 1 {
		return n
	}
	return 1
}

// Fault points of the cnmfault build, by the verb that reaches them.
var (
	addFaults = []string{"add:reserved", "add:provisioned", "bridge:ports-reserved", "bridge:veth",
		"bridge:published", "add:joined", "add:recorded", "add:attached"}
	delFaults = []string{"del:detached", "bridge:ports-released", "del:left", "del:deleted"}
)

// killedRun execs the cnmfault build of cnm-bridge with CNM_FAULT=point
// and reports whether it died of SIGKILL there.
func (w *world) killedRun(point string, inv invocation) bool {
	killed := false
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		cmd := exec.Command(filepath.Join(binDir, "fault", "cnm-bridge"))
		cmd.Env = []string{"CNI_COMMAND=" + inv.command, "CNI_CONTAINERID=" + inv.containerID, "CNI_NETNS=" + inv.netns,
			"CNI_IFNAME=eth0", "CNI_ARGS=" + inv.args, "CNI_PATH=" + binDir, "PATH=" + os.Getenv("PATH"), fault.Env + "=" + point}
		cmd.Stdin = bytes.NewReader(inv.stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() && st.Signal() == syscall.SIGKILL {
				killed = true
				return nil
			}
		}
		return fmt.Errorf("%s did not die at %s (%v): %s", inv.command, point, err, out.String())
	})).To(Succeed())
	return killed
}

// expectNoEndpointState asserts that nothing of ephemeral endpoints is
// left, and that persistent ones are left with their reservation only.
func (w *world) expectNoEndpointState(network string) {
	kv := w.dump()
	ExpectWithOffset(1, keysUnder(kv, "attachments/")).To(BeEmpty())
	ExpectWithOffset(1, keysUnder(kv, "sandboxes/")).To(BeEmpty())
	persistent := 0
	for _, k := range keysUnder(kv, "endpoints/") {
		ExpectWithOffset(1, kv[k]).To(ContainSubstring(`"persistent":true`), k)
		ExpectWithOffset(1, kv[k]).To(ContainSubstring(`"state":"left"`), k)
		persistent++
	}
	ExpectWithOffset(1, keysUnder(kv, "ipam/"+network+"/addr/")).To(HaveLen(persistent))
	ExpectWithOffset(1, keysUnder(kv, "drivers/cnm-bridge/hostports/")).To(BeEmpty())
	ExpectWithOffset(1, keysUnder(kv, "drivers/cnm-bridge/endpoints/")).To(BeEmpty())
	ExpectWithOffset(1, w.hostLinks("veth")).To(BeEmpty())
	ExpectWithOffset(1, w.hostLinks("vtmp")).To(BeEmpty())
	ExpectWithOffset(1, w.iptablesSave()).NotTo(ContainSubstring("--dport"))
}

var _ = Describe("reliability: plugins killed with SIGKILL at every phase of ADD and DEL", Label("reliability"), func() {
	It("leave nothing that DEL cannot remove, and the next ADD works", func() {
		w := newWorld()
		n := bridgeNet("crash", "10.90.0.0/22")
		kills := 0
		for rep := 0; kills < 200*soak(); rep++ {
			for i, point := range append(append([]string{}, addFaults...), delFaults...) {
				persistent := rep%2 == 1
				if persistent && point == "del:deleted" {
					continue // a persistent endpoint is not deleted by DEL
				}
				id := fmt.Sprintf("crash-%d-%d", rep, i)
				c := newNS()
				inv := invocation{containerID: id, netns: c.Path(),
					stdin: w.stdinWith(n, map[string]any{"runtimeConfig": publish(20000+rep*20+i, 80)})}
				if persistent {
					inv.args = "CNM_ENDPOINT=" + id
				}
				isAdd := strings.HasPrefix(point, "add:") || i < len(addFaults)
				if !isAdd {
					inv.command = "ADD"
					_, err := w.exec("cnm-bridge", inv)
					Expect(err).NotTo(HaveOccurred())
				}
				inv.command = map[bool]string{true: "ADD", false: "DEL"}[isAdd]
				if w.killedRun(point, inv) {
					kills++
				}
				inv.command = "DEL"
				_, err := w.exec("cnm-bridge", inv)
				Expect(err).NotTo(HaveOccurred(), "DEL after a kill at %s", point)
				w.expectNoEndpointState("crash")
				Expect(testns.LinkNames(c)).To(ConsistOf("lo"), "after a kill at %s", point)

				inv.command = "ADD"
				_, err = w.exec("cnm-bridge", inv)
				Expect(err).NotTo(HaveOccurred(), "ADD after a kill at %s", point)
				inv.command = "DEL"
				_, err = w.exec("cnm-bridge", inv)
				Expect(err).NotTo(HaveOccurred())
				removeNS(c)
			}
			// A network killed half-way through its creation.
			net := bridgeNet(fmt.Sprintf("crashnet-%d", rep), fmt.Sprintf("10.92.%d.0/24", rep%250))
			c := newNS()
			inv := invocation{command: "ADD", containerID: "first", netns: c.Path(), stdin: w.stdin(net, nil)}
			if w.killedRun("bridge:bridged", inv) {
				kills++
			}
			inv.command = "DEL"
			_, err := w.exec("cnm-bridge", inv)
			Expect(err).NotTo(HaveOccurred())
			inv.command = "ADD"
			_, err = w.exec("cnm-bridge", inv)
			Expect(err).NotTo(HaveOccurred(), "the network is made whole by the next ADD")
			inv.command = "DEL"
			_, err = w.exec("cnm-bridge", inv)
			Expect(err).NotTo(HaveOccurred())
			removeNS(c)
		}
		out, _, code := w.cnmctl("check")
		Expect(code).To(BeZero(), out)
		AddReportEntry("kills", kills)
		fmt.Fprintf(GinkgoWriter, "reliability: %d kills injected\n", kills)
	})
})

// stdinWith is the configuration of n with extra keys.
func (w *world) stdinWith(n network, extra map[string]any) []byte {
	var m map[string]any
	Expect(json.Unmarshal(w.stdin(n, nil), &m)).To(Succeed())
	for k, v := range extra {
		m[k] = v
	}
	raw, err := json.Marshal(m)
	Expect(err).NotTo(HaveOccurred())
	return raw
}
