package integration_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"

	"github.com/cnmnet/cnmnet/test/testudp"
)

// hostVethOf is the host veth an ADD result names.
func hostVethOf(res types.Result) string {
	cur, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	return cur.Interfaces[1].Name
}

// macIn is the MAC of the named link in n.
func macIn(n ns.NetNS, name string) string {
	link, _ := linkIn(n, name)
	ExpectWithOffset(1, link).NotTo(BeNil(), name)
	return link.Attrs().HardwareAddr.String()
}

// gatewayNeigh is the MAC the container n has in its neighbour table for
// gw on eth0, "" if none.
func gatewayNeigh(n ns.NetNS, gw string) string {
	mac := ""
	Expect(n.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
		for _, nb := range neighs {
			if nb.IP.Equal(net.ParseIP(gw)) {
				mac = nb.HardwareAddr.String()
			}
		}
		return err
	})).To(Succeed())
	return mac
}

// pingNow pings dst from n with a one-second deadline: a neighbour entry
// gone stale would take tens of seconds to be resolved again.
func pingNow(n ns.NetNS, from types.Result, dst string) error {
	src, _, _ := strings.Cut(firstIP(from), "/")
	return n.Do(func(ns.NetNS) error { return testutils.Ping(src, dst, 1) })
}

// plugLowMACPort puts a veth with the lowest MAC there is on bridge: the
// port whose MAC a bridge without one of its own would take.
func (w *world) plugLowMACPort(bridge string) {
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "low0", MasterIndex: br.Attrs().Index,
			HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 1}}, PeerName: "low1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})).To(Succeed())
}

// makeBridgeOfOldVersion makes the bridge of network name again as
// cnmnet did before it set a bridge's MAC: marked, with the gateway and
// the port, the MAC left to the kernel, and no MAC in the driver's record.
func (w *world) makeBridgeOfOldVersion(bridge, name, gwCIDR, port string) {
	var id string
	s, err := store.Open(w.dataDir, store.Options{})
	Expect(err).NotTo(HaveOccurred())
	defer s.Close()
	Expect(s.Update(func(tx store.Tx) error {
		return tx.Scan("drivers/cnm-bridge/networks/", func(k string, v []byte) error {
			rec := map[string]any{}
			if err := json.Unmarshal(v, &rec); err != nil || rec["name"] != name {
				return err
			}
			id = rec["id"].(string)
			delete(rec, "mac")
			return store.PutJSON(tx, k, rec)
		})
	})).To(Succeed())
	Expect(id).NotTo(BeEmpty())
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		old, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(old); err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}); err != nil {
			return err
		}
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(br, "cnmnet:"+id); err != nil {
			return err
		}
		if err := upWithAddr(bridge, gwCIDR); err != nil {
			return err
		}
		veth, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		return netlink.LinkSetMaster(veth, br)
	})).To(Succeed())
}

