package dataplane_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/test/testns"
)

func TestDataplane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "overlay data plane")
}

const (
	idA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	idB = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	idC = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
)

// in runs f in n; f runs on a thread locked in n, so it reports by
// error rather than by Expect.
func in(n ns.NetNS, f func() error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error { return f() })).To(Succeed())
}

// inErr runs f in n and returns its error.
func inErr(n ns.NetNS, f func() error) error {
	return n.Do(func(ns.NetNS) error { return f() })
}

func cidr(s string) *net.IPNet {
	GinkgoHelper()
	ip, n, err := net.ParseCIDR(s)
	Expect(err).NotTo(HaveOccurred())
	n.IP = ip
	return n
}

func mac(s string) net.HardwareAddr {
	GinkgoHelper()
	m, err := net.ParseMAC(s)
	Expect(err).NotTo(HaveOccurred())
	return m
}

// addAddr puts an address on a link, IPv6 without DAD.
func addAddr(link netlink.Link, s string) error {
	addr, err := netlink.ParseAddr(s)
	if err != nil {
		return err
	}
	if addr.IP.To4() == nil {
		addr.Flags = unix.IFA_F_NODAD
	}
	return netlink.AddrAdd(link, addr)
}

// host is a network namespace standing for a machine: eth0 on the
// underlay with an IPv4 and an IPv6 address.
type host struct {
	ns  ns.NetNS
	ip  net.IP
	ip6 net.IP
}

// world is an underlay (a namespace with a bridge) and hosts on it.
type world struct {
	underlay ns.NetNS
	hosts    []*host
}

// newWorld makes an underlay whose links have MTU mtu and count hosts
// on it: host i (from 1) has 192.168.77.i and fd77::i.
func newWorld(count, mtu int) *world {
	GinkgoHelper()
	w := &world{underlay: testns.New()}
	in(w.underlay, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul", MTU: mtu}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	for i := 1; i <= count; i++ {
		h := &host{ns: testns.New(), ip: net.ParseIP(fmt.Sprintf("192.168.77.%d", i)),
			ip6: net.ParseIP(fmt.Sprintf("fd77::%d", i))}
		in(w.underlay, func() error {
			br, err := netlink.LinkByName("ul")
			if err != nil {
				return err
			}
			name := "h" + strconv.Itoa(i)
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, MasterIndex: br.Attrs().Index},
				PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.ns.Fd()))}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			return netlink.LinkSetUp(veth)
		})
		in(h.ns, func() error {
			eth, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMTU(eth, mtu); err != nil {
				return err
			}
			for _, a := range []string{h.ip.String() + "/24", h.ip6.String() + "/64"} {
				if err := addAddr(eth, a); err != nil {
					return err
				}
			}
			return netlink.LinkSetUp(eth)
		})
		w.hosts = append(w.hosts, h)
	}
	return w
}

// network is the overlay network id as host h configures it.
func (h *host) network(id string, vni uint32, gateways ...string) dataplane.Network {
	GinkgoHelper()
	br, vx := dataplane.Names(id)
	n := dataplane.Network{ID: id, Bridge: br, VXLAN: vx, VNI: vni, Port: dataplane.DefaultPort,
		Underlay: "eth0", LocalIP: h.ip}
	for _, g := range gateways {
		n.Gateways = append(n.Gateways, cidr(g))
	}
	return n
}

func (h *host) ensure(n dataplane.Network) {
	GinkgoHelper()
	in(h.ns, func() error { return dataplane.Ensure(n) })
}

func (h *host) setPeer(n dataplane.Network, p dataplane.Peer) {
	GinkgoHelper()
	in(h.ns, func() error { return dataplane.SetPeer(n, p) })
}

func (h *host) deletePeer(n dataplane.Network, p dataplane.Peer) {
	GinkgoHelper()
	in(h.ns, func() error { return dataplane.DeletePeer(n, p) })
}

func (h *host) peers(n dataplane.Network) []dataplane.Peer {
	GinkgoHelper()
	var peers []dataplane.Peer
	in(h.ns, func() error {
		var err error
		peers, err = dataplane.Peers(n)
		return err
	})
	return peers
}

// container is a namespace with eth0 on an overlay network's bridge of
// a host, as a plugin would make it.
type container struct {
	ns   ns.NetNS
	host *host
	mac  net.HardwareAddr
	ips  []net.IP
}

// peer is the container as the other hosts program it.
func (c *container) peer() dataplane.Peer {
	return dataplane.Peer{MAC: c.mac, IPs: c.ips, VTEP: c.host.ip}
}

