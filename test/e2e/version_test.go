package e2e_test

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// What the README says of containerd 1.6 and "cniVersion": "1.1.0": it
// loads the conflist, the plugin's ADD succeeds, and libcni refuses the
// result; the sandbox is torn down with a DEL that releases everything.
var _ = Describe(`containerd 1.6 with "cniVersion": "1.1.0"`, Ordered, func() {
	var n *node

	BeforeAll(func() {
		n = startNode("cni11", "10-cnm-bridge.conflist", func(conf map[string]any) {
			conf["cniVersion"] = "1.1.0"
		})
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && n != nil {
			n.dumpLogs()
		}
	})

	It("refuses the result of ADD: unsupported CNI result version", func() {
		_, err := n.tryRunPod(podSpec{Name: "v11", Namespace: "e2e", UID: uid("v11")})
		Expect(err).To(HaveOccurred())
		adds := n.callsFor("cnm-bridge", "", "ADD")
		Expect(adds).To(HaveLen(1))
		Expect(adds[0].Exit).To(Equal(0), n.output(adds[0]))
		id := adds[0].ContainerID
		Expect(crictlMessage(err)).To(Equal(fmt.Sprintf(
			`run pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox %q: plugin type="cnm-bridge" failed (add): unsupported CNI result version "1.1.0"`, id)))
		dels := n.callsFor("cnm-bridge", id, "DEL")
		Expect(dels).To(HaveLen(1))
		Expect(dels[0].Exit).To(Equal(0), n.output(dels[0]))

		out, err := n.crictl("pods", "-q")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).To(BeEmpty())
		n.stopContainerd()
		Expect(keysOf(storeKeys(n.dataDir, "endpoints/"+n.netName+"/"))).To(BeEmpty())
		Expect(keysOf(storeKeys(n.dataDir, "ipam/"+n.netName+"/addr/"))).To(BeEmpty())
	})
})
