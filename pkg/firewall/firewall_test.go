package firewall_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/firewall"
)

var _ = Describe("Firewall", func() {
	var (
		hostNS ns.NetNS
		fw     *firewall.Firewall
		net1   firewall.Network
		net2   firewall.Network
	)

	BeforeEach(func() {
		hostNS = newTestNS()
		fw = newFirewall()
		net1 = firewall.Network{Name: "net1", Bridge: "br1", Subnets: []*net.IPNet{mustNet("10.1.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
		net2 = firewall.Network{Name: "net2", Bridge: "br2", Subnets: []*net.IPNet{mustNet("10.2.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
	})

	// do runs op in hostNS and returns how many processes it ran.
	do := func(op func() error) int {
		GinkgoHelper()
		before := fw.Execs()
		inNS(hostNS, op)
		return fw.Execs() - before
	}

	Describe("EnsureNetwork", func() {
		It("creates the chains and the five jumps once, and changes nothing when called again", func() {
			Expect(do(func() error { return fw.EnsureNetwork(net1) })).To(Equal(2), "one save, one restore")
			first := saveRules(hostNS, "iptables-save")

			c := firewall.NetworkChains("net1")
			for _, chain := range []string{firewall.ChainForward, firewall.ChainIsolation1, firewall.ChainIsolation2,
				firewall.ChainInput, firewall.ChainDNAT, firewall.ChainPostrouting, c.Forward, c.DNAT, c.Postrouting} {
				Expect(first).To(ContainSubstring(":"+chain+" - [0:0]"), chain)
			}
			for _, jump := range [][2]string{{"FORWARD", firewall.ChainForward}, {"INPUT", firewall.ChainInput},
				{"PREROUTING", firewall.ChainDNAT}, {"OUTPUT", firewall.ChainDNAT}, {"POSTROUTING", firewall.ChainPostrouting}} {
				Expect(linesContaining(first, "-A "+jump[0]+" ")).To(ConsistOf(ContainSubstring("-j "+jump[1])), jump[0])
			}
			Expect(chainRules(first, firewall.ChainForward)[0]).To(HaveSuffix("-j " + firewall.ChainIsolation1))
			Expect(chainRules(first, c.Forward)).To(HaveLen(3))
			Expect(chainRules(first, c.Postrouting)).To(ConsistOf(
				ContainSubstring("-s 10.1.0.0/24 ! -o br1"),
				And(ContainSubstring("-s 10.1.0.0/24 -o br1"), ContainSubstring("--ctstate DNAT")),
				ContainSubstring("-s 127.0.0.0/8 -o br1"),
			))
			for _, l := range linesContaining(first, "-A ") {
				Expect(l).To(ContainSubstring("--comment"), "every rule carries a comment")
			}

			Expect(do(func() error { return fw.EnsureNetwork(net1) })).To(Equal(1), "one save, nothing to restore")
			Expect(saveRules(hostNS, "iptables-save")).To(Equal(first))
		})

		It("keeps the published ports and rewrites what changed", func() {
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}) })

			net1.IPMasq, net1.Isolation = false, false
			Expect(do(func() error { return fw.EnsureNetwork(net1) })).To(Equal(2))
			rules := saveRules(hostNS, "iptables-save")
			Expect(chainRules(rules, firewall.NetworkChains("net1").DNAT)).To(HaveLen(1))
			Expect(rules).NotTo(ContainSubstring("! -o br1 -m comment"))
			Expect(chainRules(rules, firewall.ChainIsolation1)).To(BeEmpty())
			Expect(chainRules(rules, firewall.ChainIsolation2)).To(BeEmpty())
			inNS(hostNS, func() error { return fw.Check(net1, []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}) })
		})

		It("puts back a jump deleted by hand, once", func() {
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			runIn(hostNS, "iptables", "-t", "nat", "-D", "OUTPUT", "1")
			err := errIn(hostNS, func() error { return fw.Check(net1, nil) })
			Expect(err).To(MatchError(ContainSubstring("jump from nat OUTPUT to CNM-DNAT missing")))

			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			Expect(linesContaining(saveRules(hostNS, "iptables-save"), "-A OUTPUT ")).To(HaveLen(1))
			inNS(hostNS, func() error { return fw.Check(net1, nil) })
		})
	})

	Describe("host safety", func() {
		It("drops what a network's bridge sends to 127.0.0.0/8 but replies and published ports, in CNM-INPUT", func() {
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })
			rules := saveRules(hostNS, "iptables-save")
			Expect(linesContaining(rules, "-A INPUT ")).To(ConsistOf(HaveSuffix("-j " + firewall.ChainInput)))
			guard := func(br string) OmegaMatcher {
				return And(ContainSubstring("-i "+br+" "), ContainSubstring("-d 127.0.0.0/8"),
					ContainSubstring("! --ctstate RELATED,ESTABLISHED,DNAT"), HaveSuffix("-j DROP"))
			}
			Expect(chainRules(rules, firewall.ChainInput)).To(ConsistOf(
				And(guard("br1"), ContainSubstring(`"cnm:net1"`)), And(guard("br2"), ContainSubstring(`"cnm:net2"`))))
			inNS(hostNS, func() error { return fw.Check(net1, nil) })

			runIn(hostNS, "iptables", "-D", firewall.ChainInput, "1")
			err := errIn(hostNS, func() error { return fw.Check(net1, nil) })
			Expect(err).To(MatchError("network net1: drop of traffic from br1 to 127.0.0.0/8 missing"))
			runIn(hostNS, "iptables", "-D", "INPUT", "1")
			err = errIn(hostNS, func() error { return fw.Check(net2, nil) })
			Expect(err).To(MatchError("network net2: jump from filter INPUT to CNM-INPUT missing"))

			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.Check(net1, nil) })
			inNS(hostNS, func() error { return fw.Check(net2, nil) })

			inNS(hostNS, func() error { return fw.RemoveNetwork(net1) })
			rules = saveRules(hostNS, "iptables-save")
			Expect(chainRules(rules, firewall.ChainInput)).To(ConsistOf(guard("br2")))
			Expect(linesContaining(rules, "-A INPUT ")).To(HaveLen(1), "the shared jump stays")
		})

		It("with ICC false drops forwarding from the bridge back to it after the reply and DNAT accepts", func() {
			c := firewall.NetworkChains("net1")
			net1.ICC = false
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			Expect(chainRules(saveRules(hostNS, "iptables-save"), c.Forward)).To(HaveExactElements(
				ContainSubstring("-o br1 -m conntrack --ctstate RELATED,ESTABLISHED"),
				ContainSubstring("-o br1 -m conntrack --ctstate DNAT"),
				And(ContainSubstring("-i br1 -o br1"), HaveSuffix("-j DROP")),
				And(ContainSubstring("-i br1 -m comment"), HaveSuffix("-j ACCEPT")),
			))
			inNS(hostNS, func() error { return fw.Check(net1, nil) })

			iccOn := net1
			iccOn.ICC = true
			err := errIn(hostNS, func() error { return fw.Check(iccOn, nil) })
			Expect(err).To(MatchError(And(ContainSubstring("unexpected rule: -A "+c.Forward), ContainSubstring("-j DROP"))))

			inNS(hostNS, func() error { return fw.EnsureNetwork(iccOn) })
			Expect(chainRules(saveRules(hostNS, "iptables-save"), c.Forward)).To(HaveLen(3))
			err = errIn(hostNS, func() error { return fw.Check(net1, nil) })
			Expect(err).To(MatchError("network net1: drop of traffic between the endpoints of br1 (enableICC false) missing"))
		})
	})

	Describe("RemoveNetwork", func() {
		It("removes one network and leaves the other's rules untouched", func() {
			ports2 := []firewall.PortMapping{tcp(9090, "10.2.0.7", 90)}
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })
			inNS(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}) })
			inNS(hostNS, func() error { return fw.SetPorts(net2, ports2) })
			before := saveRules(hostNS, "iptables-save")
			c1 := firewall.NetworkChains("net1")

			Expect(do(func() error { return fw.RemoveNetwork(net1) })).To(Equal(2))
			after := saveRules(hostNS, "iptables-save")
			Expect(linesContaining(after, "cnm:net2", "br2")).To(Equal(linesContaining(before, "cnm:net2", "br2")))
			Expect(linesContaining(after, "cnm:net1", "br1", c1.Forward, c1.DNAT, c1.Postrouting)).To(BeEmpty())
			inNS(hostNS, func() error { return fw.Check(net2, ports2) })

			Expect(do(func() error { return fw.RemoveNetwork(net1) })).To(Equal(1), "nothing left to remove")
			Expect(saveRules(hostNS, "iptables-save")).To(Equal(after))
		})

		It("removes the shared chains and the jumps with the last network, and only cnmnet's rules", func() {
			// Another tool's rule in a built-in chain, before and after ours.
			runIn(hostNS, "iptables", "-A", "FORWARD", "-i", "other0", "-j", "ACCEPT")
			runIn(hostNS, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "other0", "-j", "MASQUERADE")
			before := saveRules(hostNS, "iptables-save")
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })
			inNS(hostNS, func() error { return fw.SetPorts(net2, []firewall.PortMapping{tcp(9090, "10.2.0.7", 90)}) })

			inNS(hostNS, func() error { return fw.RemoveNetwork(net1) })
			kept := saveRules(hostNS, "iptables-save")
			Expect(kept).To(ContainSubstring(":"+firewall.ChainForward+" "), "net2 still uses the shared chains")
			Expect(linesContaining(kept, "-j "+firewall.ChainForward)).To(HaveLen(1))
			inNS(hostNS, func() error { return fw.Check(net2, []firewall.PortMapping{tcp(9090, "10.2.0.7", 90)}) })

			inNS(hostNS, func() error { return fw.RemoveNetwork(net2) })
			after := saveRules(hostNS, "iptables-save")
			Expect(linesContaining(after, "CNM", "cnm")).To(BeEmpty(), "nothing of cnmnet is left")
			Expect(linesContaining(after, "other0")).To(Equal(linesContaining(before, "other0")))

			// A network made afterwards makes them again.
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.Check(net1, nil) })
		})

		It("succeeds on a namespace that never had rules, leaving it without any", func() {
			Expect(do(func() error { return fw.RemoveNetwork(net1) })).To(Equal(1))
			Expect(linesContaining(saveRules(hostNS, "iptables-save"), "-A ", ":CNM")).To(BeEmpty())
		})
	})

	Describe("SetPorts", func() {
		It("makes the DNAT chain hold exactly the last set, in one restore", func() {
			chain := firewall.NetworkChains("net1").DNAT
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })

			first := []firewall.PortMapping{tcp(8080, "10.1.0.5", 80), tcp(8443, "10.1.0.5", 443)}
			Expect(do(func() error { return fw.SetPorts(net1, first) })).To(Equal(1))
			Expect(chainRules(saveRules(hostNS, "iptables-save"), chain)).To(HaveLen(2))

			second := []firewall.PortMapping{
				tcp(8443, "10.1.0.6", 443),
				{Protocol: "udp", HostIP: net.ParseIP("127.0.0.1"), HostPort: 5353, ContainerIP: net.ParseIP("10.1.0.6"),
					ContainerPort: 53, Endpoint: "ep2"},
				{Protocol: "sctp", HostIP: net.IPv4zero, HostPort: 3868, ContainerIP: net.ParseIP("10.1.0.7"),
					ContainerPort: 3868, Endpoint: "ep3"},
			}
			Expect(do(func() error { return fw.SetPorts(net1, second) })).To(Equal(1))
			Expect(chainRules(saveRules(hostNS, "iptables-save"), chain)).To(ConsistOf(
				And(ContainSubstring("-p tcp"), ContainSubstring("--dport 8443"), ContainSubstring("--to-destination 10.1.0.6:443"),
					ContainSubstring(`"cnm:net1/ep1"`), Not(ContainSubstring("-d "))),
				And(ContainSubstring("-d 127.0.0.1/32"), ContainSubstring("-p udp"), ContainSubstring("--dport 5353"),
					ContainSubstring("--to-destination 10.1.0.6:53"), ContainSubstring(`"cnm:net1/ep2"`)),
				And(ContainSubstring("-p sctp"), ContainSubstring("--dport 3868"), Not(ContainSubstring("-d ")),
					ContainSubstring("--to-destination 10.1.0.7:3868")),
			))
			inNS(hostNS, func() error { return fw.Check(net1, second) })

			Expect(do(func() error { return fw.SetPorts(net1, nil) })).To(Equal(1))
			rules := saveRules(hostNS, "iptables-save")
			Expect(rules).To(ContainSubstring(":" + chain + " "))
			Expect(chainRules(rules, chain)).To(BeEmpty())
		})

		It("rejects invalid mappings before running anything", func() {
			for _, pm := range []firewall.PortMapping{
				{Protocol: "icmp", HostPort: 1, ContainerIP: net.ParseIP("10.1.0.5"), ContainerPort: 1},
				{Protocol: "tcp", HostPort: 0, ContainerIP: net.ParseIP("10.1.0.5"), ContainerPort: 1},
				{Protocol: "tcp", HostPort: 1, ContainerIP: net.ParseIP("10.1.0.5"), ContainerPort: 65536},
				{Protocol: "tcp", HostPort: 1, ContainerPort: 1},
				{Protocol: "tcp", HostIP: net.ParseIP("fd00::1"), HostPort: 1, ContainerIP: net.ParseIP("10.1.0.5"), ContainerPort: 1},
				{Protocol: "tcp", HostPort: 1, ContainerIP: net.ParseIP("fd00:1::5"), ContainerPort: 1},
			} {
				err := errIn(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{pm}) })
				Expect(err).To(MatchError(ContainSubstring("network net1: port mapping")), pm.String())
			}
			Expect(fw.Execs()).To(BeZero())
		})
	})

	Describe("Check", func() {
		It("passes when everything is in place and names a DNAT rule deleted by hand", func() {
			ports := []firewall.PortMapping{tcp(8080, "10.1.0.5", 80), tcp(9090, "10.1.0.5", 90)}
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.SetPorts(net1, ports) })
			Expect(do(func() error { return fw.Check(net1, ports) })).To(Equal(1))

			chain := firewall.NetworkChains("net1").DNAT
			rules := chainRules(saveRules(hostNS, "iptables-save"), chain)
			idx := -1
			for i, l := range rules {
				if strings.Contains(l, "--dport 8080 ") {
					idx = i
				}
			}
			Expect(idx).NotTo(Equal(-1))
			runIn(hostNS, "iptables", "-t", "nat", "-D", chain, strconv.Itoa(idx+1))

			err := errIn(hostNS, func() error { return fw.Check(net1, ports) })
			var cerr *firewall.CheckError
			Expect(errors.As(err, &cerr)).To(BeTrue())
			Expect(cerr.Network).To(Equal("net1"))
			Expect(cerr.Problems).To(ConsistOf("DNAT tcp 8080 -> 10.1.0.5:80 missing"))
			Expect(err).To(MatchError("network net1: DNAT tcp 8080 -> 10.1.0.5:80 missing"))

			inNS(hostNS, func() error { return fw.SetPorts(net1, ports) })
			inNS(hostNS, func() error { return fw.Check(net1, ports) })
		})

		It("names rules the network should not have and a network that is gone", func() {
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}) })
			err := errIn(hostNS, func() error { return fw.Check(net1, nil) })
			Expect(err).To(MatchError(ContainSubstring("unexpected rule: -A " + firewall.NetworkChains("net1").DNAT)))

			err = errIn(hostNS, func() error { return fw.Check(net2, nil) })
			Expect(err).To(MatchError(And(
				ContainSubstring("network net2: "),
				ContainSubstring("jump from CNM-FORWARD to "+firewall.NetworkChains("net2").Forward+" missing"),
				ContainSubstring("isolation of br2 (stage 1) missing"),
				ContainSubstring("chain "+firewall.NetworkChains("net2").Postrouting+" missing"),
			)))
		})
	})

	Describe("IPv6", func() {
		BeforeEach(func() {
			if _, err := exec.LookPath("ip6tables-restore"); err != nil {
				Skip("ip6tables-restore is not in PATH: " + err.Error())
			}
		})

		It("writes the ip6tables side of a dual-stack network", func() {
			dual := firewall.Network{Name: "dual", Bridge: "brd", IPMasq: true, Isolation: true, ICC: true,
				Subnets: []*net.IPNet{mustNet("10.3.0.0/24"), mustNet("fd00:3::/64")}}
			ports := []firewall.PortMapping{
				tcp(8080, "10.3.0.5", 80),
				tcp(8080, "fd00:3::5", 80),
				{Protocol: "udp", HostIP: net.ParseIP("fd00:ff::1"), HostPort: 53, ContainerIP: net.ParseIP("fd00:3::5"),
					ContainerPort: 5353, Endpoint: "ep1"},
			}
			Expect(do(func() error { return fw.EnsureNetwork(dual) })).To(Equal(4), "a save and a restore per family")
			Expect(do(func() error { return fw.SetPorts(dual, ports) })).To(Equal(2), "a restore per family")
			Expect(do(func() error { return fw.Check(dual, ports) })).To(Equal(2))
			Expect(do(func() error { return fw.EnsureNetwork(dual) })).To(Equal(2), "nothing to restore")

			c := firewall.NetworkChains("dual")
			v6 := saveRules(hostNS, "ip6tables-save")
			v4 := saveRules(hostNS, "iptables-save")
			Expect(linesContaining(v6, "-A FORWARD ", "-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING ")).To(HaveLen(4))
			Expect(v6).NotTo(ContainSubstring(firewall.ChainInput), "::1 is never routed from a bridge")
			Expect(chainRules(v4, firewall.ChainInput)).To(ConsistOf(ContainSubstring("-i brd ")))
			Expect(chainRules(v6, c.DNAT)).To(ConsistOf(
				ContainSubstring("--to-destination [fd00:3::5]:80"),
				And(ContainSubstring("-d fd00:ff::1/128"), ContainSubstring("--to-destination [fd00:3::5]:5353")),
			))
			Expect(chainRules(v6, c.Postrouting)).To(ConsistOf(
				ContainSubstring("-s fd00:3::/64 ! -o brd"),
				ContainSubstring("-s fd00:3::/64 -o brd -m conntrack --ctstate DNAT"),
			))
			Expect(chainRules(v6, c.Forward)).To(HaveLen(3))
			Expect(chainRules(v6, firewall.ChainIsolation2)).To(HaveLen(1))
			Expect(v6).NotTo(ContainSubstring("127.0.0.0/8"))
			Expect(chainRules(v4, c.DNAT)).To(ConsistOf(ContainSubstring("--to-destination 10.3.0.5:80")))
			Expect(v4).NotTo(ContainSubstring("fd00"))

			dual.ICC = false
			Expect(do(func() error { return fw.EnsureNetwork(dual) })).To(Equal(4), "the forward chain changes in both families")
			for _, bin := range []string{"iptables-save", "ip6tables-save"} {
				Expect(chainRules(saveRules(hostNS, bin), c.Forward)).To(ContainElement(
					And(ContainSubstring("-i brd -o brd"), HaveSuffix("-j DROP"))), bin)
			}
			Expect(do(func() error { return fw.Check(dual, ports) })).To(Equal(2))

			Expect(do(func() error { return fw.RemoveNetwork(dual) })).To(Equal(4))
			for _, rules := range []string{saveRules(hostNS, "ip6tables-save"), saveRules(hostNS, "iptables-save")} {
				Expect(linesContaining(rules, "cnm:dual", "brd", c.Forward, c.DNAT, c.Postrouting)).To(BeEmpty())
			}
		})
	})

	Describe("concurrent operations", func() {
		It("keep every network's rules in the shared chains", func() {
			// Each Firewall stands for a plugin process: the lock file
			// serialises them as it would separate processes.
			const count = 6
			nets := make([]firewall.Network, count)
			errs := make(chan error, count)
			for i := range nets {
				nets[i] = firewall.Network{Name: fmt.Sprintf("cnet%d", i), Bridge: fmt.Sprintf("cbr%d", i),
					Subnets: []*net.IPNet{mustNet(fmt.Sprintf("10.9.%d.0/24", i))}, IPMasq: true, Isolation: true}
				go func(n firewall.Network) {
					defer GinkgoRecover()
					errs <- hostNS.Do(func(ns.NetNS) error { return newFirewall().EnsureNetwork(n) })
				}(nets[i])
			}
			for range nets {
				Expect(<-errs).To(Succeed())
			}
			for _, n := range nets {
				inNS(hostNS, func() error { return fw.Check(n, nil) })
			}
		})
	})

	Describe("names", func() {
		It("rejects a bridge name that restore would read otherwise, running nothing", func() {
			for _, br := range []string{"", "br 0", `br"0`, "-br", "br+", "averyveryverylongname"} {
				bad := net1
				bad.Bridge = br
				Expect(errIn(hostNS, func() error { return fw.EnsureNetwork(bad) })).To(HaveOccurred(), br)
			}
			Expect(fw.Execs()).To(BeZero())
		})

		It("quotes comments safely whatever the names contain", func() {
			odd := net1
			odd.Name = `odd "net" \ name`
			ports := []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}
			ports[0].Endpoint = "ep\"1\n"
			inNS(hostNS, func() error { return fw.EnsureNetwork(odd) })
			inNS(hostNS, func() error { return fw.SetPorts(odd, ports) })
			inNS(hostNS, func() error { return fw.Check(odd, ports) })
			Expect(do(func() error { return fw.EnsureNetwork(odd) })).To(Equal(1))
			Expect(saveRules(hostNS, "iptables-save")).To(ContainSubstring(`"cnm:odd _net_ _ name/ep_1_"`))

			inNS(hostNS, func() error { return fw.RemoveNetwork(odd) })
			Expect(linesContaining(saveRules(hostNS, "iptables-save"), "cnm:odd", "br1")).To(BeEmpty())
		})
	})

	Describe("binaries", func() {
		// withPath sets PATH to a directory holding links to the given
		// binaries only, for the rest of the spec.
		withPath := func(bins ...string) {
			dir := GinkgoT().TempDir()
			for _, b := range bins {
				p, err := exec.LookPath(b)
				Expect(err).NotTo(HaveOccurred())
				Expect(os.Symlink(p, filepath.Join(dir, b))).To(Succeed())
			}
			DeferCleanup(os.Setenv, "PATH", os.Getenv("PATH"))
			Expect(os.Setenv("PATH", dir)).To(Succeed())
		}

		It("New names a missing iptables-restore", func() {
			withPath("iptables-save")
			_, err := firewall.New()
			Expect(err).To(MatchError(ContainSubstring("iptables-restore")))
		})

		It("New names a missing iptables-save", func() {
			withPath("iptables-restore")
			_, err := firewall.New()
			Expect(err).To(MatchError(ContainSubstring("iptables-save")))
		})

		It("needs ip6tables only for networks with IPv6 subnets", func() {
			withPath("iptables-restore", "iptables-save")
			fw4 := newFirewall()
			dual := net1
			dual.Subnets = append(dual.Subnets, mustNet("fd00:1::/64"))
			err := errIn(hostNS, func() error { return fw4.EnsureNetwork(dual) })
			Expect(err).To(MatchError(ContainSubstring("ip6tables-restore")))
			Expect(fw4.Execs()).To(BeZero())
			inNS(hostNS, func() error { return fw4.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw4.RemoveNetwork(dual) })
		})
	})
})