var _ = Describe("bridge under change: the bridge's MAC", func() {
	var (
		w *world
		n network
	)
	const gw = "10.90.1.1"
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("macnet", "10.90.1.0/24")
	})

	It("stays as ports leave and join, so the other endpoints reach the gateway at once", func() {
		a := attachment{id: "mac-a", netns: newNS()}
		b := attachment{id: "mac-b", netns: newNS()}
		resA, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		resB, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		bridge := bridgeOf(resA)
		mac := macIn(w.hostNS, bridge)
		hw, _ := net.ParseMAC(mac)
		Expect(hw[0]&0x03).To(Equal(byte(0x02)), "a locally administered unicast MAC: %s", mac)
		for _, c := range []struct {
			a   attachment
			res types.Result
		}{{a, resA}, {b, resB}} {
			Expect(pingNow(c.a.netns, c.res, gw)).To(Succeed())
			Expect(gatewayNeigh(c.a.netns, gw)).To(Equal(mac))
		}

		// The port whose MAC the bridge would take is the lower one.
		gone, stay, stayRes := a, b, resB
		if macIn(w.hostNS, hostVethOf(resB)) < macIn(w.hostNS, hostVethOf(resA)) {
			gone, stay, stayRes = b, a, resA
		}
		Expect(w.del(n, gone)).To(Succeed())
		Expect(macIn(w.hostNS, bridge)).To(Equal(mac))
		Expect(gatewayNeigh(stay.netns, gw)).To(Equal(mac))
		Expect(pingNow(stay.netns, stayRes, gw)).To(Succeed())

		w.plugLowMACPort(bridge)
		_, err = w.add(n, attachment{id: "mac-c", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		Expect(macIn(w.hostNS, bridge)).To(Equal(mac))
		Expect(pingNow(stay.netns, stayRes, gw)).To(Succeed())
		Expect(gatewayNeigh(stay.netns, gw)).To(Equal(mac))
	})

	It("is the same on a bridge made again after it was deleted by hand", func() {
		res, err := w.add(n, attachment{id: "mac-a", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		bridge := bridgeOf(res)
		mac := macIn(w.hostNS, bridge)
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			br, err := netlink.LinkByName(bridge)
			if err != nil {
				return err
			}
			return netlink.LinkDel(br)
		})).To(Succeed())

		b := attachment{id: "mac-b", netns: newNS()}
		resB, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(macIn(w.hostNS, bridge)).To(Equal(mac))
		w.plugLowMACPort(bridge)
		Expect(macIn(w.hostNS, bridge)).To(Equal(mac))
		Expect(pingNow(b.netns, resB, gw)).To(Succeed())
	})

	It("is pinned on the next ADD on a bridge made before cnmnet set one, without changing", func() {
		a := attachment{id: "mac-a", netns: newNS()}
		resA, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		bridge := bridgeOf(resA)
		w.makeBridgeOfOldVersion(bridge, "macnet", gw+"/24", hostVethOf(resA))
		old := macIn(w.hostNS, bridge)
		Expect(old).To(Equal(macIn(w.hostNS, hostVethOf(resA))), "an unpinned bridge has its port's MAC")

		b := attachment{id: "mac-b", netns: newNS()}
		resB, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(macIn(w.hostNS, bridge)).To(Equal(old))
		w.plugLowMACPort(bridge)
		Expect(macIn(w.hostNS, bridge)).To(Equal(old), "pinned")
		Expect(pingNow(a.netns, resA, gw)).To(Succeed())
		Expect(pingNow(b.netns, resB, gw)).To(Succeed())
	})

	It("is left to the owner of an adopted bridge", func() {
		w.makeBridge("br-owned", "10.90.2.1/24")
		owners := "0a:00:00:00:00:99"
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			br, err := netlink.LinkByName("br-owned")
			if err != nil {
				return err
			}
			hw, _ := net.ParseMAC(owners)
			return netlink.LinkSetHardwareAddr(br, hw)
		})).To(Succeed())
		adopt := bridgeNet("macadopt", "10.90.2.0/24")
		adopt.extra = map[string]any{"bridge": "br-owned"}
		a := attachment{id: "mac-a", netns: newNS()}
		_, err := w.add(adopt, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(macIn(w.hostNS, "br-owned")).To(Equal(owners))
		Expect(w.del(adopt, a)).To(Succeed())
		Expect(macIn(w.hostNS, "br-owned")).To(Equal(owners))
	})
})

