package sandbox_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
)

const (
	hostEnd = "hveth0" // stays in the host netns, like a driver's bridge port
	contEnd = "cveth0" // moved into the sandbox
	macStr  = "02:42:0a:01:00:05"
)

// standardIfc is a full configuration: dual stack, a default route given
// explicitly as 0.0.0.0/0, an IPv6 default given as nil Dst, a static
// route via the gateway and a link-scope route.
func standardIfc() sandbox.Interface {
	return sandbox.Interface{
		SrcName:   contEnd,
		DstName:   "eth0",
		MAC:       mustMAC(macStr),
		Addresses: []*net.IPNet{mustCIDR("10.1.0.5/24"), mustCIDR("fd00:1::5/64")},
		Routes: []sandbox.Route{
			{Dst: mustNet("0.0.0.0/0"), GW: net.ParseIP("10.1.0.1")},
			{Dst: mustNet("10.2.0.0/16"), GW: net.ParseIP("10.1.0.1")},
			{Dst: mustNet("192.168.50.0/24")},
			{GW: net.ParseIP("fd00:1::1")},
		},
	}
}

var _ = Describe("Attach", func() {
	var hostNS, contNS ns.NetNS

	BeforeEach(func() {
		hostNS = newTestNS()
		contNS = newTestNS()
		makeVeth(hostNS, contEnd, hostEnd, "10.1.0.1/24", "fd00:1::1/64")
	})

	It("moves, names and configures the interface", func() {
		att, err := attachFrom(hostNS, contNS.Path(), standardIfc())
		Expect(err).NotTo(HaveOccurred())
		Expect(att.Name).To(Equal("eth0"))
		Expect(att.MAC.String()).To(Equal(macStr))

		link := linkIn(contNS, "eth0")
		Expect(link).NotTo(BeNil())
		Expect(link.Attrs().Index).To(Equal(att.Index))
		Expect(link.Attrs().HardwareAddr.String()).To(Equal(macStr))
		Expect(link.Attrs().Flags & net.FlagUp).NotTo(BeZero())
		Expect(linkNames(contNS)).To(ConsistOf("lo", "eth0"))
		Expect(linkIn(contNS, "lo").Attrs().Flags & net.FlagUp).NotTo(BeZero())

		addrs := addrsIn(contNS, "eth0")
		Expect(addrStrings(addrs)).To(ContainElements("10.1.0.5/24", "fd00:1::5/64"))
		for _, a := range addrs {
			if a.IP.IsGlobalUnicast() { // the kernel's link-local address does DAD
				Expect(a.Flags&unix.IFA_F_TENTATIVE).To(BeZero(), "address %s is tentative", a.IPNet)
			}
		}
		Expect(routeStrings(contNS, "eth0")).To(ContainElements(
			"0.0.0.0/0 via 10.1.0.1",
			"10.2.0.0/16 via 10.1.0.1",
			"192.168.50.0/24 on link",
			"::/0 via fd00:1::1",
		))

		Expect(linkIn(hostNS, contEnd)).To(BeNil())
		Expect(linkIn(hostNS, hostEnd)).NotTo(BeNil())
	})

	It("gives a working data path over IPv4 and IPv6 at once", func() {
		_, err := attachFrom(hostNS, contNS.Path(), standardIfc())
		Expect(err).NotTo(HaveOccurred())
		for _, addr := range []string{"10.1.0.5", "fd00:1::5"} {
			var ln net.Listener
			// The socket belongs to the netns it was created in.
			inNS(contNS, func() error {
				var err error
				ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
				return err
			})
			DeferCleanup(ln.Close)
			go func() {
				if c, err := ln.Accept(); err == nil {
					_ = c.Close()
				}
			}()
			inNS(hostNS, func() error {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
				if err != nil {
					return err
				}
				return c.Close()
			})
		}
	})

	It("keeps the link's name when SrcName and DstName agree", func() {
		ifc := sandbox.Interface{SrcName: contEnd, DstName: contEnd}
		att, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).NotTo(HaveOccurred())
		Expect(att.Name).To(Equal(contEnd))
		Expect(linkNames(contNS)).To(ConsistOf("lo", contEnd))
	})

	It("accepts a link-scope route that duplicates the kernel's prefix route", func() {
		ifc := standardIfc()
		ifc.Routes = []sandbox.Route{{Dst: mustNet("10.1.0.0/24")}}
		_, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).NotTo(HaveOccurred())
	})

	It("fails with ErrInterfaceExists and leaves the existing interface alone", func() {
		makeVeth(contNS, "eth0", "eth0peer", "10.9.9.1/24")
		inNS(contNS, func() error {
			link, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr("10.9.9.9/24")
			return netlink.AddrAdd(link, addr)
		})

		_, err := attachFrom(hostNS, contNS.Path(), standardIfc())
		Expect(errors.Is(err, sandbox.ErrInterfaceExists)).To(BeTrue(), "error: %v", err)
		Expect(err.Error()).To(ContainSubstring("rename cveth0 to eth0"))

		existing := linkIn(contNS, "eth0")
		Expect(existing).NotTo(BeNil())
		Expect(existing.Type()).To(Equal("veth"))
		Expect(addrStrings(addrsIn(contNS, "eth0"))).To(ContainElement("10.9.9.9/24"))
		Expect(linkNames(contNS)).To(ConsistOf("lo", "eth0", "eth0peer"))
		// Deleting the moved end took its peer with it.
		Expect(linkNames(hostNS)).To(ConsistOf("lo"))
	})

	It("fails with ErrInterfaceExists before moving when SrcName is DstName", func() {
		makeVeth(contNS, contEnd, "otherpeer")
		_, err := attachFrom(hostNS, contNS.Path(), sandbox.Interface{SrcName: contEnd, DstName: contEnd})
		Expect(errors.Is(err, sandbox.ErrInterfaceExists)).To(BeTrue(), "error: %v", err)
		Expect(linkNames(contNS)).To(ConsistOf("lo", contEnd, "otherpeer"))
		Expect(linkIn(hostNS, contEnd)).NotTo(BeNil())
	})

	It("removes everything when a gateway is unreachable", func() {
		ifc := standardIfc()
		ifc.Routes = append(ifc.Routes, sandbox.Route{Dst: mustNet("10.3.0.0/16"), GW: net.ParseIP("192.168.77.1")})
		_, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).To(MatchError(ContainSubstring("add route 10.3.0.0/16 via 192.168.77.1 to eth0 in " + contNS.Path())))
		Expect(linkNames(contNS)).To(ConsistOf("lo"))
		Expect(linkNames(hostNS)).To(ConsistOf("lo"))
	})

	It("fails with ErrNoSandbox and leaves the link in place when the netns is missing", func() {
		_, err := attachFrom(hostNS, "/var/run/netns/cnmnet-no-such-sandbox", standardIfc())
		Expect(errors.Is(err, sandbox.ErrNoSandbox)).To(BeTrue(), "error: %v", err)
		Expect(linkIn(hostNS, contEnd)).NotTo(BeNil())
	})

	It("rejects an invalid interface name without moving anything", func() {
		ifc := standardIfc()
		ifc.DstName = "much-too-long-name0"
		_, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).To(MatchError(ContainSubstring("longer than 15 bytes")))
		Expect(linkIn(hostNS, contEnd)).NotTo(BeNil())
		Expect(linkNames(contNS)).To(ConsistOf("lo"))
	})

	It("fails when the source link does not exist", func() {
		ifc := standardIfc()
		ifc.SrcName = "nosuchlink"
		_, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).To(MatchError(ContainSubstring("find nosuchlink in the current netns")))
	})
})

