package integration_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

// publishOn is the portMappings capability for one TCP mapping on hostIP
// ("" for none).
func publishOn(hostIP string, hostPort, containerPort int) map[string]any {
	m := map[string]any{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"}
	if hostIP != "" {
		m["hostIP"] = hostIP
	}
	return map[string]any{"portMappings": []map[string]any{m}}
}

// bridgeOf is the bridge an ADD result names first.
func bridgeOf(res types.Result) string {
	cur, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	return cur.Interfaces[0].Name
}

// sysctl reads a sysctl of n ("net/ipv4/conf/br/route_localnet").
func sysctl(n ns.NetNS, key string) string {
	var v []byte
	Expect(n.Do(func(ns.NetNS) error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	})).To(Succeed())
	return strings.TrimSpace(string(v))
}

// setSysctls writes sysctls of n, a container namespace of the test's.
func setSysctls(n ns.NetNS, kv ...string) {
	Expect(n.Do(func(ns.NetNS) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := os.WriteFile("/proc/sys/"+kv[i], []byte(kv[i+1]), 0o644); err != nil {
				return err
			}
		}
		return nil
	})).To(Succeed())
}

// runIn runs a command in n and returns its output.
func runIn(n ns.NetNS, name string, args ...string) string {
	var out []byte
	Expect(n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
		}
		return nil
	})).To(Succeed())
	return string(out)
}

// routeVia makes the container n send to dst (an address) through gw
// rather than on-link, refusing ICMP redirects back to the direct path:
// what any container with CAP_NET_ADMIN in its own namespace can do.
func routeVia(n ns.NetNS, dst, gw string) {
	setSysctls(n, "net/ipv4/conf/all/accept_redirects", "0", "net/ipv4/conf/eth0/accept_redirects", "0")
	Expect(n.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index,
			Dst: &net.IPNet{IP: net.ParseIP(dst), Mask: net.CIDRMask(32, 32)}, Gw: net.ParseIP(gw)})
	})).To(Succeed())
}

// loopbackVia makes the container n send what it sends to 127.0.0.1 out
// of eth0 to gw, and take the answers from 127.0.0.1 (CVE-2020-8558):
// its own loopback routes go, 127.0.0.1/32 is routed via gw, and eth0
// accepts loopback and local source addresses.
func loopbackVia(n ns.NetNS, gw string) {
	Expect(n.Do(func(ns.NetNS) error {
		local, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
		if err != nil {
			return err
		}
		for _, r := range local {
			if r.Dst != nil && r.Dst.IP.IsLoopback() {
				if err := netlink.RouteDel(&r); err != nil {
					return fmt.Errorf("delete %s: %w", r, err)
				}
			}
		}
		return nil
	})).To(Succeed())
	routeVia(n, "127.0.0.1", gw)
	setSysctls(n, "net/ipv4/conf/eth0/route_localnet", "1", "net/ipv4/conf/eth0/accept_local", "1")
}

// listenUDP receives datagrams on addr in n until the test ends, and
// passes on the address each came from.
func listenUDP(n ns.NetNS, addr string) <-chan string {
	var c net.PacketConn
	Expect(n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	})).To(Succeed())
	DeferCleanup(c.Close)
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			got <- host
		}
	}()
	return got
}

// sendUDP sends a datagram from n to addr.
func sendUDP(n ns.NetNS, addr string) {
	Expect(n.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("probe"))
		return err
	})).To(Succeed())
}

// withIPv6 gives the world's host and outside namespaces (see outside)
// the addresses 2001:db8:9::1 and 2001:db8:9::2 too.
func (w *world) withIPv6(out ns.NetNS) {
	for _, side := range []struct {
		n          ns.NetNS
		link, cidr string
	}{{w.hostNS, "out0", "2001:db8:9::1/64"}, {out, "out1", "2001:db8:9::2/64"}} {
		Expect(side.n.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(side.link)
			if err != nil {
				return err
			}
			addr, err := netlink.ParseAddr(side.cidr)
			if err != nil {
				return err
			}
			addr.Flags = unix.IFA_F_NODAD
			return netlink.AddrAdd(l, addr)
		})).To(Succeed())
	}
}

