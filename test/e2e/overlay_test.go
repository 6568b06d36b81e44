package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testns"
)

// The overlay scenario's underlay: 192.168.89.<i>/24 on each node's eth0,
// on a bridge in a namespace of its own; the default route points at an
// address nobody has, so that the plugin and the daemon find the VTEP by it.
const (
	underlayPrefix  = "192.168.89."
	underlayGateway = underlayPrefix + "254"
	underlayMTU     = 1500
	overlaySubnet   = "10.89.32.0/24"
	etcdPrefix      = "/cnmnet" // the conflist's cluster.etcd.prefix
)

var _ = Describe("cnm-overlay through containerd on two hosts (conf/containerd/40-cnm-overlay.conflist)", Ordered, func() {
	var (
		etcd         *etcdtest.Cluster
		cli          *clientv3.Client
		a, b         *node
		onA, onB     *pod // a pod on each host
		web          *pod // web-0: on A, then on B
		ip, mac      string
		vtepA, vtepB string
	)
	const namespace = "e2e"

	BeforeAll(func() {
		addOverlayBinaries()
		// The etcd socket is under the spec's temp dir in /tmp, which no
		// node binds over: the plugins in the nodes' mount namespaces and
		// the daemons reach it by its path.
		etcd = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{})
		var err error
		cli, err = etcd.Client()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		ul := newUnderlay()
		a = startOverlayNode("overlay-a", 1, ul, etcd)
		b = startOverlayNode("overlay-b", 2, ul, etcd)
		vtepA, vtepB = underlayPrefix+"1", underlayPrefix+"2"
		for _, n := range []*node{a, b} {
			n.startOverlayd(etcd.Endpoints)
		}
		for _, n := range []*node{a, b} {
			Eventually(func() (int64, error) { return etcdCount(cli, "hostlive/"+n.name) }).
				WithTimeout(30*time.Second).Should(BeEquivalentTo(1), "cnm-overlayd on %s registers its host", n.name)
		}
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			for _, n := range []*node{a, b} {
				if n != nil {
					n.dumpLogs()
					fmt.Fprintf(GinkgoWriter, "--- node %s: cnm-overlayd log ends:\n%s\n", n.name, tail(filepath.Join(n.dir, "logs", "cnm-overlayd.log"), 30))
				}
			}
		}
	})

	It("gives pods on both hosts addresses of the one subnet and connects them across the hosts", func() {
		onA = a.runPod(podSpec{Name: "client-a", Namespace: namespace, UID: uid("client-a")})
		onB = b.runPod(podSpec{Name: "client-b", Namespace: namespace, UID: uid("client-b")})
		Expect(onA.IP).NotTo(Equal(onB.IP), "one subnet, one allocator across hosts")
		for _, c := range []struct {
			n *node
			p *pod
		}{{a, onA}, {b, onB}} {
			Expect(inSubnet(c.p.IP, overlaySubnet)).To(BeTrue(), "%s is in the conflist's subnet", c.p.IP)
			eth0 := c.p.link("eth0")
			Expect(eth0.hasAddr(c.p.IP)).To(BeTrue(), "eth0 of %s has %v, CRI reports %s", c.p.spec.Name, eth0.Addrs, c.p.IP)
			adds := c.n.callsFor("cnm-overlay", c.p.ID, "ADD")
			Expect(adds).To(HaveLen(1))
			Expect(adds[0].Exit).To(Equal(0), c.n.output(adds[0]))
			Expect(c.p.ping(c.p.gateway())).To(Succeed(), "%s pings the gateway on its own host's bridge", c.p.spec.Name)
		}
		Expect(onA.gateway()).To(Equal(onB.gateway()), "the same gateway on every host")
		for _, n := range []*node{a, b} {
			types := map[string]bool{}
			for _, l := range n.hostLinks() {
				if strings.HasPrefix(l.Name, "ov-") || strings.HasPrefix(l.Name, "vx-") {
					types[l.Type] = true
				}
			}
			Expect(types).To(Equal(map[string]bool{"bridge": true, "vxlan": true}), "node %s has the network's bridge and VXLAN device", n.name)
		}

		// Each daemon programs the other host's pod: ping and TCP across.
		Eventually(func() error { return onA.ping(onB.IP) }).WithTimeout(30 * time.Second).Should(Succeed())
		Eventually(func() error { return onB.ping(onA.IP) }).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(tunnelEntries(a)).To(HaveKeyWithValue(onB.link("eth0").MAC, vtepB))
		Expect(tunnelEntries(b)).To(HaveKeyWithValue(onA.link("eth0").MAC, vtepA))
		stop := onB.serve(containerPort, "hello from client-b\n")
		defer stop()
		Eventually(func() (string, error) {
			return httpGet(podNS(onA), fmt.Sprintf("http://%s:%d/", onB.IP, containerPort))
		}).WithTimeout(20 * time.Second).Should(Equal("hello from client-b\n"))
	})

	It("moves a pod re-created under the same namespace and name to the other host with its address and MAC", func() {
		first := a.runPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0")})
		eth0 := first.link("eth0")
		ip, mac = first.IP, eth0.MAC
		Expect(inSubnet(ip, overlaySubnet)).To(BeTrue())
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v, CRI reports %s", eth0.Addrs, ip)
		const body = "hello from web-0\n"
		stop := first.serve(containerPort, body)
		Eventually(func() error { return onB.ping(ip) }).WithTimeout(30*time.Second).Should(Succeed(), "web-0 on A, from B")
		Eventually(func() (string, error) {
			return httpGet(podNS(onB), fmt.Sprintf("http://%s:%d/", ip, containerPort))
		}).WithTimeout(20 * time.Second).Should(Equal(body))
		Expect(tunnelEntries(b)).To(HaveKeyWithValue(mac, vtepA))
		stop()

		a.removePod(first)
		expectTwoDELs(a, "cnm-overlay", first)
		Eventually(func() map[string]string { return tunnelEntries(b) }).WithTimeout(30*time.Second).
			ShouldNot(HaveKey(mac), "B stops forwarding web-0's MAC to A once it is removed there")

		// A new pod object (new UID, new sandbox) with the same name, on B.
		web = b.runPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0")})
		Expect(web.IP).To(Equal(ip), "CRI on B reports the address web-0 had on A")
		eth0 = web.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(mac))
		adds := b.callsFor("cnm-overlay", web.ID, "ADD")
		Expect(adds).To(HaveLen(1))
		Expect(adds[0].Exit).To(Equal(0), b.output(adds[0]))

		// Reached at its new place from the pod on A, through the tunnel to B.
		stop = web.serve(containerPort, body)
		defer stop()
		Eventually(func() map[string]string { return tunnelEntries(a) }).WithTimeout(30*time.Second).
			Should(HaveKeyWithValue(mac, vtepB), "A forwards web-0's MAC to B")
		Eventually(func() error { return onA.ping(ip) }).WithTimeout(30 * time.Second).Should(Succeed())
		Eventually(func() (string, error) {
			return httpGet(podNS(onA), fmt.Sprintf("http://%s:%d/", ip, containerPort))
		}).WithTimeout(20 * time.Second).Should(Equal(body))
		Expect(tunnelEntries(b)).NotTo(HaveKey(mac), "B reaches web-0 on its bridge, not through the tunnel")
		Expect(web.ping(onB.IP)).To(Succeed())
		Expect(podVeths(a)).To(HaveLen(1), "only client-a's veth is left on A")
	})

	It("removes the pods: every DEL succeeds, each host's tunnel entries go, the persistent reservations stay", func() {
		for _, c := range []struct {
			n *node
			p *pod
		}{{b, web}, {a, onA}, {b, onB}} {
			c.n.removePod(c.p)
			expectTwoDELs(c.n, "cnm-overlay", c.p)
		}
		for _, n := range []*node{a, b} {
			Eventually(func() map[string]string { return tunnelEntries(n) }).WithTimeout(30*time.Second).
				Should(BeEmpty(), "node %s forwards to no endpoint", n.name)
			Expect(podVeths(n)).To(BeEmpty(), "veths stay on %s", n.name)
			cache, _ := filepath.Glob(filepath.Join(n.dir, dirVarLibCNI, "results", "*"))
			Expect(cache).To(BeEmpty(), "libcni keeps a result only until DEL succeeds")
			for _, c := range n.trace() {
				Expect(c.Exit).To(Equal(0), "%s on %s: %s %s %s: %s", c.Command, n.name, c.Plugin, short(c.ContainerID), n.output(c))
			}
		}
		Expect(etcdCount(cli, "drivers/cnm-overlay/peers/")).To(BeZero(), "no peer record is left")
		// endpointIdentity pod: web-0 and the clients keep their
		// reservations (left, for reservationTTL).
		Expect(etcdCount(cli, "endpoints/")).To(BeEquivalentTo(3))
		Expect(etcdCount(cli, "hosts/"+a.name+"/attachments/")).To(BeZero())
		Expect(etcdCount(cli, "hosts/"+b.name+"/attachments/")).To(BeZero())
	})
})