var _ = Describe("bridge under change: a UDP port published for a flow that exists", func() {
	It("reaches the container on the flow's next datagram", func() {
		w := newWorld()
		n := bridgeNet("udpnet", "10.90.3.0/24")
		out := w.outside()
		_, err := w.add(n, attachment{id: "first", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())

		client := testudp.NewFlow(out, "192.0.2.2:40053", "192.0.2.1:5353")
		for range 4 {
			Expect(client.Answer()).To(BeEmpty(), "nothing is published yet")
		}
		srv := attachment{id: "dns", netns: newNS(), caps: map[string]any{"portMappings": []map[string]any{
			{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}}}}
		testudp.Echo(srv.netns, "0.0.0.0:53")
		_, err = w.add(n, srv)
		Expect(err).NotTo(HaveOccurred())
		// The flow's conntrack entry, without DNAT, would outlive any
		// wait here: the client refreshes it with every datagram.
		Eventually(client.Answer, 2*time.Second, 100*time.Millisecond).Should(Equal("echo"))
	})
})

// flushJumps flushes the built-in chains that hold cnmnet's jumps.
var flushJumps = [][]string{
	{"iptables", "-F", "FORWARD"}, {"iptables", "-F", "INPUT"},
	{"iptables", "-t", "nat", "-F", "PREROUTING"}, {"iptables", "-t", "nat", "-F", "OUTPUT"},
	{"iptables", "-t", "nat", "-F", "POSTROUTING"},
}

// reloadEntries are firewall reloads, in the world's host namespace: the
// jumps from built-in chains flushed, every chain flushed, and every
// chain deleted (an iptables-restore without --noflush, as firewalld or
// another tool runs it).
func reloadEntries() []TableEntry {
	return []TableEntry{
		Entry("the jumps from built-in chains flushed", flushJumps),
		Entry("every chain flushed", [][]string{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}}),
		Entry("every chain deleted", [][]string{{"sh", "-c", "printf '*filter\\nCOMMIT\\n*nat\\nCOMMIT\\n' | iptables-restore"}}),
	}
}

var missingJumps = []string{
	"jump from filter FORWARD to CNM-FORWARD missing",
	"jump from filter INPUT to CNM-INPUT missing",
	"jump from nat PREROUTING to CNM-DNAT missing",
	"jump from nat OUTPUT to CNM-DNAT missing",
	"jump from nat POSTROUTING to CNM-POSTROUTING missing",
}

