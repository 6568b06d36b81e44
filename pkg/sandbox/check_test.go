package sandbox_test

import (
	"errors"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
)

var _ = Describe("Check", func() {
	var hostNS, contNS ns.NetNS
	var ifc sandbox.Interface

	BeforeEach(func() {
		hostNS = newTestNS()
		contNS = newTestNS()
		makeVeth(hostNS, contEnd, hostEnd, "10.1.0.1/24", "fd00:1::1/64")
		ifc = standardIfc()
		_, err := attachFrom(hostNS, contNS.Path(), ifc)
		Expect(err).NotTo(HaveOccurred())
	})

	It("passes after Attach", func() {
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(Succeed())
	})

	It("passes with the default route written either way, and extra state present", func() {
		ifc.Routes = []sandbox.Route{
			{GW: net.ParseIP("10.1.0.1")},
			{Dst: mustNet("::/0"), GW: net.ParseIP("fd00:1::1")},
		}
		ifc.Addresses = ifc.Addresses[:1]
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(Succeed())
	})

	It("reports a missing address", func() {
		ifc.Addresses = append(ifc.Addresses, mustCIDR("10.1.0.99/24"))
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(MatchError(
			"interface eth0 in " + contNS.Path() + ": address 10.1.0.99/24 missing"))
	})

	It("reports an address with another prefix length", func() {
		ifc.Addresses = []*net.IPNet{mustCIDR("10.1.0.5/16")}
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(MatchError(
			ContainSubstring("address 10.1.0.5/16 missing (has 10.1.0.5/24)")))
	})

	It("reports a wrong MAC", func() {
		ifc.MAC = mustMAC("02:42:0a:01:00:99")
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(MatchError(
			ContainSubstring("MAC is " + macStr + ", expected 02:42:0a:01:00:99")))
	})

	It("reports a missing route", func() {
		ifc.Routes = append(ifc.Routes, sandbox.Route{Dst: mustNet("10.200.0.0/16"), GW: net.ParseIP("10.1.0.1")})
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(MatchError(
			ContainSubstring("route 10.200.0.0/16 via 10.1.0.1 missing")))
	})

	It("reports a route through another gateway", func() {
		ifc.Routes = []sandbox.Route{{Dst: mustNet("10.2.0.0/16"), GW: net.ParseIP("10.1.0.2")}}
		Expect(sandbox.Check(refOf(contNS.Path()), ifc)).To(MatchError(
			ContainSubstring("route 10.2.0.0/16 via 10.1.0.2 missing (has 10.2.0.0/16 via 10.1.0.1)")))
	})

	It("reports a missing interface", func() {
		ifc.DstName = "eth9"
		err := sandbox.Check(refOf(contNS.Path()), ifc)
		Expect(err).To(MatchError(ContainSubstring("interface eth9 in " + contNS.Path() + ": interface not found")))
		Expect(errors.Is(err, sandbox.ErrInterfaceNotFound)).To(BeTrue())
	})

	It("reports a down interface and every other difference at once", func() {
		inNS(contNS, func() error {
			link, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.LinkSetDown(link)
		})
		ifc.MAC = mustMAC("02:42:0a:01:00:99")
		ifc.Addresses = append(ifc.Addresses, mustCIDR("fd00:1::99/64"))
		err := sandbox.Check(refOf(contNS.Path()), ifc)
		Expect(err).To(MatchError(ContainSubstring("is down")))
		Expect(err).To(MatchError(ContainSubstring("MAC is")))
		Expect(err).To(MatchError(ContainSubstring("address fd00:1::99/64 missing")))
	})

	It("fails with ErrNoSandbox for a missing netns", func() {
		err := sandbox.Check(refOf("/var/run/netns/cnmnet-no-such-sandbox"), ifc)
		Expect(errors.Is(err, sandbox.ErrNoSandbox)).To(BeTrue(), "error: %v", err)
	})
})