// newContainer plugs a container into network n's bridge on h, with the
// bridge's MTU, the MAC and the addresses (CIDRs) given. A silent one
// sends nothing until spoken to, as a server may: IPv4 sends nothing on
// its own, and an ip6tables rule drops what IPv6 would (DAD, MLD, router
// solicitations) until speak.
func newContainer(h *host, n dataplane.Network, macStr string, silent bool, addrs ...string) *container {
	GinkgoHelper()
	c := &container{ns: testns.New(), host: h, mac: mac(macStr)}
	for _, a := range addrs {
		c.ips = append(c.ips, cidr(a).IP)
	}
	var mtu int
	in(h.ns, func() error {
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			return err
		}
		mtu = br.Attrs().MTU
		name := "c" + strings.ReplaceAll(macStr[9:], ":", "") // the MAC's last three bytes
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, MasterIndex: br.Attrs().Index},
			PeerName: "eth0", PeerHardwareAddr: c.mac, PeerNamespace: netlink.NsFd(int(c.ns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	in(c.ns, func() error {
		if silent {
			if out, err := exec.Command("ip6tables", silence...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip6tables: %w: %s", err, out)
			}
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMTU(eth, mtu); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := addAddr(eth, a); err != nil {
				return err
			}
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		return netlink.LinkSetUp(eth)
	})
	return c
}

var silence = []string{"-w", "-A", "OUTPUT", "-j", "DROP"}

// speak lets a silent container's IPv6 out.
func (c *container) speak() {
	GinkgoHelper()
	in(c.ns, func() error {
		args := append([]string{}, silence...)
		args[1] = "-D"
		if out, err := exec.Command("ip6tables", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip6tables: %w: %s", err, out)
		}
		return nil
	})
}

// ping sends one echo request of size bytes of payload (0: ping's
// default) from c to dst, DF set, and waits up to two seconds for the
// answer: generous, for a loaded machine; nothing here needs retries.
func (c *container) ping(dst net.IP, size int) error { return c.pingWait(dst, size, "2") }

// unreachable says whether an echo request from c to dst goes
// unanswered for a second.
func (c *container) unreachable(dst net.IP) bool { return c.pingWait(dst, 0, "1") != nil }

func (c *container) pingWait(dst net.IP, size int, wait string) error {
	args := []string{"-c", "1", "-W", wait, "-M", "do"}
	if size > 0 {
		args = append(args, "-s", strconv.Itoa(size))
	}
	if dst.To4() == nil {
		args = append(args, "-6")
	}
	args = append(args, dst.String())
	return c.ns.Do(func(ns.NetNS) error {
		out, err := exec.Command("ping", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %v: %w: %s", args, err, bytes.TrimSpace(out))
		}
		return nil
	})
}

// vxlanEntries lists the FDB entries of network n's VXLAN device on h
// as "mac dst", and its neighbour entries as "ip mac", as the kernel
// has them (not as Peers reads them).
func (h *host) vxlanEntries(n dataplane.Network) (fdb, neigh []string) {
	GinkgoHelper()
	in(h.ns, func() error {
		vx, err := netlink.LinkByName(n.VXLAN)
		if err != nil {
			return err
		}
		entries, err := netlink.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Flags&netlink.NTF_SELF != 0 {
				fdb = append(fdb, e.HardwareAddr.String()+" "+e.IP.String())
			}
		}
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			entries, err := netlink.NeighList(vx.Attrs().Index, fam)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if e.State&netlink.NUD_NOARP == 0 {
					neigh = append(neigh, e.IP.String()+" "+e.HardwareAddr.String())
				}
			}
		}
		return nil
	})
	return fdb, neigh
}

// bridgeEntry returns the port the bridge of n on h forwards mac to, ""
// when it has no entry for it.
func (h *host) bridgeEntry(n dataplane.Network, m net.HardwareAddr) string {
	GinkgoHelper()
	var port string
	in(h.ns, func() error {
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			return err
		}
		entries, err := netlink.NeighListExecute(netlink.Ndmsg{Family: unix.AF_BRIDGE})
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.MasterIndex == br.Attrs().Index && bytes.Equal(e.HardwareAddr, m) {
				l, err := netlink.LinkByIndex(e.LinkIndex)
				if err != nil {
					return err
				}
				port = l.Attrs().Name
			}
		}
		return nil
	})
	return port
}

// peerStrings renders peers for comparison.
func peerStrings(peers ...dataplane.Peer) []string {
	s := make([]string, len(peers))
	for i, p := range peers {
		s[i] = p.String()
	}
	return s
}
