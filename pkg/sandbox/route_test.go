package sandbox_test

import (
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/test/testns"
)

var _ = Describe("AddRoute", func() {
	var hostNS, contNS ns.NetNS
	// Two interfaces in the sandbox, as two networks' endpoints: eth0
	// with the default routes, eth1 without.
	BeforeEach(func() {
		hostNS = newTestNS()
		contNS = newTestNS()
		makeVeth(hostNS, contEnd, hostEnd, "10.1.0.1/24", "fd00:1::1/64")
		makeVeth(hostNS, "cveth1", "hveth1", "10.2.0.1/24", "fd00:2::1/64")
		_, err := attachFrom(hostNS, contNS.Path(), standardIfc())
		Expect(err).NotTo(HaveOccurred())
		_, err = attachFrom(hostNS, contNS.Path(), sandbox.Interface{SrcName: "cveth1", DstName: "eth1",
			Addresses: []*net.IPNet{mustCIDR("10.2.0.5/24"), mustCIDR("fd00:2::5/64")}})
		Expect(err).NotTo(HaveOccurred())
	})
	v4Default := sandbox.Route{Dst: mustNetOf("0.0.0.0/0"), GW: net.ParseIP("10.2.0.1")}
	v6Default := sandbox.Route{GW: net.ParseIP("fd00:2::1")}

	It("refuses a default route while another interface has the family's, and changes nothing", func() {
		ref := refOf(contNS.Path())
		Expect(sandbox.AddRoute(ref, "eth1", v4Default)).To(MatchError(sandbox.ErrDefaultTaken))
		Expect(sandbox.AddRoute(ref, "eth1", v6Default)).To(MatchError(sandbox.ErrDefaultTaken))
		Expect(routeStrings(contNS, "eth1")).NotTo(ContainElement(HavePrefix("0.0.0.0/0")))
		Expect(routeStrings(contNS, "eth1")).NotTo(ContainElement(HavePrefix("::/0")))
	})

	It("adds the default routes through the interface once the other is gone, and again without error", func() {
		ref := refOf(contNS.Path())
		Expect(sandbox.Detach(ref, "eth0")).To(Succeed())
		for range 2 {
			Expect(sandbox.AddRoute(ref, "eth1", v4Default)).To(Succeed())
			Expect(sandbox.AddRoute(ref, "eth1", v6Default)).To(Succeed())
		}
		Expect(routeStrings(contNS, "eth1")).To(ContainElements("0.0.0.0/0 via 10.2.0.1", "::/0 via fd00:2::1"))
	})

	It("touches nothing in a namespace that is not the one joined", func() {
		ref := refOf(contNS.Path())
		Expect(sandbox.Detach(ref, "eth0")).To(Succeed())
		stale := ref
		stale.ID.Ino++
		Expect(sandbox.AddRoute(stale, "eth1", v4Default)).To(MatchError(sandbox.ErrReplaced))
		Expect(sandbox.AddRoute(sandbox.Ref{Path: contNS.Path()}, "eth1", v4Default)).To(MatchError(sandbox.ErrNoSandbox))
		Expect(routeStrings(contNS, "eth1")).NotTo(ContainElement(HavePrefix("0.0.0.0/0")))
	})

	It("says so when the interface or the sandbox is gone", func() {
		ref := refOf(contNS.Path())
		Expect(sandbox.AddRoute(ref, "eth9", v4Default)).To(MatchError(sandbox.ErrInterfaceNotFound))
		Expect(testns.Remove(contNS)).To(Succeed())
		Expect(sandbox.AddRoute(ref, "eth1", v4Default)).To(MatchError(sandbox.ErrNoSandbox))
	})
})

// mustNetOf is mustNet for a spec's tree-construction time.
func mustNetOf(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
