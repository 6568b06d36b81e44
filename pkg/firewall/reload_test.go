package firewall_test

import (
	"errors"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/firewall"

	"github.com/cnmnet/cnmnet/test/testudp"
)

// A firewall reload, as firewalld, "iptables -F" or another tool's
// iptables-restore does it, in a test namespace.
var reloads = []TableEntry{
	Entry("the jumps from built-in chains flushed", [][]string{
		{"iptables", "-F", "FORWARD"}, {"iptables", "-F", "INPUT"},
		{"iptables", "-t", "nat", "-F", "PREROUTING"}, {"iptables", "-t", "nat", "-F", "OUTPUT"},
		{"iptables", "-t", "nat", "-F", "POSTROUTING"},
	}),
	Entry("every chain flushed", [][]string{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}}),
	Entry("every chain deleted", [][]string{{"sh", "-c", "printf '*filter\\nCOMMIT\\n*nat\\nCOMMIT\\n' | iptables-restore"}}),
}

var _ = Describe("after a firewall reload", func() {
	var (
		hostNS ns.NetNS
		fw     *firewall.Firewall
		net1   firewall.Network
		ports  []firewall.PortMapping
	)
	BeforeEach(func() {
		hostNS = newTestNS()
		fw = newFirewall()
		net1 = firewall.Network{Name: "net1", Bridge: "br1", Subnets: []*net.IPNet{mustNet("10.1.0.0/24")},
			IPMasq: true, Isolation: true, ICC: false}
		ports = []firewall.PortMapping{tcp(8080, "10.1.0.5", 80)}
		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		inNS(hostNS, func() error { return fw.SetPorts(net1, ports) })
	})
	do := func(op func() error) int {
		GinkgoHelper()
		before := fw.Execs()
		inNS(hostNS, op)
		return fw.Execs() - before
	}
	reload := func(cmds [][]string) {
		GinkgoHelper()
		for _, c := range cmds {
			runIn(hostNS, c[0], c[1:]...)
		}
	}

	DescribeTable("SetPorts puts everything back, reading the rules only then",
		func(cmds [][]string) {
			want := saveRules(hostNS, "iptables-save")
			Expect(do(func() error { return fw.SetPorts(net1, ports) })).To(Equal(1), "everything in place: one restore")
			reload(cmds)
			Expect(errIn(hostNS, func() error { return fw.Check(net1, ports) })).To(HaveOccurred())

			Expect(do(func() error { return fw.SetPorts(net1, ports) })).To(Equal(3),
				"a restore that fails changing nothing, a save and a restore")
			inNS(hostNS, func() error { return fw.Check(net1, ports) })
			Expect(saveRules(hostNS, "iptables-save")).To(Equal(want))
			Expect(do(func() error { return fw.SetPorts(net1, ports) })).To(Equal(1))
		},
		reloads,
	)

	DescribeTable("CheckMissing names the missing jumps, chains and rules",
		func(cmds [][]string) {
			inNS(hostNS, func() error { return fw.CheckMissing(net1, ports) })
			reload(cmds)
			err := errIn(hostNS, func() error { return fw.CheckMissing(net1, ports) })
			var cerr *firewall.CheckError
			Expect(errors.As(err, &cerr)).To(BeTrue(), "%v", err)
			Expect(cerr.Problems).To(ContainElements(
				"jump from filter FORWARD to CNM-FORWARD missing",
				"jump from filter INPUT to CNM-INPUT missing",
				"jump from nat PREROUTING to CNM-DNAT missing",
				"jump from nat OUTPUT to CNM-DNAT missing",
				"jump from nat POSTROUTING to CNM-POSTROUTING missing",
			))
			inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
			inNS(hostNS, func() error { return fw.SetPorts(net1, ports) })
			inNS(hostNS, func() error { return fw.CheckMissing(net1, ports) })
		},
		reloads,
	)

	It("CheckMissing leaves out rules that should not be there, which Check names", func() {
		inNS(hostNS, func() error { return fw.SetPorts(net1, append(ports, tcp(9090, "10.1.0.6", 90))) })
		Expect(errIn(hostNS, func() error { return fw.Check(net1, ports) })).To(MatchError(ContainSubstring("unexpected rule")))
		inNS(hostNS, func() error { return fw.CheckMissing(net1, ports) })
	})

	It("SetPorts puts back the rules a network made by an earlier version lacks", func() {
		c := firewall.NetworkChains("net1")
		// Before CNM-INPUT and the ICC drop existed.
		runIn(hostNS, "iptables", "-D", "INPUT", "1")
		runIn(hostNS, "iptables", "-F", firewall.ChainInput)
		runIn(hostNS, "iptables", "-X", firewall.ChainInput)
		runIn(hostNS, "iptables", "-D", c.Forward, "3")
		Expect(errIn(hostNS, func() error { return fw.CheckMissing(net1, ports) })).To(MatchError(And(
			ContainSubstring("jump from filter INPUT to CNM-INPUT missing"),
			ContainSubstring("drop of traffic from br1 to 127.0.0.0/8 missing"),
			ContainSubstring("drop of traffic between the endpoints of br1 (enableICC false) missing"))))

		Expect(do(func() error { return fw.SetPorts(net1, ports) })).To(Equal(3))
		inNS(hostNS, func() error { return fw.Check(net1, ports) })
	})

	It("SetPorts leaves another network's rules as they are", func() {
		net2 := firewall.Network{Name: "net2", Bridge: "br2", Subnets: []*net.IPNet{mustNet("10.2.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
		inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })
		runIn(hostNS, "iptables", "-F", "FORWARD")
		inNS(hostNS, func() error { return fw.SetPorts(net1, ports) })
		inNS(hostNS, func() error { return fw.Check(net1, ports) })
		inNS(hostNS, func() error { return fw.Check(net2, nil) })
	})
})

var _ = Describe("ForgetFlows", func() {
	var (
		hostNS, outsideNS, ctrNS ns.NetNS
		fw                       *firewall.Firewall
		net1                     firewall.Network
		udp5353                  firewall.PortMapping
	)
	BeforeEach(func() {
		hostNS = newTestNS()
		outsideNS = newTestNS()
		fw = newFirewall()
		vethTo(hostNS, "out0", "192.0.2.1/24", outsideNS, "192.0.2.2/24", "192.0.2.1")
		inNS(hostNS, setLoUp)
		inNS(hostNS, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
		ctrNS = bridgedContainer(hostNS, "br-test", "10.55.0.1/24", "10.55.0.2/24")
		net1 = firewall.Network{Name: "net1", Bridge: "br-test", Subnets: []*net.IPNet{mustNet("10.55.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
		udp5353 = firewall.PortMapping{Protocol: "udp", HostPort: 5353, ContainerIP: net.ParseIP("10.55.0.2"),
			ContainerPort: 53, Endpoint: "ep1"}
		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		testudp.Echo(ctrNS, "0.0.0.0:53")
	})

	It("lets a UDP flow that started before the port was published reach the container", func() {
		client := testudp.NewFlow(outsideNS, "192.0.2.2:40053", "192.0.2.1:5353")
		other := testudp.NewFlow(outsideNS, "192.0.2.2:40054", "192.0.2.1:5354")
		for range 3 {
			_, err := client.Ask()
			Expect(err).To(HaveOccurred(), "nothing is published yet")
			_, _ = other.Ask()
		}
		// A flow the host forwards elsewhere to the same port stays.
		testudp.Echo(outsideNS, "192.0.2.2:5353")
		forwarded := testudp.NewFlow(ctrNS, "10.55.0.2:40055", "192.0.2.2:5353")
		Expect(forwarded.Ask()).To(Equal("echo"))

		inNS(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{udp5353}) })
		Consistently(client.Answer, 1500*time.Millisecond, 300*time.Millisecond).ShouldNot(Equal("echo"),
			"the flow's conntrack entry has no DNAT, and the client keeps it alive")

		before := fw.Execs()
		inNS(hostNS, func() error { return fw.ForgetFlows([]firewall.PortMapping{udp5353, tcp(5353, "10.55.0.2", 53)}) })
		Expect(fw.Execs()).To(Equal(before), "netlink only")
		Expect(client.Ask()).To(Equal("echo"))

		flows := udpFlowsTo(hostNS)
		Expect(flows).To(ContainElement("192.0.2.1:5354"), "another port's flow is kept")
		Expect(flows).To(ContainElement("192.0.2.2:5353"), "a forwarded flow to the same port elsewhere is kept")
	})

	It("forgets flows to the mapping's host address only, when it has one", func() {
		udp5353.HostIP = net.ParseIP("127.0.0.1")
		client := testudp.NewFlow(outsideNS, "192.0.2.2:40053", "192.0.2.1:5353")
		_, _ = client.Ask()
		inNS(hostNS, func() error { return fw.ForgetFlows([]firewall.PortMapping{udp5353}) })
		Expect(udpFlowsTo(hostNS)).To(ContainElement("192.0.2.1:5353"))
	})
})

// udpFlowsTo lists the original destinations of the UDP conntrack
// entries of n ("192.0.2.1:5353").
func udpFlowsTo(n ns.NetNS) []string {
	GinkgoHelper()
	var out []string
	inNS(n, func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_UDP {
				out = append(out, net.JoinHostPort(f.Forward.DstIP.String(), strconv.Itoa(int(f.Forward.DstPort))))
			}
		}
		return err
	})
	return out
}