var _ = Describe("Detach", func() {
	var hostNS, contNS ns.NetNS

	BeforeEach(func() {
		hostNS = newTestNS()
		contNS = newTestNS()
		makeVeth(hostNS, contEnd, hostEnd)
		_, err := attachFrom(hostNS, contNS.Path(), sandbox.Interface{SrcName: contEnd, DstName: "eth0"})
		Expect(err).NotTo(HaveOccurred())
	})

	It("deletes the interface and its veth peer, and is idempotent", func() {
		Expect(sandbox.Detach(refOf(contNS.Path()), "eth0")).To(Succeed())
		Expect(linkNames(contNS)).To(ConsistOf("lo"))
		Expect(linkNames(hostNS)).To(ConsistOf("lo"))
		Expect(sandbox.Detach(refOf(contNS.Path()), "eth0")).To(Succeed())
	})

	It("succeeds with no netns path", func() {
		Expect(sandbox.Detach(refOf(""), "eth0")).To(Succeed())
	})

	It("succeeds when the netns was unmounted and removed", func() {
		Expect(sandbox.Detach(refOf(goneNS(false)), "eth0")).To(Succeed())
	})

	It("succeeds when the netns was unmounted and its file left behind", func() {
		Expect(sandbox.Detach(refOf(goneNS(true)), "eth0")).To(Succeed())
	})
})

var _ = Describe("LoopbackUp", func() {
	It("brings lo up", func() {
		sbx := newTestNS()
		Expect(linkIn(sbx, "lo").Attrs().Flags & net.FlagUp).To(BeZero())
		Expect(sandbox.LoopbackUp(refOf(sbx.Path()))).To(Succeed())
		Expect(linkIn(sbx, "lo").Attrs().Flags & net.FlagUp).NotTo(BeZero())
	})

	It("fails with ErrNoSandbox for a missing netns", func() {
		err := sandbox.LoopbackUp(refOf("/var/run/netns/cnmnet-no-such-sandbox"))
		Expect(errors.Is(err, sandbox.ErrNoSandbox)).To(BeTrue(), "error: %v", err)
	})
})

var _ = Describe("Exists", func() {
	It("is true for a network namespace", func() {
		Expect(sandbox.Exists(newTestNS().Path())).To(BeTrue())
		Expect(sandbox.Exists("/proc/self/ns/net")).To(BeTrue())
	})

	It("is false for anything else", func() {
		file := filepath.Join(GinkgoT().TempDir(), "plain")
		Expect(os.WriteFile(file, nil, 0o600)).To(Succeed())

		Expect(sandbox.Exists("")).To(BeFalse())
		Expect(sandbox.Exists("/var/run/netns/cnmnet-no-such-sandbox")).To(BeFalse())
		Expect(sandbox.Exists(file)).To(BeFalse())
		Expect(sandbox.Exists(goneNS(false))).To(BeFalse())
		Expect(sandbox.Exists(goneNS(true))).To(BeFalse())
		Expect(sandbox.Exists("/proc/self/status")).To(BeFalse())
		Expect(sandbox.Exists("/proc/self/ns/mnt")).To(BeFalse())
	})
})
