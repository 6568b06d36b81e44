package firewall_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/firewall"
)

// dialTimeout is short: a dropped SYN is what isolation looks like.
const dialTimeout = time.Second

// The data path specs build, in test namespaces only:
//
//	container1 (10.55.0.2) ─ br-test  (10.55.0.1) ┐
//	                                               host ─ out0 (192.0.2.1) ── outside (192.0.2.2)
//	container2 (10.56.0.2) ─ br-test2 (10.56.0.1) ┘
//
// with forwarding on in host and its FORWARD policy DROP, as on a host
// running Docker: only the firewall's rules let traffic through.
var _ = Describe("data path", func() {
	var (
		hostNS, outsideNS, ctr1NS ns.NetNS
		fw                        *firewall.Firewall
		net1                      firewall.Network
	)

	BeforeEach(func() {
		hostNS = newTestNS()
		outsideNS = newTestNS()
		fw = newFirewall()

		vethTo(hostNS, "out0", "192.0.2.1/24", outsideNS, "192.0.2.2/24", "192.0.2.1")
		inNS(hostNS, setLoUp)
		inNS(hostNS, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		})
		runIn(hostNS, "iptables", "-P", "FORWARD", "DROP")

		ctr1NS = bridgedContainer(hostNS, "br-test", "10.55.0.1/24", "10.55.0.2/24")
		net1 = firewall.Network{Name: "net1", Bridge: "br-test", Subnets: []*net.IPNet{mustNet("10.55.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
	})

	It("masquerades a container's traffic to the outside, which the DROP policy stops without the rules", func() {
		serveWhoami(outsideNS, "192.0.2.2:9000")
		_, err := whoami(ctr1NS, "192.0.2.2:9000")
		Expect(err).To(HaveOccurred(), "the host's FORWARD policy drops it")

		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		Expect(whoami(ctr1NS, "192.0.2.2:9000")).To(Equal("192.0.2.1"))
	})

	It("publishes a port to the outside, to the containers through a host address, and on localhost", func() {
		serveWhoami(ctr1NS, "0.0.0.0:80")
		inNS(hostNS, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/br-test/route_localnet", []byte("1"), 0o644)
		})
		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		inNS(hostNS, func() error { return fw.SetPorts(net1, []firewall.PortMapping{tcp(8080, "10.55.0.2", 80)}) })

		Expect(whoami(outsideNS, "192.0.2.1:8080")).To(Equal("192.0.2.2"), "the client's address is kept")
		Expect(whoami(ctr1NS, "192.0.2.1:8080")).To(Equal("10.55.0.1"), "hairpin: the reply comes back through the host")
		Expect(whoami(hostNS, "127.0.0.1:8080")).To(Equal("10.55.0.1"), "localhost is masqueraded")

		inNS(hostNS, func() error { return fw.SetPorts(net1, nil) })
		_, err := whoami(outsideNS, "192.0.2.1:8080")
		Expect(err).To(HaveOccurred())
	})

	It("isolates two isolated networks from each other, and lets them talk once one is gone", func() {
		ctr2NS := bridgedContainer(hostNS, "br-test2", "10.56.0.1/24", "10.56.0.2/24")
		net2 := firewall.Network{Name: "net2", Bridge: "br-test2", Subnets: []*net.IPNet{mustNet("10.56.0.0/24")},
			IPMasq: true, Isolation: true, ICC: true}
		serveWhoami(ctr2NS, "0.0.0.0:80")
		serveWhoami(outsideNS, "192.0.2.2:9000")
		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })

		_, err := whoami(ctr1NS, "10.56.0.2:80")
		Expect(err).To(HaveOccurred(), "isolated")
		Expect(whoami(ctr1NS, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "the outside is still reachable")

		inNS(hostNS, func() error { return fw.RemoveNetwork(net2) })
		Expect(whoami(ctr1NS, "10.56.0.2:80")).To(Equal("10.56.0.1"), "net1 masquerades what leaves its bridge")
	})

	It("lets networks without isolation talk", func() {
		ctr2NS := bridgedContainer(hostNS, "br-test2", "10.56.0.1/24", "10.56.0.2/24")
		net2 := firewall.Network{Name: "net2", Bridge: "br-test2", Subnets: []*net.IPNet{mustNet("10.56.0.0/24")}}
		net1.IPMasq, net1.Isolation = false, false
		serveWhoami(ctr2NS, "0.0.0.0:80")
		inNS(hostNS, func() error { return fw.EnsureNetwork(net1) })
		inNS(hostNS, func() error { return fw.EnsureNetwork(net2) })
		Expect(whoami(ctr1NS, "10.56.0.2:80")).To(Equal("10.55.0.2"))
	})
})

// vethTo links hostNS to peerNS by a veth pair: name (with hostAddr) in
// hostNS, eth0 (with peerAddr and a default route via gw) in peerNS.
func vethTo(hostNS ns.NetNS, name, hostAddr string, peerNS ns.NetNS, peerAddr, gw string) netlink.Link {
	GinkgoHelper()
	var link netlink.Link
	inNS(hostNS, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0",
			PeerNamespace: netlink.NsFd(int(peerNS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		var err error
		if link, err = netlink.LinkByName(name); err != nil {
			return err
		}
		if hostAddr != "" {
			if err := addAddr(link, hostAddr); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(link)
	})
	inNS(peerNS, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := addAddr(eth0, peerAddr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		if err := setLoUp(); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)})
	})
	return link
}

// bridgedContainer creates bridge in hostNS with address gwAddr, and a
// container namespace attached to it with address ctrAddr, routed via the
// bridge.
func bridgedContainer(hostNS ns.NetNS, bridge, gwAddr, ctrAddr string) ns.NetNS {
	GinkgoHelper()
	ctrNS := newTestNS()
	var br netlink.Link
	inNS(hostNS, func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}); err != nil {
			return fmt.Errorf("bridge %s: %w", bridge, err)
		}
		var err error
		if br, err = netlink.LinkByName(bridge); err != nil {
			return err
		}
		if err := addAddr(br, gwAddr); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	gw, _, _ := strings.Cut(gwAddr, "/")
	port := vethTo(hostNS, "v"+bridge, "", ctrNS, ctrAddr, gw)
	inNS(hostNS, func() error {
		if err := netlink.LinkSetMaster(port, br); err != nil {
			return err
		}
		// A container reaching its own published port through a host
		// address gets its packet back through the port it came in by,
		// which a bridge port refuses without hairpin mode.
		return netlink.LinkSetHairpin(port, true)
	})
	return ctrNS
}

// setLoUp brings up the loopback of the calling thread's namespace: a
// new namespace has it down.
func setLoUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

func addAddr(link netlink.Link, cidr string) error {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	return netlink.AddrAdd(link, addr)
}

// serveWhoami answers each TCP connection to addr in n with the address
// the connection came from. The listener is created in n, so it stays
// there while any goroutine accepts on it.
func serveWhoami(n ns.NetNS, addr string) {
	GinkgoHelper()
	var l net.Listener
	inNS(n, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	DeferCleanup(l.Close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
}

// whoami connects from n to a serveWhoami server at addr and returns the
// address the server saw the connection come from.
func whoami(n ns.NetNS, addr string) (string, error) {
	var seen string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr, dialTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading from %s: %w", addr, err)
		}
		seen, _, err = net.SplitHostPort(strings.TrimSpace(line))
		return err
	})
	return seen, err
}
