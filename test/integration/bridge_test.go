package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/test/testns"
)

func bridgeNet(name, subnet string) network {
	return network{name: name, typ: "cnm-bridge", version: "1.1.0", ipam: ipamRanges(subnet),
		caps: map[string]bool{"portMappings": true, "ips": true, "mac": true}}
}

func publish(hostPort, containerPort int) map[string]any {
	return map[string]any{"portMappings": []map[string]any{{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"}}}
}

// outside connects a new namespace to the world's host namespace:
// 192.0.2.1 on the host side, 192.0.2.2 outside.
func (w *world) outside() ns.NetNS {
	out := newNS()
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "out0"}, PeerName: "out1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("out1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(out.Fd())); err != nil {
			return err
		}
		return upWithAddr("out0", "192.0.2.1/24")
	})).To(Succeed())
	Expect(out.Do(func(ns.NetNS) error {
		if err := upWithAddr("out1", "192.0.2.2/24"); err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		return netlink.LinkSetUp(lo)
	})).To(Succeed())
	return out
}

func upWithAddr(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	addr, _ := netlink.ParseAddr(cidr)
	if err := netlink.AddrAdd(l, addr); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// iptablesSave is the firewall of the world's host namespace.
func (w *world) iptablesSave() string {
	var out []byte
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command("iptables-save").Output()
		return err
	})).To(Succeed())
	return string(out)
}

