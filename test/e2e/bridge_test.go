package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// uid is a fresh pod UID: every sandbox CRI creates is a new pod object.
func uid(name string) string {
	return fmt.Sprintf("%s-%d-%d", name, os.Getpid(), time.Now().UnixNano())
}

// storeKeys returns the keys (and values) under prefix in the store of
// dataDir; no plugin may run meanwhile (containerd is stopped first).
func storeKeys(dataDir, prefix string) map[string][]byte {
	GinkgoHelper()
	s, err := store.Open(dataDir, store.Options{LockWait: 30 * time.Second})
	Expect(err).NotTo(HaveOccurred())
	defer s.Close()
	out := map[string][]byte{}
	Expect(s.View(func(tx store.Tx) error {
		return tx.Scan(prefix, func(k string, v []byte) error {
			out[k] = append([]byte(nil), v...)
			return nil
		})
	})).To(Succeed())
	return out
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// expectTwoDELs checks the DELs containerd sent for a removed sandbox:
// one from stopp with the netns, one from rmp with an empty CNI_NETNS
// (the netns is gone by then), both successful.
func expectTwoDELs(n *node, plugin string, p *pod) {
	GinkgoHelper()
	dels := n.callsFor(plugin, p.ID, "DEL")
	Expect(dels).To(HaveLen(2), "DELs of %s for %s", plugin, p.spec.Name)
	Expect(dels[0].NetNS).NotTo(BeEmpty(), "the DEL of stopp names the netns")
	Expect(dels[1].NetNS).To(BeEmpty(), "the DEL of rmp has an empty CNI_NETNS")
	for _, d := range dels {
		Expect(d.Exit).To(Equal(0), "DEL (netns %q) failed: %s", d.NetNS, n.output(d))
		Expect(d.IfName).To(Equal("eth0"))
	}
}

var _ = Describe("cnm-bridge through containerd (conf/containerd/10-cnm-bridge.conflist)", Ordered, func() {
	var (
		n    *node
		web  *pod // publishes hostPort 18080 -> 80
		peer *pod
		gw   string
	)

	BeforeAll(func() {
		n = startNode("bridge", "10-cnm-bridge.conflist")
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && n != nil {
			n.dumpLogs()
		}
	})

	It("gives each pod the address CRI reports on eth0, with the MAC derived from it", func() {
		web = n.runPod(podSpec{Name: "web", Namespace: "e2e", UID: uid("web"), HostPort: hostPort})
		peer = n.runPod(podSpec{Name: "peer", Namespace: "e2e", UID: uid("peer")})
		Expect(web.IP).NotTo(Equal(peer.IP))
		for _, p := range []*pod{web, peer} {
			Expect(inSubnet(p.IP, "10.89.8.0/24")).To(BeTrue(), "%s is in the conflist's subnet", p.IP)
			Expect(names(p.links())).To(ConsistOf("lo", "eth0"))
			eth0 := p.link("eth0")
			Expect(eth0.Up).To(BeTrue())
			Expect(eth0.hasAddr(p.IP)).To(BeTrue(), "eth0 of %s has %v, CRI reports %s", p.spec.Name, eth0.Addrs, p.IP)
			Expect(eth0.MAC).To(Equal(macFor(p.IP)))
			Expect(p.link("lo").Up).To(BeTrue(), "lo is up (the loopback plugin)")
			Expect(sameNetNS(fmt.Sprintf("/proc/%d/ns/net", p.PID), n.nsPath())).To(BeFalse(), "the pod has a netns of its own")

			adds := n.callsFor("cnm-bridge", p.ID, "ADD")
			Expect(adds).To(HaveLen(1))
			Expect(adds[0].Exit).To(Equal(0))
			Expect(adds[0].NetNS).NotTo(BeEmpty())
			Expect(adds[0].Args).To(ContainSubstring("K8S_POD_NAMESPACE=e2e"))
			Expect(adds[0].Args).To(ContainSubstring("K8S_POD_NAME=" + p.spec.Name))
		}
	})

	It("connects the pods to their gateway on the bridge and to each other", func() {
		gw = web.gateway()
		Expect(peer.gateway()).To(Equal(gw))
		var bridge iface
		for _, l := range n.hostLinks() {
			if l.Name == "cnm-pods" {
				bridge = l
			}
		}
		Expect(bridge.hasAddr(gw)).To(BeTrue(), "the bridge cnm-pods in the node's host netns carries the gateway %s: %v", gw, bridge.Addrs)
		for _, p := range []*pod{web, peer} {
			Expect(p.ping(gw)).To(Succeed(), "%s pings its gateway", p.spec.Name)
		}
		Expect(web.ping(peer.IP)).To(Succeed())
		Expect(peer.ping(web.IP)).To(Succeed())
	})

	It("publishes the hostPort of the pod spec", func() {
		const body = "hello from the web pod\n"
		stop := web.serve(containerPort, body)
		DeferCleanup(stop)
		peerNS := fmt.Sprintf("/proc/%d/ns/net", peer.PID)
		for _, c := range []struct{ from, url, what string }{
			{n.nsPath(), fmt.Sprintf("http://%s:%d/", web.IP, containerPort), "the pod directly, from the host"},
			{n.nsPath(), fmt.Sprintf("http://%s:%d/", gw, hostPort), "the hostPort on the gateway, from the host"},
			{n.nsPath(), fmt.Sprintf("http://127.0.0.1:%d/", hostPort), "the hostPort on the host's loopback"},
			{peerNS, fmt.Sprintf("http://%s:%d/", gw, hostPort), "the hostPort, from the neighbour pod"},
		} {
			Eventually(func() (string, error) { return httpGet(c.from, c.url) }).
				WithTimeout(10*time.Second).Should(Equal(body), c.what)
		}
		nat, err := n.hostCmd("iptables-save", "-t", "nat")
		Expect(err).NotTo(HaveOccurred())
		Expect(nat).To(ContainSubstring(fmt.Sprintf("--dport %d", hostPort)))
	})

	It("runs DEL on stopp and again, with an empty CNI_NETNS, on rmp; both succeed", func() {
		for _, p := range []*pod{web, peer} {
			_, err := n.crictl("stopp", p.ID)
			Expect(err).NotTo(HaveOccurred())
			dels := n.callsFor("cnm-bridge", p.ID, "DEL")
			Expect(dels).To(HaveLen(1))
			Expect(dels[0].Exit).To(Equal(0), n.output(dels[0]))
			Expect(dels[0].NetNS).NotTo(BeEmpty())
			Eventually(func() bool { return isPause(p.PID) }).WithTimeout(10 * time.Second).Should(BeFalse())
			_, err = n.crictl("rmp", p.ID)
			Expect(err).NotTo(HaveOccurred())
			expectTwoDELs(n, "cnm-bridge", p)
		}
		out, err := n.crictl("pods", "-q")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).To(BeEmpty())

		for _, l := range n.hostLinks() {
			Expect(l.Type).NotTo(Equal("veth"), "veth %s stays in the host netns", l.Name)
		}
		nat, err := n.hostCmd("iptables-save", "-t", "nat")
		Expect(err).NotTo(HaveOccurred())
		Expect(nat).NotTo(ContainSubstring(fmt.Sprintf("--dport %d", hostPort)), "the hostPort's DNAT rule stays")
		_, err = httpGet(n.nsPath(), fmt.Sprintf("http://%s:%d/", gw, hostPort))
		Expect(err).To(HaveOccurred())
		cache, _ := filepath.Glob(filepath.Join(n.dir, dirVarLibCNI, "results", "*"))
		Expect(cache).To(BeEmpty(), "libcni keeps a result only until DEL succeeds")
		for _, c := range n.trace() {
			Expect(c.Exit).To(Equal(0), "%s %s %s: %s", c.Command, c.Plugin, short(c.ContainerID), n.output(c))
		}
	})

	It("releases the addresses of the removed pods: the store keeps the network, no endpoint", func() {
		n.stopContainerd()
		Expect(storeKeys(n.dataDir, "networks/"+n.netName)).To(HaveKey("networks/" + n.netName))
		for _, prefix := range []string{
			"endpoints/" + n.netName + "/",
			"attachments/" + n.netName + "/",
			"ipam/" + n.netName + "/addr/",
			"sandboxes/",
		} {
			Expect(keysOf(storeKeys(n.dataDir, prefix))).To(BeEmpty(), "keys under %s", prefix)
		}
	})
})

// isPause reports whether pid is (still) a pause process.
func isPause(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == "pause"
}

// sameNetNS reports whether two paths are the same network namespace.
func sameNetNS(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// endpointRecord is the part of a stored endpoint the suite reads.
type endpointRecord struct {
	Name       string `json:"name"`
	Persistent bool   `json:"persistent"`
	State      string `json:"state"`
	MAC        string `json:"mac"`
	Addresses  []struct {
		Address string `json:"address"`
	} `json:"addresses"`
	Sandbox   json.RawMessage `json:"sandbox"`
	LeftAt    time.Time       `json:"leftAt"`
	ExpiresAt time.Time       `json:"expiresAt"`
}