var _ = Describe("bridge under change: a firewall reload", func() {
	var (
		w   *world
		n   network
		out ns.NetNS
		web attachment
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("reload", "10.90.4.0/24")
		out = w.outside()
		// As on a host running Docker: only the network's rules let
		// bridged traffic through.
		runIn(w.hostNS, "iptables", "-P", "FORWARD", "DROP")
		serve(out, "tcp", "192.0.2.2:9000")
		web = attachment{id: "web", netns: newNS(), caps: publish(8080, 80)}
		serve(web.netns, "tcp", "0.0.0.0:80")
		_, err := w.add(n, web)
		Expect(err).NotTo(HaveOccurred())
		expectTraffic(out, web.netns, "192.0.2.1:8080")
	})
	reload := func(cmds [][]string) {
		for _, c := range cmds {
			runIn(w.hostNS, c[0], c[1:]...)
		}
	}

	DescribeTable("is found by cnmctl check, STATUS and CHECK, and repaired by cnmctl check --repair",
		func(cmds [][]string) {
			reload(cmds)
			expectBlocked(out, "192.0.2.1:8080")

			stdout, _, code := w.cnmctl("check")
			Expect(code).To(Equal(3), stdout)
			Expect(stdout).To(ContainSubstring("firewall"))
			for _, j := range missingJumps {
				Expect(stdout).To(ContainSubstring(j))
			}
			err := w.status(n)
			Expect(cniCode(err)).To(Equal(types.ErrPluginNotAvailable), "%v", err)
			Expect(err.Error()).To(ContainSubstring("jump from filter FORWARD to CNM-FORWARD missing"))
			err = w.check(n, web)
			Expect(err).To(MatchError(ContainSubstring("jump from filter FORWARD to CNM-FORWARD missing")))
			Expect(err).To(MatchError(ContainSubstring("jump from nat PREROUTING to CNM-DNAT missing")))

			stdout, _, code = w.cnmctl("check", "--repair")
			Expect(code).To(BeZero(), stdout)
			stdout, _, code = w.cnmctl("check")
			Expect(code).To(BeZero(), stdout)
			Expect(stdout).To(ContainSubstring("store and host agree"))
			Expect(w.status(n)).To(Succeed())
			Expect(w.check(n, web)).To(Succeed())
			expectTraffic(out, web.netns, "192.0.2.1:8080")
		},
		reloadEntries(),
	)

	DescribeTable("is repaired by the next ADD that publishes a port",
		func(cmds [][]string) {
			reload(cmds)
			web2 := attachment{id: "web2", netns: newNS(), caps: publish(8081, 80)}
			serve(web2.netns, "tcp", "0.0.0.0:80")
			_, err := w.add(n, web2)
			Expect(err).NotTo(HaveOccurred())
			expectTraffic(out, web.netns, "192.0.2.1:8080")
			expectTraffic(out, web2.netns, "192.0.2.1:8081")
			Expect(w.check(n, web)).To(Succeed())
			Expect(w.check(n, web2)).To(Succeed())
			Expect(w.status(n)).To(Succeed())
			stdout, _, code := w.cnmctl("check")
			Expect(code).To(BeZero(), stdout)
		},
		reloadEntries(),
	)

	It("is repaired by the DEL of an endpoint that publishes a port", func() {
		web2 := attachment{id: "web2", netns: newNS(), caps: publish(8081, 80)}
		_, err := w.add(n, web2)
		Expect(err).NotTo(HaveOccurred())
		reload(flushJumps)
		Expect(w.del(n, web2)).To(Succeed())
		expectTraffic(out, web.netns, "192.0.2.1:8080")
		Expect(w.check(n, web)).To(Succeed())
	})

	It("costs an ADD without ports no iptables process, and one with ports a save and a restore more only then", func() {
		log, path := iptablesCounter()
		add := func(id string, caps map[string]any) {
			a := attachment{id: id, netns: newNS()}
			stdin := w.stdin(n, nil)
			if caps != nil {
				stdin = w.stdinWith(n, map[string]any{"runtimeConfig": caps})
			}
			_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: a.id, netns: a.netns.Path(),
				stdin: stdin, env: []string{"PATH=" + path}})
			Expect(err).NotTo(HaveOccurred())
		}
		add("plain1", nil)
		Expect(log()).To(BeEmpty())
		add("ports1", publish(8082, 80))
		Expect(log()).To(Equal([]string{"iptables-restore"}))

		reload(flushJumps)
		add("plain2", nil)
		Expect(log()).To(BeEmpty(), "an ADD without ports does not look")
		expectBlocked(out, "192.0.2.1:8080")
		add("ports2", publish(8083, 80))
		Expect(log()).To(Equal([]string{"iptables-restore", "iptables-save", "iptables-restore"}),
			"the restore's -C tests fail, then everything is read and written")
		expectTraffic(out, web.netns, "192.0.2.1:8080")
		add("ports3", publish(8084, 80))
		Expect(log()).To(Equal([]string{"iptables-restore"}))
	})

	It("puts back the rules a network made by an earlier version lacks", func() {
		iso := bridgeNet("reload-icc", "10.90.5.0/24")
		iso.extra = map[string]any{"enableICC": false}
		a := attachment{id: "icc-a", netns: newNS()}
		_, err := w.add(iso, a)
		Expect(err).NotTo(HaveOccurred())
		// CNM-INPUT and the ICC drop came later: a network made before
		// has neither.
		save := w.iptablesSave()
		var iccDrop string
		for _, l := range strings.Split(save, "\n") {
			if strings.Contains(l, `"cnm:reload-icc"`) && strings.Contains(l, "-j DROP") && strings.Contains(l, "-A CNM-FWD-") {
				iccDrop = l
			}
		}
		Expect(iccDrop).NotTo(BeEmpty(), save)
		runIn(w.hostNS, "sh", "-c", "iptables "+strings.Replace(iccDrop, "-A ", "-D ", 1))
		runIn(w.hostNS, "iptables", "-D", "INPUT", "-m", "comment", "--comment", "cnm", "-j", "CNM-INPUT")
		runIn(w.hostNS, "iptables", "-F", "CNM-INPUT")
		runIn(w.hostNS, "iptables", "-X", "CNM-INPUT")
		err = w.check(iso, a)
		Expect(err).To(MatchError(ContainSubstring("jump from filter INPUT to CNM-INPUT missing")))
		Expect(err).To(MatchError(ContainSubstring("(enableICC false) missing")))

		_, err = w.add(iso, attachment{id: "icc-b", netns: newNS(), caps: publish(8090, 80)})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.check(iso, a)).To(Succeed())

		// The other network's guard went with the chain: its next port
		// change, or a repair, puts it back.
		Expect(w.check(n, web)).To(MatchError(ContainSubstring("to 127.0.0.0/8 missing")))
		stdout, _, code := w.cnmctl("check", "--repair")
		Expect(code).To(BeZero(), stdout)
		Expect(stdout).To(ContainSubstring("reload "))
		Expect(w.check(n, web)).To(Succeed())
		expectTraffic(out, web.netns, "192.0.2.1:8080")
	})
})

