package e2e_test

import (
	"fmt"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// containerd 1.6's CRI wants an address on the pod's eth0 in the result
// of the network: cnm-null gives the pod no interface but lo, so CRI
// refuses the sandbox (after a successful ADD) and tears its network down.
var _ = Describe("cnm-null through containerd (conf/containerd/30-cnm-null.conflist)", Ordered, func() {
	var n *node

	BeforeAll(func() {
		n = startNode("null", "30-cnm-null.conflist")
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && n != nil {
			n.dumpLogs()
		}
	})

	It("is refused by CRI for want of an address, after an ADD that succeeded; the DEL that follows releases the endpoint", func() {
		_, err := n.tryRunPod(podSpec{Name: "quiet", Namespace: "e2e", UID: uid("quiet")})
		Expect(err).To(HaveOccurred(), "containerd 1.6 accepted a sandbox without an address")

		adds := n.callsFor("cnm-null", "", "ADD")
		Expect(adds).To(HaveLen(1))
		id := adds[0].ContainerID
		Expect(adds[0].Exit).To(Equal(0), n.output(adds[0]))
		Expect(adds[0].NetNS).NotTo(BeEmpty())
		Expect(n.output(adds[0])).NotTo(ContainSubstring(`"ips"`), "cnm-null's result has no address")

		Expect(crictlMessage(err)).To(Equal(fmt.Sprintf(
			"run pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox %q: failed to find network info for sandbox %q", id, id)))

		dels := n.callsFor("cnm-null", id, "DEL")
		Expect(dels).To(HaveLen(1))
		Expect(dels[0].Exit).To(Equal(0), n.output(dels[0]))
		Expect(dels[0].NetNS).To(Equal(adds[0].NetNS))

		out, err := n.crictl("pods", "-q")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).To(BeEmpty(), "CRI keeps no sandbox")

		n.stopContainerd()
		Expect(keysOf(storeKeys(n.dataDir, "endpoints/"+n.netName+"/"))).To(BeEmpty())
		Expect(keysOf(storeKeys(n.dataDir, "attachments/"+n.netName+"/"))).To(BeEmpty())
		Expect(keysOf(storeKeys(n.dataDir, "sandboxes/"))).To(BeEmpty())
	})
})

// crictlMessage returns the message of crictl's fatal log line (the
// error CRI returned, wrapped by crictl), or the whole error.
func crictlMessage(err error) string {
	s := err.Error()
	const marker = "level=fatal msg="
	i := strings.LastIndex(s, marker)
	if i < 0 {
		return s
	}
	q := s[i+len(marker):]
	if j := strings.IndexByte(q, '\n'); j >= 0 {
		q = q[:j]
	}
	if msg, uerr := strconv.Unquote(strings.TrimSpace(q)); uerr == nil {
		return msg
	}
	return s
}