// addOverlayBinaries puts cnm-overlay and cnm-overlayd in pluginsDir:
// copies of CNM_BIN_DIR's, as for the other plugins, or built here.
func addOverlayBinaries() {
	GinkgoHelper()
	names := []string{"cnm-overlay", "cnm-overlayd"}
	if src := os.Getenv("CNM_BIN_DIR"); src != "" {
		for _, p := range names {
			Expect(copyFile(filepath.Join(src, p), filepath.Join(pluginsDir, p), 0o755)).To(Succeed())
		}
		return
	}
	goBuild(pluginsDir, "./cmd/cnm-overlay", "./cmd/cnm-overlayd")
}

// newUnderlay makes the underlay: a namespace with the bridge ul, removed
// when the scenario ends, and named after this run (underlayNetNS) so
// that the next run removes it if this one is killed.
func newUnderlay() ns.NetNS {
	GinkgoHelper()
	ul := testns.NewAt(filepath.Join("/run/netns", underlayNetNS(os.Getpid())))
	Expect(ul.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul", MTU: underlayMTU}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})).To(Succeed())
	return ul
}

// startOverlayNode starts node i of the overlay scenario: eth0 on the
// underlay with 192.168.89.<i>/24 and the default route through it, made
// before containerd starts, and the conflist's cluster and host set for
// this node.
func startOverlayNode(scenario string, i int, ul ns.NetNS, etcd *etcdtest.Cluster) *node {
	GinkgoHelper()
	opts := nodeOptions{
		plugins:          []string{"cnm-overlay"},
		beforeContainerd: func(n *node) { plugUnderlay(ul, n, i) },
	}
	return startNodeWith(scenario, "40-cnm-overlay.conflist", opts, func(conf map[string]any) {
		for _, p := range conf["plugins"].([]any) {
			pm := p.(map[string]any)
			if pm["type"] != "cnm-overlay" {
				continue
			}
			pm["host"] = scenario
			cluster := pm["cluster"].(map[string]any)
			cluster["etcd"].(map[string]any)["endpoints"] = etcd.Endpoints
		}
	})
}

// plugUnderlay gives node n eth0, a veth whose peer (u<i>) is on the
// underlay bridge, with its address and the default route.
func plugUnderlay(ul ns.NetNS, n *node, i int) {
	GinkgoHelper()
	host, err := ns.GetNS(n.nsPath())
	Expect(err).NotTo(HaveOccurred())
	defer host.Close()
	Expect(ul.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName("ul")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("u%d", i), MTU: underlayMTU, MasterIndex: br.Attrs().Index},
			PeerName:  "eth0", PeerNamespace: netlink.NsFd(int(host.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add the underlay veth of %s: %w", n.name, err)
		}
		return netlink.LinkSetUp(veth)
	})).To(Succeed())
	Expect(host.Do(func(ns.NetNS) error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(fmt.Sprintf("%s%d/24", underlayPrefix, i))
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP(underlayGateway)})
	})).To(Succeed())
}