// expectTraffic checks the network's firewall on the data path: from
// the outside to the published port at addr (served in ctr), and from
// ctr to the outside, masqueraded.
func expectTraffic(out, ctr ns.NetNS, addr string) {
	GinkgoHelper()
	Expect(dial(out, addr)).To(Equal("192.0.2.2"), "published port %s", addr)
	Expect(dial(ctr, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "masquerade")
}

// iptablesCounter makes a directory of iptables-save and -restore
// wrappers (both families) that log their name and run the real binary,
// and returns the log's reader, which empties it, and a PATH with the
// wrappers first.
func iptablesCounter() (read func() []string, path string) {
	dir := GinkgoT().TempDir()
	logFile := filepath.Join(dir, "log")
	for _, bin := range []string{"iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"} {
		real, err := exec.LookPath(bin)
		Expect(err).NotTo(HaveOccurred())
		script := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec %s \"$@\"\n", bin, logFile, real)
		Expect(os.WriteFile(filepath.Join(dir, bin), []byte(script), 0o755)).To(Succeed())
	}
	read = func() []string {
		b, err := os.ReadFile(logFile)
		if os.IsNotExist(err) {
			return nil
		}
		Expect(err).NotTo(HaveOccurred())
		Expect(os.Remove(logFile)).To(Succeed())
		return strings.Fields(string(b))
	}
	return read, dir + ":" + os.Getenv("PATH")
}

var _ = Describe("bridge under change: iptables missing", func() {
	DescribeTable("is a plain error naming the binary for ADD and CHECK, and 50 for STATUS",
		func(version string) {
			w := newWorld()
			n := bridgeNet("noipt", "10.90.6.0/24")
			n.version = version
			noPath := []string{"PATH=/nonexistent"}
			a := attachment{id: "noipt", netns: newNS()}
			_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: a.id, netns: a.netns.Path(),
				stdin: w.stdin(n, nil), env: noPath})
			Expect(cniCode(err)).To(Equal(types.ErrInternal), "%v", err)
			Expect(err).To(MatchError(ContainSubstring("iptables-restore is not on PATH")))
			_, err = w.exec("cnm-bridge", invocation{command: "DEL", containerID: a.id, netns: a.netns.Path(),
				stdin: w.stdin(n, nil), env: noPath})
			Expect(err).NotTo(HaveOccurred(), "nothing to release")

			if testutils.SpecVersionHasCHECK(version) {
				res, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: a.id, netns: a.netns.Path(),
					stdin: w.stdin(n, nil)})
				Expect(err).NotTo(HaveOccurred())
				_, err = w.exec("cnm-bridge", invocation{command: "CHECK", containerID: a.id, netns: a.netns.Path(),
					stdin: w.stdinWith(n, map[string]any{"prevResult": json.RawMessage(res)}), env: noPath})
				Expect(cniCode(err)).To(Equal(types.ErrInternal), "%v", err)
				Expect(err).To(MatchError(ContainSubstring("iptables-restore is not on PATH")))
			}
			if version == "1.1.0" {
				_, err = w.exec("cnm-bridge", invocation{command: "STATUS", stdin: w.stdin(n, nil), env: noPath})
				Expect(cniCode(err)).To(Equal(types.ErrPluginNotAvailable), "%v", err)
				Expect(err).To(MatchError(ContainSubstring("iptables-restore")))
			}
		},
		versionEntries(),
	)
})
