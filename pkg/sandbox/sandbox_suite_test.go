package sandbox_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/test/testns"
)

func TestSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "sandbox")
}

// newTestNS makes a network namespace of the spec's own.
func newTestNS() ns.NetNS { return testns.New() }

// goneNS returns the path of a network namespace that has been unmounted,
// as after a runtime tore the sandbox down; keepFile leaves the mount
// point behind as a plain file.
func goneNS(keepFile bool) string {
	GinkgoHelper()
	n, err := testutils.NewNS()
	Expect(err).NotTo(HaveOccurred())
	Expect(n.Close()).To(Succeed())
	if !keepFile {
		Expect(testutils.UnmountNS(n)).To(Succeed())
		return n.Path()
	}
	Expect(unix.Unmount(n.Path(), 0)).To(Succeed())
	DeferCleanup(os.Remove, n.Path())
	return n.Path()
}

// inNS runs f in n. f runs on another goroutine, so it reports by error
// rather than by Expect.
func inNS(n ns.NetNS, f func() error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error { return f() })).To(Succeed())
}

// makeVeth creates the veth pair name/peer in n, with peer up and given
// addresses (IPv6 without DAD), the way a driver would on the host.
func makeVeth(n ns.NetNS, name, peer string, peerAddrs ...string) {
	GinkgoHelper()
	inNS(n, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		p, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		for _, a := range peerAddrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			if addr.IP.To4() == nil {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(p, addr); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(p)
	})
}

// refOf names the sandbox at nsPath as it is now; a path that is not a
// network namespace gets a Ref without identity.
func refOf(nsPath string) sandbox.Ref {
	ref, err := sandbox.RefOf(nsPath)
	if err != nil {
		return sandbox.Ref{Path: nsPath}
	}
	return ref
}

// attachFrom calls Attach from inside hostNS, where the source link is.
func attachFrom(hostNS ns.NetNS, nsPath string, ifc sandbox.Interface) (*sandbox.Attached, error) {
	var att *sandbox.Attached
	err := hostNS.Do(func(ns.NetNS) error {
		var err error
		att, err = sandbox.Attach(refOf(nsPath), ifc)
		return err
	})
	return att, err
}

func linkNames(n ns.NetNS) []string {
	GinkgoHelper()
	var names []string
	inNS(n, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	return names
}

// linkIn returns the link called name in n, or nil.
func linkIn(n ns.NetNS, name string) netlink.Link {
	GinkgoHelper()
	var link netlink.Link
	inNS(n, func() error {
		var err error
		link, err = netlink.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return err
	})
	return link
}

func addrsIn(n ns.NetNS, name string) []netlink.Addr {
	GinkgoHelper()
	var addrs []netlink.Addr
	inNS(n, func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		addrs, err = netlink.AddrList(link, netlink.FAMILY_ALL)
		return err
	})
	return addrs
}

func addrStrings(addrs []netlink.Addr) []string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.IPNet.String())
	}
	return s
}

// routeStrings lists the main-table routes through name in n as
// "dst via gw" or "dst on link".
func routeStrings(n ns.NetNS, name string) []string {
	GinkgoHelper()
	var s []string
	inNS(n, func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
		for _, r := range routes {
			if r.Gw == nil {
				s = append(s, fmt.Sprintf("%s on link", r.Dst))
			} else {
				s = append(s, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
			}
		}
		return err
	})
	return s
}

func mustCIDR(s string) *net.IPNet {
	GinkgoHelper()
	ip, n, err := net.ParseCIDR(s)
	Expect(err).NotTo(HaveOccurred())
	n.IP = ip
	return n
}

func mustNet(s string) *net.IPNet {
	GinkgoHelper()
	_, n, err := net.ParseCIDR(s)
	Expect(err).NotTo(HaveOccurred())
	return n
}

func mustMAC(s string) net.HardwareAddr {
	GinkgoHelper()
	mac, err := net.ParseMAC(s)
	Expect(err).NotTo(HaveOccurred())
	return mac
}
