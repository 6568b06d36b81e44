package cnm

import (
	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("the pools of a network with delegated IPAM", func() {
	delegated := func(addrs ...Address) *Endpoint {
		return &Endpoint{Name: "c/eth0", IPAM: "static", Addresses: addrs}
	}
	code := func(err error) uint {
		if te, ok := err.(*types.Error); ok {
			return te.Code
		}
		return 0
	}

	It("come from the first endpoint's addresses, by their prefix, with their gateways", func() {
		nw := &Network{Name: "n"}
		ep := delegated(Address{Address: "10.1.0.5/24", Gateway: "10.1.0.1"}, Address{Address: "fd01::5/64"})
		Expect(fitPools(nw, ep)).To(Succeed())
		Expect(nw.Pools).To(Equal([]Pool{{Subnet: "10.1.0.0/24", Gateway: "10.1.0.1"}, {Subnet: "fd01::/64"}}))
	})

	It("hold a later endpoint to them", func() {
		nw := &Network{Name: "n", Ready: true, Pools: []Pool{{Subnet: "10.1.0.0/24", Gateway: "10.1.0.1"}}}
		Expect(fitPools(nw, delegated(Address{Address: "10.1.0.6/24", Gateway: "10.1.0.1"}))).To(Succeed())
		Expect(fitPools(nw, delegated(Address{Address: "10.1.0.7/24"}))).To(Succeed(), "no gateway: the network's")
		for _, a := range []Address{
			{Address: "10.1.1.6/24", Gateway: "10.1.1.1"}, // another subnet
			{Address: "10.1.0.6/16", Gateway: "10.1.0.1"}, // a wider one
			{Address: "10.1.0.6/24", Gateway: "10.1.0.254"},
		} {
			err := fitPools(nw, delegated(a))
			Expect(code(err)).To(BeEquivalentTo(types.ErrInvalidNetworkConfig), "%v", a)
			Expect(err.Error()).To(ContainSubstring("network n"))
			Expect(err.Error()).To(ContainSubstring("cnmctl network rm n"))
		}
	})

	It("refuse a gateway outside its address's subnet, or the address itself", func() {
		for _, a := range []Address{{Address: "10.1.0.5/24", Gateway: "10.2.0.1"}, {Address: "10.1.0.5/24", Gateway: "10.1.0.5"}} {
			nw := &Network{Name: "n"}
			err := fitPools(nw, delegated(a))
			Expect(code(err)).To(BeEquivalentTo(types.ErrInvalidNetworkConfig), "%v", a)
			Expect(err.Error()).To(ContainSubstring("gateway"))
			Expect(nw.Pools).To(BeEmpty())
		}
	})
})

var _ = Describe("an edited ipam section of a network that exists", func() {
	stored := []byte(`{"cniVersion":"1.1.0","name":"n","type":"t","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd01::/64"}]]}}`)
	conf := func(ipam string) *NetConf {
		GinkgoHelper()
		raw := `{"cniVersion":"1.1.0","name":"n","type":"t"`
		if ipam != "" {
			raw += `,"ipam":` + ipam
		}
		c, err := LoadNetConf([]byte(raw + "}"))
		Expect(err).NotTo(HaveOccurred())
		return c
	}

	DescribeTable("keeps what the addresses stand on",
		func(ipam, refusal string) {
			err := checkAddressesKept(&Network{Name: "n", Config: stored}, conf(ipam))
			if refusal == "" {
				Expect(err).NotTo(HaveOccurred())
				return
			}
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(HavePrefix(refusal))
			Expect(err.Error()).To(HaveSuffix("remove the network first: cnmctl network rm n"))
		},
		Entry("the same ranges in another order", `{"ranges":[[{"subnet":"fd01::/64"}],[{"subnet":"10.1.0.0/24"}]]}`, ""),
		Entry("other bounds", `{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.100"}],[{"subnet":"fd01::/64"}]]}`, ""),
		Entry("routes", `{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd01::/64"}]],"routes":[{"dst":"10.9.0.0/16"}]}`, ""),
		Entry("a range set fewer", `{"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, "ipam.ranges: network n exists with subnets"),
		Entry("another gateway", `{"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.1.0.9"}],[{"subnet":"fd01::/64"}]]}`, "ipam.ranges:"),
		Entry("another type", `{"type":"host-local"}`, "ipam.type: network n exists with ipam cnm, not host-local"),
		Entry("none", ``, "ipam: network n exists with addresses"),
	)

	It("leaves a delegated plugin's keys to it", func() {
		nw := &Network{Name: "n", Config: []byte(`{"cniVersion":"1.1.0","name":"n","type":"t","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`)}
		Expect(checkAddressesKept(nw, conf(`{"type":"host-local","ranges":[[{"subnet":"10.2.0.0/24"}]]}`))).To(Succeed())
	})
})
