package e2e_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// expectPodmanADD checks the one ADD podman sent for a container: it
// succeeded and named the container (or pod) in K8S_POD_NAME, without a
// K8S_POD_NAMESPACE.
func expectPodmanADD(h *podmanHost, p *pod) cniCall {
	GinkgoHelper()
	adds := h.callsFor("cnm-bridge", p.ID, "ADD")
	Expect(adds).To(HaveLen(1), "ADDs for %s", p.spec.Name)
	Expect(adds[0].Exit).To(Equal(0), h.output(adds[0]))
	Expect(adds[0].NetNS).NotTo(BeEmpty())
	Expect(adds[0].IfName).To(Equal("eth0"))
	args := argsOf(adds[0])
	Expect(args).To(HaveKeyWithValue("K8S_POD_NAME", p.spec.Name))
	Expect(args).NotTo(HaveKey("K8S_POD_NAMESPACE"))
	return adds[0]
}

// argsOf splits a call's CNI_ARGS into its keys and values.
func argsOf(c cniCall) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(c.Args, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// expectPodmanDELs checks the DELs podman sent for a removed container:
// at least one, the first with the netns, all successful.
func expectPodmanDELs(h *podmanHost, p *pod) {
	GinkgoHelper()
	dels := h.callsFor("cnm-bridge", p.ID, "DEL")
	Expect(dels).NotTo(BeEmpty(), "no DEL for %s", p.spec.Name)
	Expect(dels[0].NetNS).NotTo(BeEmpty())
	for _, d := range dels {
		Expect(d.Exit).To(Equal(0), "DEL (netns %q) failed: %s", d.NetNS, h.output(d))
	}
}

var _ = Describe("cnm-bridge through podman (conf/podman/10-cnm-bridge.conflist)", Ordered, func() {
	var (
		h                *podmanHost
		net              string
		alpha, web, pin  *pod // web publishes 18080 -> 80; pin has --ip and --mac-address
		gw               string
		pinIP, pinMAC    = "10.89.16.77", "02:aa:bb:cc:dd:ee"
		webBody          = "hello from the web container\n"
		published, local string
	)

	BeforeAll(func() {
		h = startPodman("podman", []string{"10-cnm-bridge.conflist"})
		net = h.networks[0]
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && h != nil {
			h.dumpLogs()
		}
	})

	It("gives two containers the address podman reports on eth0, with the MAC derived from it", func() {
		alpha = h.run(container{Name: "alpha", Network: net})
		web = h.run(container{Name: "web", Network: net, HostPort: hostPort})
		Expect(alpha.IP).NotTo(Equal(web.IP))
		for _, p := range []*pod{alpha, web} {
			Expect(inSubnet(p.IP, "10.89.16.0/24")).To(BeTrue(), "%s is in the conflist's subnet", p.IP)
			Expect(names(p.links())).To(ConsistOf("lo", "eth0"))
			eth0 := p.link("eth0")
			Expect(eth0.Up).To(BeTrue())
			Expect(eth0.hasAddr(p.IP)).To(BeTrue(), "eth0 of %s has %v, podman reports %s", p.spec.Name, eth0.Addrs, p.IP)
			Expect(eth0.MAC).To(Equal(macFor(p.IP)))
			Expect(p.MAC).To(Equal(eth0.MAC), "podman reports the MAC of the result")
			Expect(p.link("lo").Up).To(BeTrue())
			Expect(sameNetNS(fmt.Sprintf("/proc/%d/ns/net", p.PID), h.nsPath())).To(BeFalse(), "the container has a netns of its own")
			expectPodmanADD(h, p)
		}
	})

	It("connects the containers to their gateway on the bridge and to each other", func() {
		gw = alpha.gateway()
		Expect(web.gateway()).To(Equal(gw))
		var bridge iface
		for _, l := range h.hostLinks() {
			if l.Name == "cnm-podman" {
				bridge = l
			}
		}
		Expect(bridge.hasAddr(gw)).To(BeTrue(), "the bridge cnm-podman in podman's netns carries the gateway %s: %v", gw, bridge.Addrs)
		for _, p := range []*pod{alpha, web} {
			Expect(p.ping(gw)).To(Succeed(), "%s pings its gateway", p.spec.Name)
		}
		Expect(alpha.ping(web.IP)).To(Succeed())
		Expect(web.ping(alpha.IP)).To(Succeed())
	})

	It("publishes -p on the host namespace: its gateway address, its loopback, and for the other container", func() {
		stop := web.serve(containerPort, webBody)
		DeferCleanup(stop)
		published = fmt.Sprintf("http://%s:%d/", gw, hostPort)
		local = fmt.Sprintf("http://127.0.0.1:%d/", hostPort)
		alphaNS := fmt.Sprintf("/proc/%d/ns/net", alpha.PID)
		for _, c := range []struct{ from, url, what string }{
			{h.nsPath(), fmt.Sprintf("http://%s:%d/", web.IP, containerPort), "the container directly, from the host"},
			{h.nsPath(), published, "-p on the gateway, from the host"},
			{h.nsPath(), local, "-p on the host's loopback"},
			{alphaNS, published, "-p, from the other container"},
		} {
			Eventually(func() (string, error) { return httpGet(c.from, c.url) }).
				WithTimeout(10*time.Second).Should(Equal(webBody), c.what)
		}
		nat, err := h.hostCmd("iptables-save", "-t", "nat")
		Expect(err).NotTo(HaveOccurred())
		Expect(nat).To(ContainSubstring(fmt.Sprintf("--dport %d", hostPort)))
		adds := h.callsFor("cnm-bridge", web.ID, "ADD")
		Expect(h.stdin(adds[0])).To(ContainSubstring(`"portMappings"`), "podman passes -p as the portMappings capability")
	})

	It("honours --ip and --mac-address", func() {
		pin = h.run(container{Name: "pinned", Network: net, IP: pinIP, MAC: pinMAC})
		Expect(pin.IP).To(Equal(pinIP))
		Expect(pin.MAC).To(Equal(pinMAC))
		eth0 := pin.link("eth0")
		Expect(eth0.hasAddr(pinIP)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(pinMAC))
		add := expectPodmanADD(h, pin)
		Expect(argsOf(add)).To(HaveKeyWithValue("MAC", pinMAC))
		Expect(argsOf(add)).To(HaveKeyWithValue("IP", pinIP))
		Expect(pin.ping(alpha.IP)).To(Succeed())
	})

	It("refuses --ip of another container's address (error 100, naming that endpoint) and leaves it alone", func() {
		_, err := h.tryRun(container{Name: "thief", Network: net, IP: pinIP})
		Expect(err).To(HaveOccurred())
		var refused *cniCall
		for _, c := range h.callsFor("cnm-bridge", "", "ADD") {
			if c.Exit != 0 {
				refused = &c
			}
		}
		Expect(refused).NotTo(BeNil())
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		Expect(json.Unmarshal([]byte(h.output(*refused)), &cniErr)).To(Succeed(), h.output(*refused))
		Expect(cniErr.Code).To(BeEquivalentTo(100))
		fmt.Fprintf(GinkgoWriter, "refused: %s\n", cniErr.Msg)
		holder := pin.ID + "/eth0" // the ephemeral endpoint of the container, as cnmctl endpoint ls names it
		Expect(cniErr.Msg).To(ContainSubstring(fmt.Sprintf("%s is held by endpoint %s of network %s", pinIP, holder, net)))
		Expect(err.Error()).To(ContainSubstring(holder))
		_, err = h.podman("rm", "-f", "thief")
		Expect(err).NotTo(HaveOccurred())
		Expect(pin.link("eth0").hasAddr(pinIP)).To(BeTrue())
		Expect(pin.ping(alpha.IP)).To(Succeed())
	})

	It("podman rm leaves no veth, no DNAT rule, no libcni cache entry and no endpoint in the store", func() {
		for _, p := range []*pod{alpha, web, pin} {
			h.remove(p)
			expectPodmanDELs(h, p)
			Eventually(func() bool { return isPause(p.PID) }).WithTimeout(10 * time.Second).Should(BeFalse())
		}
		out, err := h.podman("ps", "-a", "-q")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).To(BeEmpty())
		for _, l := range h.hostLinks() {
			Expect(l.Type).NotTo(Equal("veth"), "veth %s stays in podman's netns", l.Name)
		}
		nat, err := h.hostCmd("iptables-save", "-t", "nat")
		Expect(err).NotTo(HaveOccurred())
		Expect(nat).NotTo(ContainSubstring(fmt.Sprintf("--dport %d", hostPort)), "the DNAT rule of -p stays")
		_, err = httpGet(h.nsPath(), published)
		Expect(err).To(HaveOccurred())
		cache, _ := filepath.Glob(filepath.Join(h.dir, dirVarLibCNI, "results", "*"))
		Expect(cache).To(BeEmpty(), "libcni keeps a result only until DEL succeeds")
		for _, c := range h.trace() {
			if c.Command == "DEL" {
				Expect(c.Exit).To(Equal(0), "DEL %s: %s", short(c.ContainerID), h.output(c))
			}
		}
		Expect(storeKeys(h.dataDir, "networks/"+net)).To(HaveKey("networks/" + net))
		for _, prefix := range []string{"endpoints/" + net + "/", "attachments/" + net + "/", "ipam/" + net + "/addr/", "sandboxes/"} {
			Expect(keysOf(storeKeys(h.dataDir, prefix))).To(BeEmpty(), "keys under %s", prefix)
		}
	})
})