// startOverlayd runs cnm-overlayd as the node's daemon: in its host
// network namespace and in containerd's mount namespace, so that it sees
// the node's own /run/cnmnet (the overlay's host lock) as the plugin
// does. It is stopped with SIGTERM, before the node's teardown, and must
// exit 0.
func (n *node) startOverlayd(endpoints []string) {
	GinkgoHelper()
	logPath := filepath.Join(n.dir, "logs", "cnm-overlayd.log")
	log, err := os.Create(logPath)
	Expect(err).NotTo(HaveOccurred())
	defer log.Close()
	cmd := exec.Command("nsenter", "--mount=/proc/"+fmt.Sprint(n.pid)+"/ns/mnt", "--net="+n.nsPath(), "--",
		filepath.Join(pluginsDir, "cnm-overlayd"),
		"--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-prefix", etcdPrefix,
		"--host", n.name, "--metrics-address", "", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = log, log
	// If the suite dies, the daemon goes with it (nsenter execs it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			Expect(err).NotTo(HaveOccurred(), "cnm-overlayd on %s exits 0 on SIGTERM: %s", n.name, tail(logPath, 20))
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			Fail(fmt.Sprintf("cnm-overlayd on %s did not stop within 30s of SIGTERM", n.name))
		}
	})
	Consistently(exited).WithTimeout(200*time.Millisecond).ShouldNot(Receive(), "cnm-overlayd on %s exited: %s", n.name, tail(logPath, 20))
}

// podVeths names the veths of node n's host namespace but its underlay
// link.
func podVeths(n *node) []string {
	GinkgoHelper()
	var out []string
	for _, l := range n.hostLinks() {
		if l.Type == "veth" && l.Name != "eth0" {
			out = append(out, l.Name)
		}
	}
	return out
}

// tunnelEntries are the VXLAN devices' FDB entries of node n, MAC → VTEP:
// where the node forwards each remote endpoint.
func tunnelEntries(n *node) map[string]string {
	GinkgoHelper()
	out := map[string]string{}
	Expect(n.inHost(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() != "vxlan" {
				continue
			}
			fdb, err := netlink.NeighListExecute(netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: uint32(l.Attrs().Index)})
			if err != nil {
				return err
			}
			for _, e := range fdb {
				// The device's own entries, not the bridge's for its port.
				if e.Flags&netlink.NTF_SELF == 0 || e.Flags&netlink.NTF_MASTER != 0 || e.IP == nil ||
					e.HardwareAddr.String() == "00:00:00:00:00:00" {
					continue
				}
				out[e.HardwareAddr.String()] = e.IP.String()
			}
		}
		return nil
	})).To(Succeed())
	return out
}

// etcdCount counts the cluster store's keys under the store prefix p.
func etcdCount(cli *clientv3.Client, p string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, etcdPrefix+"/data/"+p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

func podNS(p *pod) string { return fmt.Sprintf("/proc/%d/ns/net", p.PID) }

// tail returns the last lines of the file at path.
func tail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// underlayNetNS is the name under /run/netns of run pid's underlay.
func underlayNetNS(pid int) string { return fmt.Sprintf("cnme2e-underlay-%d", pid) }