var _ = Describe("cnm-bridge", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("br1", "10.80.1.0/24")
	})

	DescribeTable("returns a result that chains, in every CNI version",
		func(version string) {
			n.version = version
			a := attachment{id: "ctr-res", netns: newNS()}
			res, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Version()).To(Equal(version))
			cur, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			Expect(cur.Interfaces).To(HaveLen(3))
			Expect(cur.Interfaces[0].Name).To(HavePrefix("cnm-"))
			Expect(cur.Interfaces[1].Name).To(HavePrefix("veth"))
			Expect(cur.Interfaces[2].Name).To(Equal("eth0"))
			Expect(cur.Interfaces[2].Sandbox).To(Equal(a.netns.Path()))
			Expect(cur.IPs).To(HaveLen(1))
			Expect(cur.IPs[0].Address.String()).To(Equal("10.80.1.2/24"))
			Expect(*cur.IPs[0].Interface).To(Equal(2))
			Expect(routeStrings(cur.Routes)).To(ContainElement("0.0.0.0/0 via 10.80.1.1"))
			Expect(cur.Interfaces[2].Mac).To(Equal("02:42:0a:50:01:02"))

			br, addrs := linkIn(w.hostNS, cur.Interfaces[0].Name)
			Expect(br).NotTo(BeNil())
			Expect(addrStrings(addrs)).To(ContainElement("10.80.1.1/24"))
			if testutils.SpecVersionHasCHECK(version) {
				Expect(w.check(n, a)).To(Succeed())
			}
			Expect(w.del(n, a)).To(Succeed())
			Expect(w.hostLinks("veth")).To(BeEmpty())
			br, _ = linkIn(w.hostNS, cur.Interfaces[0].Name)
			Expect(br).NotTo(BeNil(), "the bridge stays until the network is deleted")
		},
		versionEntries(),
	)

	It("sets the configured MTU, bridge name and promiscuous mode, and hairpin on request", func() {
		n.extra = map[string]any{"mtu": 1400, "bridge": "cnmtest0", "promiscMode": true, "hairpinMode": true}
		a := attachment{id: "mtu", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		br, _ := linkIn(w.hostNS, "cnmtest0")
		Expect(br).NotTo(BeNil())
		Expect(br.Attrs().MTU).To(Equal(1400))
		Expect(br.Attrs().Promisc).To(Equal(1))
		eth0, _ := linkIn(a.netns, "eth0")
		Expect(eth0.Attrs().MTU).To(Equal(1400))
		veths := w.hostLinks("veth")
		Expect(veths).To(HaveLen(1))
		veth, _ := linkIn(w.hostNS, veths[0])
		Expect(veth.Attrs().MasterIndex).To(Equal(br.Attrs().Index))
		Expect(veth.Attrs().Protinfo).To(BeNil()) // LinkByName does not fill it; read it below
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			pi, err := netlink.LinkGetProtinfo(veth)
			if err != nil {
				return err
			}
			Expect(pi.Hairpin).To(BeTrue())
			return nil
		})).To(Succeed())
	})

	It("CHECK names a published port whose rule was removed by hand", func() {
		a := attachment{id: "web", netns: newNS(), caps: publish(8081, 80)}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			out, err := exec.Command("iptables-save", "-t", "nat").Output()
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "--dport 8081") && strings.HasPrefix(line, "-A ") {
					// Flush the chain that holds it: the rule's own text has quotes.
					chain := strings.Fields(line)[1]
					if out, err := exec.Command("iptables", "-t", "nat", "-F", chain).CombinedOutput(); err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
				}
			}
			return nil
		})).To(Succeed())
		err = w.check(n, a)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("8081"))
	})

	It("carries traffic between containers and to the host, and masquerades what leaves", func() {
		out := w.outside()
		a := attachment{id: "a", netns: newNS()}
		b := attachment{id: "b", netns: newNS()}
		for _, x := range []attachment{a, b} {
			_, err := w.add(n, x)
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(ping(a.netns, "10.80.1.2", "10.80.1.3")).To(Succeed())
		Expect(ping(b.netns, "10.80.1.3", "10.80.1.2")).To(Succeed())

		serve(w.hostNS, "tcp", "10.80.1.1:9000")
		Expect(dial(a.netns, "10.80.1.1:9000")).To(Equal("10.80.1.2"))

		serve(out, "tcp", "192.0.2.2:9000")
		Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "the source is rewritten to the host's address")
	})

	It("does not masquerade with ipMasq false", func() {
		n.extra = map[string]any{"ipMasq": false}
		out := w.outside()
		Expect(out.Do(func(ns.NetNS) error {
			_, dst, _ := net.ParseCIDR("10.80.1.0/24")
			return netlink.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("192.0.2.1")})
		})).To(Succeed())
		a := attachment{id: "a", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		serve(out, "tcp", "192.0.2.2:9000")
		Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("10.80.1.2"))
	})

	It("publishes a port to the host, the outside, other containers and the container itself", func() {
		out := w.outside()
		a := attachment{id: "web", netns: newNS(), caps: publish(8080, 80)}
		b := attachment{id: "client", netns: newNS()}
		for _, x := range []attachment{a, b} {
			_, err := w.add(n, x)
			Expect(err).NotTo(HaveOccurred())
		}
		serve(a.netns, "tcp", ":80")
		Expect(dial(out, "192.0.2.1:8080")).To(Equal("192.0.2.2"), "from outside")
		Expect(dial(w.hostNS, "10.80.1.1:8080")).NotTo(BeEmpty(), "from the host namespace")
		Expect(dial(w.hostNS, "127.0.0.1:8080")).NotTo(BeEmpty(), "from the host's loopback")
		Expect(dial(b.netns, "192.0.2.1:8080")).To(Equal("10.80.1.1"), "from another container, hairpinned through the host")
		Expect(dial(a.netns, "192.0.2.1:8080")).To(Equal("10.80.1.1"), "from the container itself")
		Expect(w.iptablesSave()).To(ContainSubstring("--dport 8080"))
		Expect(w.check(n, a)).To(Succeed())

		Expect(w.del(n, a)).To(Succeed())
		Expect(w.iptablesSave()).NotTo(ContainSubstring("--dport 8080"), "DEL removes exactly this endpoint's rules")
		expectBlocked(out, "192.0.2.1:8080")
	})

	It("binds published ports to hostBindingIPv4 when a mapping names no host IP", func() {
		n.extra = map[string]any{"hostBindingIPv4": "192.0.2.1"}
		out := w.outside()
		a := attachment{id: "web", netns: newNS(), caps: publish(8082, 80)}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		serve(a.netns, "tcp", ":80")
		Expect(dial(out, "192.0.2.1:8082")).To(Equal("192.0.2.2"))
		expectBlocked(w.hostNS, "10.80.1.1:8082")
	})

	It("refuses a host port another endpoint publishes, and changes nothing", func() {
		a := attachment{id: "first", netns: newNS(), caps: publish(8080, 80)}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		before, rules := w.dump(), w.iptablesSave()
		_, err = w.add(n, attachment{id: "second", netns: newNS(), caps: publish(8080, 81)})
		Expect(cniCode(err)).To(Equal(cnm.CodePortInUse))
		Expect(err.Error()).To(ContainSubstring("8080"))
		Expect(w.dump()).To(Equal(before))
		Expect(stripCounters(w.iptablesSave())).To(Equal(stripCounters(rules)))
		Expect(w.hostLinks("veth")).To(HaveLen(1))
	})

	It("isolates networks from each other unless isolation is false", func() {
		n2 := bridgeNet("br2", "10.80.2.0/24")
		a := attachment{id: "a", netns: newNS()}
		b := attachment{id: "b", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n2, b)
		Expect(err).NotTo(HaveOccurred())
		serve(b.netns, "tcp", ":9000")
		serve(a.netns, "tcp", ":9000")
		expectBlocked(a.netns, "10.80.2.2:9000")
		expectBlocked(b.netns, "10.80.1.2:9000")

		n3, n4 := bridgeNet("br3", "10.80.3.0/24"), bridgeNet("br4", "10.80.4.0/24")
		n3.extra = map[string]any{"isolation": false}
		n4.extra = map[string]any{"isolation": false}
		c := attachment{id: "c", netns: newNS()}
		d := attachment{id: "d", netns: newNS()}
		_, err = w.add(n3, c)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(n4, d)
		Expect(err).NotTo(HaveOccurred())
		serve(d.netns, "tcp", ":9000")
		// Reached, masqueraded to the gateway as Docker does between bridges.
		Expect(dial(c.netns, "10.80.4.2:9000")).To(Equal("10.80.4.1"))
	})

	It("with enableICC false keeps endpoints of one bridge apart, but not from the gateway and outside", func() {
		n.extra = map[string]any{"enableICC": false}
		out := w.outside()
		a := attachment{id: "a", netns: newNS()}
		b := attachment{id: "b", netns: newNS()}
		for _, x := range []attachment{a, b} {
			_, err := w.add(n, x)
			Expect(err).NotTo(HaveOccurred())
		}
		serve(b.netns, "tcp", ":9000")
		expectBlocked(a.netns, "10.80.1.3:9000")
		serve(w.hostNS, "tcp", "10.80.1.1:9001")
		Expect(dial(a.netns, "10.80.1.1:9001")).To(Equal("10.80.1.2"))
		serve(out, "tcp", "192.0.2.2:9000")
		Expect(dial(a.netns, "192.0.2.2:9000")).To(Equal("192.0.2.1"))
	})

	It("gives a sandbox on two networks one default route, through the first", func() {
		n2 := bridgeNet("br2", "10.80.2.0/24")
		a := attachment{id: "multi", netns: newNS()}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		b := a
		b.ifname = "net1"
		res, err := w.add(n2, b)
		Expect(err).NotTo(HaveOccurred())
		cur, _ := current.NewResultFromResult(res)
		Expect(routeStrings(cur.Routes)).NotTo(ContainElement(HavePrefix("0.0.0.0/0")))
		Expect(defaultGateway(a.netns)).To(Equal("10.80.1.1"))
		Expect(w.check(n, a)).To(Succeed())
		Expect(w.check(n2, b)).To(Succeed())
	})

	It("serves dual-stack", func() {
		n.ipam = ipamRanges("10.80.1.0/24", "fd80:1::/64")
		a := attachment{id: "ds", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		cur, _ := current.NewResultFromResult(res)
		Expect(cur.IPs).To(HaveLen(2))
		serve(w.hostNS, "tcp6", "[fd80:1::1]:9000")
		Expect(dial(a.netns, "[fd80:1::1]:9000")).To(Equal("fd80:1::2"))
		Expect(w.check(n, a)).To(Succeed())
	})

	It("gives a persistent endpoint back its address and MAC after DEL/ADD", func() {
		args := [][2]string{{"CNM_ENDPOINT", "db"}}
		a := attachment{id: "db-1", netns: newNS(), args: args}
		res1, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		_, err = w.add(n, attachment{id: "other", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		b := attachment{id: "db-2", netns: newNS(), args: args}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
		Expect(macOf(res2)).To(Equal(macOf(res1)))
		Expect(ping(b.netns, "10.80.1.2", "10.80.1.1")).To(Succeed())
	})

	DescribeTable("chains with the reference portmap, bandwidth, firewall and tuning plugins through libcni",
		func(pluginDir string, check bool) {
			if pluginDir == "" {
				pluginDir = binDir
			}
			if _, err := os.Stat(pluginDir + "/portmap"); err != nil {
				Skip("no reference plugins in " + pluginDir + " (Debian: apt-get install containernetworking-plugins)")
			}
			cni := libcni.NewCNIConfigWithCacheDir([]string{pluginDir, binDir}, w.cacheDir, nil)
			out := w.outside()
			raw, err := json.Marshal(map[string]any{
				"cniVersion": "1.0.0", "name": "chained",
				"plugins": []any{
					w.pluginConf(bridgeNetNoCaps("chained", "10.80.9.0/24")),
					map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
					map[string]any{"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000},
					map[string]any{"type": "firewall"},
					map[string]any{"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.arp_notify": "1"}},
				},
			})
			Expect(err).NotTo(HaveOccurred())
			list, err := libcni.ConfListFromBytes(raw)
			Expect(err).NotTo(HaveOccurred())
			a := attachment{id: "chained", netns: newNS(), caps: publish(8090, 80)}
			ctx := context.Background()
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				_, err := cni.AddNetworkList(ctx, list, a.rt())
				return err
			})).To(Succeed())
			serve(a.netns, "tcp", ":80")
			Expect(dial(out, "192.0.2.1:8090")).NotTo(BeEmpty(), "published by the reference portmap")
			if check {
				Expect(w.hostNS.Do(func(ns.NetNS) error { return cni.CheckNetworkList(ctx, list, a.rt()) })).To(Succeed())
			}
			Expect(w.hostNS.Do(func(ns.NetNS) error { return cni.DelNetworkList(ctx, list, a.rt()) })).To(Succeed())
			Expect(w.hostLinks("veth")).To(BeEmpty())
		},
		Entry("the current reference plugins: ADD, CHECK, DEL", "", true),
		// Debian 12's 1.1.1 fails CHECK on its own: portmap looks for an
		// ip6tables chain it never made, bandwidth dereferences a nil
		// result when no rate is in runtimeConfig.
		Entry("Debian's containernetworking-plugins: ADD, DEL", "/usr/lib/cni", false),
	)

	DescribeTable("refuses bad input with a CNI error naming the field, leaving nothing behind",
		func(mutate func(*network, *attachment, *[]string), code uint, says string) {
			// A network already in the store, which must stay as it is.
			_, err := w.add(bridgeNet("resident", "10.80.99.0/24"), attachment{id: "resident", netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
			a := attachment{id: "bad", netns: newNS()}
			var env []string
			mutate(&n, &a, &env)
			before := w.dump()
			stdin := w.stdin(n, nil)
			if a.caps != nil {
				var m map[string]any
				Expect(json.Unmarshal(stdin, &m)).To(Succeed())
				m["runtimeConfig"] = a.caps
				stdin, _ = json.Marshal(m)
			}
			_, err = w.exec("cnm-bridge", invocation{command: "ADD", containerID: a.id, netns: a.netns.Path(), stdin: stdin, env: env})
			Expect(err).To(HaveOccurred())
			Expect(cniCode(err)).To(Equal(code), err.Error())
			Expect(err.Error()).To(ContainSubstring(says))
			Expect(w.dump()).To(Equal(before))
			Expect(w.hostLinks("veth")).To(HaveLen(1))
			Expect(w.hostLinks("cnm-")).To(HaveLen(1), "no bridge of the refused network")
			Expect(testns.LinkNames(a.netns)).To(ConsistOf("lo"))
		},
		Entry("a bridge name longer than 15", func(n *network, _ *attachment, _ *[]string) {
			n.extra = map[string]any{"bridge": "a-very-long-bridge-name"}
		}, types.ErrInvalidNetworkConfig, "bridge"),
		Entry("a bridge name with a slash", func(n *network, _ *attachment, _ *[]string) {
			n.extra = map[string]any{"bridge": "br/0"}
		}, types.ErrInvalidNetworkConfig, "bridge"),
		Entry("an MTU below 68", func(n *network, _ *attachment, _ *[]string) {
			n.extra = map[string]any{"mtu": 10}
		}, types.ErrInvalidNetworkConfig, "mtu"),
		Entry("a hostBindingIPv4 that is not IPv4", func(n *network, _ *attachment, _ *[]string) {
			n.extra = map[string]any{"hostBindingIPv4": "fd00::1"}
		}, types.ErrInvalidNetworkConfig, "hostBindingIPv4"),
		Entry("a host port out of range", func(_ *network, a *attachment, _ *[]string) {
			a.caps = publish(70000, 80)
		}, types.ErrInvalidNetworkConfig, "hostPort"),
		Entry("a container port of 0", func(_ *network, a *attachment, _ *[]string) {
			a.caps = publish(8080, 0)
		}, types.ErrInvalidNetworkConfig, "containerPort"),
		Entry("a protocol that is not tcp, udp or sctp", func(_ *network, a *attachment, _ *[]string) {
			a.caps = map[string]any{"portMappings": []map[string]any{{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}}}
		}, types.ErrInvalidNetworkConfig, "protocol"),
		Entry("no ipam", func(n *network, _ *attachment, _ *[]string) {
			n.ipam = nil
		}, types.ErrInvalidNetworkConfig, "ipam"),
		// 50 is STATUS's answer; an ADD that cannot run says what is
		// missing (see "bridge under change").
		Entry("iptables missing", func(_ *network, _ *attachment, env *[]string) {
			*env = []string{"PATH=/nonexistent"}
		}, types.ErrInternal, "iptables-restore is not on PATH"),
	)

	It("refuses a subnet that overlaps another bridge network's, leaving nothing behind", func() {
		_, err := w.add(n, attachment{id: "first", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		before := w.dump()
		bridges := w.hostLinks("cnm-")
		_, err = w.add(bridgeNet("overlap", "10.80.0.0/16"), attachment{id: "second", netns: newNS()})
		Expect(cniCode(err)).To(Equal(types.ErrInvalidNetworkConfig))
		Expect(err.Error()).To(ContainSubstring("overlaps"))
		Expect(w.dump()).To(Equal(before))
		Expect(w.hostLinks("cnm-")).To(Equal(bridges))
	})
})

func routeStrings(routes []*types.Route) []string {
	var out []string
	for _, r := range routes {
		out = append(out, r.Dst.String()+" via "+r.GW.String())
	}
	return out
}

func bridgeNetNoCaps(name, subnet string) network {
	n := bridgeNet(name, subnet)
	n.caps = nil
	return n
}

// stripCounters removes iptables-save's packet counters and comments.
func stripCounters(save string) string {
	var keep []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.Index(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
			l = l[:i]
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