var _ = Describe("cnm-bridge host safety: firewall and published ports", Label("hostsafety"), func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	It("keeps containers off the host's 127.0.0.1 while a port published on it works", func() {
		n := bridgeNet("hs-lo", "10.81.1.0/24")
		web := attachment{id: "web", netns: newNS(), caps: publish(8085, 80)}
		attacker := attachment{id: "attacker", netns: newNS()}
		res, err := w.add(n, web)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n, attacker)
		Expect(err).NotTo(HaveOccurred())
		br := bridgeOf(res)
		Expect(sysctl(w.hostNS, "net/ipv4/conf/"+br+"/route_localnet")).To(Equal("1"),
			"a port published on every address needs it for the host's 127.0.0.1")

		serve(web.netns, "tcp", ":80")
		Expect(dial(w.hostNS, "127.0.0.1:8085")).To(Equal("10.81.1.1"), "the published port on the host's loopback")

		serve(w.hostNS, "tcp", "127.0.0.1:9100")
		udp := listenUDP(w.hostNS, "127.0.0.1:9101")
		loopbackVia(attacker.netns, "10.81.1.1")
		expectBlocked(attacker.netns, "127.0.0.1:9100")
		sendUDP(attacker.netns, "127.0.0.1:9101")
		Consistently(udp, time.Second).ShouldNot(Receive())
		Expect(dial(w.hostNS, "127.0.0.1:8085")).To(Equal("10.81.1.1"), "still")

		By("the same packets get through without the CNM-INPUT rule, which CHECK then names")
		runIn(w.hostNS, "iptables", "-F", "CNM-INPUT")
		Expect(dial(attacker.netns, "127.0.0.1:9100")).To(Equal("10.81.1.3"))
		sendUDP(attacker.netns, "127.0.0.1:9101")
		Eventually(udp, 2*time.Second).Should(Receive(Equal("10.81.1.3")))
		Expect(w.check(n, attacker)).To(MatchError(ContainSubstring("drop of traffic from " + br + " to 127.0.0.0/8 missing")))
	})

	DescribeTable("sets route_localnet on the bridge only while a port is published on 127.0.0.1",
		func(version string) {
			n := bridgeNet("hs-rl", "10.81.2.0/24")
			n.version = version
			plain := attachment{id: "plain", netns: newNS()}
			res, err := w.add(n, plain)
			Expect(err).NotTo(HaveOccurred())
			key := "net/ipv4/conf/" + bridgeOf(res) + "/route_localnet"
			Expect(sysctl(w.hostNS, key)).To(Equal("0"), "no published port")

			elsewhere := attachment{id: "elsewhere", netns: newNS(), caps: publishOn("192.0.2.1", 8090, 80)}
			v6 := attachment{id: "v6", netns: newNS(), caps: publishOn("::", 8091, 80)}
			wild := attachment{id: "wild", netns: newNS(), caps: publish(8092, 80)}
			lo := attachment{id: "lo", netns: newNS(), caps: publishOn("127.0.0.2", 8093, 80)}
			_, err = w.add(n, elsewhere)
			Expect(err).NotTo(HaveOccurred())
			Expect(sysctl(w.hostNS, key)).To(Equal("0"), "a port on another address")
			_, err = w.add(n, v6)
			Expect(err).To(HaveOccurred(), "an IPv4-only endpoint cannot publish on ::")
			Expect(sysctl(w.hostNS, key)).To(Equal("0"))

			_, err = w.add(n, wild)
			Expect(err).NotTo(HaveOccurred())
			Expect(sysctl(w.hostNS, key)).To(Equal("1"), "a port on every address")
			_, err = w.add(n, lo)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.del(n, wild)).To(Succeed())
			Expect(sysctl(w.hostNS, key)).To(Equal("1"), "a port on 127.0.0.2 is left")
			Expect(w.del(n, lo)).To(Succeed())
			Expect(sysctl(w.hostNS, key)).To(Equal("0"), "none is left")
			Expect(w.del(n, elsewhere)).To(Succeed())
			Expect(sysctl(w.hostNS, key)).To(Equal("0"))
			Expect(sysctl(w.hostNS, "net/ipv4/conf/all/route_localnet")).To(Equal("0"), "never the host-wide setting")
		},
		versionEntries(),
	)

	It("publishes hostIP 0.0.0.0 on IPv4 only, :: on IPv6 only, and no hostIP on both", func() {
		out := w.outside()
		w.withIPv6(out)
		n := bridgeNet("hs-fam", "10.81.3.0/24")
		n.ipam = ipamRanges("10.81.3.0/24", "fd81:3::/64")
		v4 := attachment{id: "v4", netns: newNS(), caps: publishOn("0.0.0.0", 8086, 80)}
		v6 := attachment{id: "v6", netns: newNS(), caps: publishOn("::", 8087, 80)}
		both := attachment{id: "both", netns: newNS(), caps: publish(8088, 80)}
		// The host port is held per family: 0.0.0.0 next to ::.
		other := attachment{id: "other", netns: newNS(), caps: publishOn("0.0.0.0", 8087, 81)}
		ips := map[string]string{}
		// Every endpoint first: a bridge takes the lowest MAC of its
		// ports, and the containers' neighbour caches would lag behind.
		for _, a := range []attachment{v4, v6, both, other} {
			res, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred(), a.id)
			ips[a.id] = firstIP(res)
		}
		for _, a := range []attachment{v4, v6, both} {
			serve(a.netns, "tcp", ":80")
		}
		serve(other.netns, "tcp", ":81")
		_, err := w.add(n, attachment{id: "clash", netns: newNS(), caps: publishOn("::", 8088, 80)})
		Expect(cniCode(err)).To(Equal(cnm.CodePortInUse), "but :: next to no hostIP")
		Expect(err.Error()).To(ContainSubstring("8088"))

		// The containers' IPv6 link-local addresses, which neighbour
		// discovery needs, are usable once duplicate address detection
		// is done: a second or two after ADD.
		dial6 := func(addr string) func() (string, error) { return func() (string, error) { return dial(out, addr) } }
		Eventually(dial6("[2001:db8:9::1]:8087"), 5*time.Second).Should(Equal("2001:db8:9::2"))
		Eventually(dial6("[2001:db8:9::1]:8088"), 5*time.Second).Should(Equal("2001:db8:9::2"))
		Expect(dial(out, "192.0.2.1:8086")).To(Equal("192.0.2.2"))
		Expect(dial(out, "192.0.2.1:8088")).To(Equal("192.0.2.2"))
		Expect(dial(out, "192.0.2.1:8087")).To(Equal("192.0.2.2"), "other's port 81")
		expectBlocked(out, "[2001:db8:9::1]:8086")

		ctr := func(id string) string { ip, _, _ := strings.Cut(ips[id], "/"); return ip }
		v4rules := runIn(w.hostNS, "iptables-save", "-t", "nat")
		v6rules := runIn(w.hostNS, "ip6tables-save", "-t", "nat")
		Expect(v4rules).To(ContainSubstring("--to-destination " + ctr("v4") + ":80"))
		Expect(v4rules).NotTo(ContainSubstring("--to-destination "+ctr("v6")+":"), ":: publishes no IPv4 port")
		Expect(v4rules).To(ContainSubstring("--to-destination " + ctr("other") + ":81"))
		Expect(v4rules).To(ContainSubstring("--to-destination " + ctr("both") + ":80"))
		Expect(v6rules).NotTo(ContainSubstring("--dport 8086 "), "0.0.0.0 publishes no IPv6 port")
		Expect(v6rules).To(ContainSubstring("--dport 8087 "))
		Expect(v6rules).To(ContainSubstring("--dport 8088 "))
		for _, a := range []attachment{v4, v6, both, other} {
			Expect(w.check(n, a)).To(Succeed(), a.id)
		}
	})

	// bridge-nf-call-iptables is per namespace; br_netfilter, where it is
	// loaded, turns it on in every new one, as on Kubernetes nodes.
	const brNF = "net/bridge/bridge-nf-call-iptables"

	DescribeTable("holds enableICC against a route through the gateway",
		func(icc, brNetfilter bool) {
			_, err := os.Stat("/proc/sys/" + brNF)
			switch {
			case err == nil:
				setSysctls(w.hostNS, brNF, map[bool]string{false: "0", true: "1"}[brNetfilter])
			case brNetfilter:
				Skip("br_netfilter is not loaded")
			}
			w.outside() // the host address 192.0.2.1
			n := bridgeNet("hs-icc", "10.81.4.0/24")
			n.extra = map[string]any{"enableICC": icc}
			a := attachment{id: "a", netns: newNS()}
			b := attachment{id: "b", netns: newNS(), caps: publish(8089, 80)}
			for _, x := range []attachment{a, b} {
				_, err := w.add(n, x)
				Expect(err).NotTo(HaveOccurred())
			}
			serve(b.netns, "tcp", ":80")
			serve(b.netns, "tcp", ":9000")
			udp := listenUDP(b.netns, ":9002")
			serve(w.hostNS, "tcp", "10.81.4.1:9001")
			// Both ends route through the host: bridge port isolation
			// cannot see that traffic.
			routeVia(a.netns, "10.81.4.3", "10.81.4.1")
			routeVia(b.netns, "10.81.4.2", "10.81.4.1")

			Expect(ping(a.netns, "10.81.4.2", "10.81.4.1")).To(Succeed(), "the gateway")
			Expect(ping(b.netns, "10.81.4.3", "10.81.4.1")).To(Succeed(), "the gateway")
			Expect(dial(a.netns, "10.81.4.1:9001")).To(Equal("10.81.4.2"))
			// With br_netfilter the host bridges DNAT to its own bridge
			// rather than routing it, and isolated ports refuse it.
			if icc || !brNetfilter {
				Expect(dial(a.netns, "192.0.2.1:8089")).To(Equal("10.81.4.1"), "B's published port, through the host")
			}
			sendUDP(a.netns, "10.81.4.3:9002")
			if icc {
				Expect(ping(a.netns, "10.81.4.2", "10.81.4.3")).To(Succeed())
				Expect(dial(a.netns, "10.81.4.3:9000")).To(Equal("10.81.4.2"))
				Eventually(udp, 2*time.Second).Should(Receive(Equal("10.81.4.2")))
			} else {
				Expect(ping(a.netns, "10.81.4.2", "10.81.4.3")).NotTo(Succeed())
				expectBlocked(a.netns, "10.81.4.3:9000")
				Consistently(udp, time.Second).ShouldNot(Receive())
			}
			Expect(w.check(n, a)).To(Succeed())
			Expect(w.check(n, b)).To(Succeed())
		},
		Entry("enableICC false: dropped in the forwarding path", false, false),
		Entry("enableICC false, with br_netfilter calling iptables: dropped all the same", false, true),
		Entry("enableICC true: the same route works", true, false),
	)
})