var _ = Describe(`"endpointIdentity": "pod" with "podNamespace" through podman (conf/podman/20-cnm-bridge-named.conflist)`, Ordered, func() {
	var (
		h            *podmanHost
		net          string
		web, other   *pod
		db           *pod // a podman pod's infra container
		ip, mac      string
		dbIP, dbMAC  string
		namespace    = "podman" // the conflist's podNamespace
		endpointOfDB string
	)

	BeforeAll(func() {
		h = startPodman("podman-named", []string{"20-cnm-bridge-named.conflist"})
		net = h.networks[0]
		endpointOfDB = fmt.Sprintf("endpoints/%s/%s/db-0/eth0", net, namespace)
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && h != nil {
			h.dumpLogs()
		}
	})

	It("gives a container removed and re-created under the same name its address and MAC back", func() {
		first := h.run(container{Name: "web-0", Network: net})
		ip, mac = first.IP, first.MAC
		Expect(inSubnet(ip, "10.89.17.0/24")).To(BeTrue())
		eth0 := first.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(mac))
		Expect(first.ping(first.gateway())).To(Succeed())
		expectPodmanADD(h, first)

		h.remove(first)
		expectPodmanDELs(h, first)

		// The address stays reserved for web-0: another container gets another.
		other = h.run(container{Name: "other-0", Network: net})
		Expect(other.IP).NotTo(Equal(ip))

		web = h.run(container{Name: "web-0", Network: net})
		Expect(web.ID).NotTo(Equal(first.ID))
		Expect(web.IP).To(Equal(ip), "podman reports the address of the first web-0")
		Expect(web.MAC).To(Equal(mac))
		eth0 = web.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(mac))
		expectPodmanADD(h, web)
		Expect(web.ping(web.gateway())).To(Succeed())
		Expect(web.ping(other.IP)).To(Succeed())
		Expect(other.ping(web.IP)).To(Succeed())
	})

	It("gives a podman pod re-created under the same name its address and MAC back (K8S_POD_NAME is the pod's name)", func() {
		first := h.runPod("db-0", net)
		dbIP, dbMAC = first.IP, first.MAC
		Expect(inSubnet(dbIP, "10.89.17.0/24")).To(BeTrue())
		Expect(first.link("eth0").hasAddr(dbIP)).To(BeTrue())
		expectPodmanADD(h, first)
		Expect(first.ping(web.IP)).To(Succeed())
		h.removePod(first)
		expectPodmanDELs(h, first)
		Expect(storeKeys(h.dataDir, endpointOfDB)).To(HaveLen(1), "the pod's reservation is kept")

		db = h.runPod("db-0", net)
		Expect(db.ID).NotTo(Equal(first.ID))
		Expect(db.IP).To(Equal(dbIP))
		eth0 := db.link("eth0")
		Expect(eth0.hasAddr(dbIP)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(dbMAC))
		expectPodmanADD(h, db)
		Expect(db.ping(web.IP)).To(Succeed())
	})

	It("keeps the reservations after podman rm: the store holds the endpoints, left, with their address and MAC", func() {
		h.remove(web)
		expectPodmanDELs(h, web)
		h.remove(other)
		expectPodmanDELs(h, other)
		h.removePod(db)
		expectPodmanDELs(h, db)
		for _, l := range h.hostLinks() {
			Expect(l.Type).NotTo(Equal("veth"), "veth %s stays in podman's netns", l.Name)
		}

		eps := storeKeys(h.dataDir, "endpoints/"+net+"/")
		webKey := fmt.Sprintf("endpoints/%s/%s/web-0/eth0", net, namespace)
		Expect(keysOf(eps)).To(ConsistOf(webKey, fmt.Sprintf("endpoints/%s/%s/other-0/eth0", net, namespace), endpointOfDB))
		var ep endpointRecord
		Expect(json.Unmarshal(eps[webKey], &ep)).To(Succeed())
		Expect(ep.Persistent).To(BeTrue())
		Expect(ep.State).To(Equal("left"))
		Expect(ep.MAC).To(Equal(mac))
		Expect(ep.Addresses).To(HaveLen(1))
		Expect(strings.SplitN(ep.Addresses[0].Address, "/", 2)[0]).To(Equal(ip))
		Expect(ep.ExpiresAt.Sub(ep.LeftAt)).To(Equal(time.Hour), "reservationTTL 1h")
		Expect(keysOf(storeKeys(h.dataDir, "attachments/"+net+"/"))).To(BeEmpty())
		Expect(keysOf(storeKeys(h.dataDir, "sandboxes/"))).To(BeEmpty())
	})

	It("refuses podman's ADD with error 4 naming K8S_POD_NAMESPACE when the network has no podNamespace, as before", func() {
		bare := h.addConflist("20-cnm-bridge-named.conflist", func(conf map[string]any) {
			conf["name"] = "cnm-podman-bare"
			p := conf["plugins"].([]any)[0].(map[string]any)
			delete(p, "podNamespace")
			p["bridge"] = "cnm-podman-bare"
			p["ipam"] = map[string]any{"type": "cnm", "ranges": [][]map[string]string{{{"subnet": "10.89.18.0/24"}}}}
		})
		before := len(h.trace())
		_, err := h.tryRun(container{Name: "bare-0", Network: bare})
		Expect(err).To(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "refused: %v\n", err)
		Expect(err.Error()).To(ContainSubstring("K8S_POD_NAMESPACE"))
		Expect(err.Error()).To(ContainSubstring("podNamespace"))
		var adds, dels []cniCall
		for _, c := range h.trace()[before:] {
			switch c.Command {
			case "ADD":
				adds = append(adds, c)
			case "DEL":
				dels = append(dels, c)
			}
		}
		Expect(adds).To(HaveLen(1))
		var cniErr struct {
			Code uint `json:"code"`
		}
		Expect(json.Unmarshal([]byte(h.output(adds[0])), &cniErr)).To(Succeed(), h.output(adds[0]))
		Expect(cniErr.Code).To(BeEquivalentTo(4))
		for _, d := range dels {
			Expect(d.Exit).To(Equal(0), h.output(d))
		}
		_, err = h.podman("rm", "-f", "bare-0")
		Expect(err).NotTo(HaveOccurred())
		Expect(keysOf(storeKeys(h.dataDir, "endpoints/"+bare+"/"))).To(BeEmpty())
		for _, l := range h.hostLinks() {
			Expect(l.Type).NotTo(Equal("veth"), "veth %s stays in podman's netns", l.Name)
		}
	})
})
