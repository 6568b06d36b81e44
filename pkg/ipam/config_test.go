package ipam_test

import (
	"encoding/json"
	"errors"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/ipam"
)

var _ = Describe("ParseConfig", func() {
	DescribeTable("canonical ranges",
		func(ipamJSON string, want []ipam.RangeSet) {
			cfg := mustParse(ipamJSON)
			Expect(cfg.Ranges).To(Equal(want))
			Expect(cfg.Subnet).To(BeEmpty(), "shorthand moved into Ranges")
			Expect(cfg.RangeStart).To(BeEmpty())
			Expect(cfg.RangeEnd).To(BeEmpty())
			Expect(cfg.Gateway).To(BeEmpty())
		},
		Entry("shorthand with defaults",
			`{"type":"cnm","subnet":"10.0.0.0/24"}`,
			[]ipam.RangeSet{{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.254", Gateway: "10.0.0.1"}}}),
		Entry("shorthand with every field; the subnet is masked",
			`{"type":"cnm","subnet":"10.0.0.77/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.20","gateway":"10.0.0.254"}`,
			[]ipam.RangeSet{{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.10", RangeEnd: "10.0.0.20", Gateway: "10.0.0.254"}}}),
		Entry("an empty type is the built-in allocator",
			`{"subnet":"192.168.7.0/30"}`,
			[]ipam.RangeSet{{{Subnet: "192.168.7.0/30", RangeStart: "192.168.7.1", RangeEnd: "192.168.7.2", Gateway: "192.168.7.1"}}}),
		Entry("ranges, several per set",
			`{"type":"cnm","ranges":[[{"subnet":"10.1.0.0/16","rangeEnd":"10.1.0.100"},{"subnet":"10.1.0.0/16","rangeStart":"10.1.1.0"}]]}`,
			[]ipam.RangeSet{{
				{Subnet: "10.1.0.0/16", RangeStart: "10.1.0.1", RangeEnd: "10.1.0.100", Gateway: "10.1.0.1"},
				{Subnet: "10.1.0.0/16", RangeStart: "10.1.1.0", RangeEnd: "10.1.255.254", Gateway: "10.1.0.1"},
			}}),
		Entry("dual stack with an IPv6 /64: the IPv6 range ends at the subnet's last address",
			`{"type":"cnm","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"FD00:0:0:1::/64"}]]}`,
			[]ipam.RangeSet{
				{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.254", Gateway: "10.0.0.1"}},
				{{Subnet: "fd00:0:0:1::/64", RangeStart: "fd00:0:0:1::1", RangeEnd: "fd00::1:ffff:ffff:ffff:ffff", Gateway: "fd00:0:0:1::1"}},
			}),
		Entry("shorthand comes before ranges",
			`{"subnet":"10.0.0.0/24","ranges":[[{"subnet":"fd00::/120","gateway":"fd00::fe"}]]}`,
			[]ipam.RangeSet{
				{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.254", Gateway: "10.0.0.1"}},
				{{Subnet: "fd00::/120", RangeStart: "fd00::1", RangeEnd: "fd00::ff", Gateway: "fd00::fe"}},
			}),
		Entry("IPv4-mapped addresses are written as IPv4",
			`{"subnet":"10.0.0.0/24","rangeStart":"::ffff:10.0.0.9"}`,
			[]ipam.RangeSet{{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.9", RangeEnd: "10.0.0.254", Gateway: "10.0.0.1"}}}),
	)

	It("keeps routes", func() {
		cfg := mustParse(`{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.0.0.254"}]}`)
		Expect(cfg.Routes).To(HaveLen(2))
		Expect(cfg.Routes[1].GW.String()).To(Equal("10.0.0.254"))
	})

	DescribeTable("no addresses",
		func(conf string) {
			cfg, err := ipam.ParseConfig([]byte(conf))
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg).To(BeNil())
		},
		Entry("no ipam section", `{"cniVersion":"1.1.0","name":"n","type":"bridge"}`),
		Entry("null ipam section", `{"cniVersion":"1.1.0","name":"n","ipam":null}`),
		Entry("built-in without ranges", netConf(`{"type":"cnm"}`)),
		Entry("built-in with empty ranges", netConf(`{"type":"cnm","ranges":[]}`)),
	)

	It("returns only the type of a delegated section", func() {
		cfg := mustParse(`{"type":"host-local","dataDir":"/x","ranges":[[{"subnet":"not checked here"}]]}`)
		Expect(*cfg).To(Equal(ipam.Config{Type: "host-local"}))
		Expect(cfg.Delegated()).To(BeTrue())
		Expect(mustParse(`{"type":"dhcp"}`).Delegated()).To(BeTrue())
		Expect(mustParse(`{"type":"cnm","subnet":"10.0.0.0/24"}`).Delegated()).To(BeFalse())
		Expect((*ipam.Config)(nil).Delegated()).To(BeFalse())
	})

	DescribeTable("rejects, naming the field",
		func(ipamJSON string, message any) {
			_, err := ipam.ParseConfig([]byte(netConf(ipamJSON)))
			Expect(err).To(MatchError(message))
			Expect(errors.Is(err, ipam.ErrInvalidConfig)).To(BeTrue())
		},
		Entry("rangeStart outside the subnet",
			`{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.2.0/24","rangeStart":"10.0.1.5"}]]}`,
			"ipam.ranges[0][1].rangeStart: 10.0.1.5 is outside subnet 10.0.2.0/24"),
		Entry("rangeEnd outside the subnet", `{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.1"}`,
			"ipam.rangeEnd: 10.0.1.1 is outside subnet 10.0.0.0/24"),
		Entry("gateway outside the subnet", `{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.0.9.1"}]]}`,
			"ipam.ranges[0][0].gateway: 10.0.9.1 is outside subnet 10.0.0.0/24"),
		Entry("gateway is the broadcast address", `{"subnet":"10.0.0.0/24","gateway":"10.0.0.255"}`,
			"ipam.gateway: 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
		Entry("start after end", `{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.8"}`,
			"ipam.rangeEnd: 10.0.0.8 is before rangeStart 10.0.0.9"),
		Entry("missing subnet in a range", `{"ranges":[[{"rangeStart":"10.0.0.1"}]]}`,
			"ipam.ranges[0][0].subnet: missing"),
		Entry("shorthand field without subnet", `{"type":"cnm","gateway":"10.0.0.1"}`,
			"ipam.subnet: missing, but ipam.gateway is set"),
		Entry("bad subnet", `{"subnet":"10.0.0.0"}`,
			`ipam.subnet: "10.0.0.0" is not a subnet in CIDR notation`),
		Entry("bad address", `{"subnet":"10.0.0.0/24","rangeStart":"ten"}`,
			`ipam.rangeStart: "ten" is not an IP address`),
		Entry("IPv4 /31", `{"subnet":"10.0.0.0/31"}`,
			"ipam.subnet: 10.0.0.0/31 has no usable host address (the prefix is too long)"),
		Entry("IPv4 /32", `{"ranges":[[{"subnet":"10.0.0.1/32"}]]}`,
			"ipam.ranges[0][0].subnet: 10.0.0.1/32 has no usable host address (the prefix is too long)"),
		Entry("IPv6 /127", `{"subnet":"fd00::/127"}`,
			"ipam.subnet: fd00::/127 has no usable host address (the prefix is too long)"),
		Entry("IPv6 /128", `{"subnet":"fd00::1/128"}`,
			"ipam.subnet: fd00::1/128 has no usable host address (the prefix is too long)"),
		Entry("a /0", `{"subnet":"0.0.0.0/0"}`,
			"ipam.subnet: 0.0.0.0/0: a /0 subnet is not allowed"),
		Entry("mixed families in one set", `{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}`,
			"ipam.ranges[0][1].subnet: fd00::/64 is IPv6 but ipam.ranges[0][0].subnet is IPv4; a range set holds one IP family"),
		Entry("overlapping ranges in one set",
			`{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.50"},{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.50"}]]}`,
			"ipam.ranges[0][1]: range 10.0.0.50-10.0.0.254 overlaps ipam.ranges[0][0] (10.0.0.1-10.0.0.50)"),
		Entry("overlapping ranges across sets",
			`{"ranges":[[{"subnet":"10.0.0.0/16"}],[{"subnet":"10.0.1.0/24"}]]}`,
			"ipam.ranges[1][0]: range 10.0.1.1-10.0.1.254 overlaps ipam.ranges[0][0] (10.0.0.1-10.0.255.254)"),
		Entry("subnets of two sets overlap though their ranges do not",
			`{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.9","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10"}]]}`,
			"ipam.ranges[0][0].subnet: 10.0.0.0/24 overlaps ipam.subnet 10.0.0.0/24 of another range set"),
		Entry("a range of only reserved addresses", `{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.1","rangeEnd":"10.0.0.1"}`,
			"ipam: range 10.0.0.1-10.0.0.1 has no allocatable address"),
		Entry("an empty range set", `{"ranges":[[]]}`, "ipam.ranges[0]: empty range set"),
		Entry("a wrongly typed field", `{"ranges":[[{"subnet":24}]]}`,
			`ipam.ranges[0][0].subnet: want a string, got 24`),
		Entry("a route without dst", `{"subnet":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}`,
			"ipam.routes[0].dst: missing"),
		Entry("a route gateway of the other family", `{"subnet":"10.0.0.0/24","routes":[{"dst":"fd00::/8","gw":"10.0.0.1"}]}`,
			"ipam.routes[0].gw: 10.0.0.1 is not of the family of dst fd00::/8"),
		Entry("an ipam section that is no object", `"cnm"`, `ipam: want an object, got "cnm"`),

		// Mistakes an operator makes, named in the configuration's terms.
		Entry("ranges not nested: a list of ranges for a list of range sets", `{"ranges":[{"subnet":"10.1.0.0/24"}]}`,
			`ipam.ranges: want a list of range sets, each a list of ranges: [[{"subnet": "10.1.0.0/24"}]]`),
		Entry("ranges a single range", `{"ranges":{"subnet":"10.1.0.0/24"}}`,
			`ipam.ranges: want a list of range sets, each a list of ranges: [[{"subnet": "10.1.0.0/24"}]]`),
		Entry("ranges a subnet", `{"ranges":"10.1.0.0/24"}`,
			`ipam.ranges: want a list of range sets, each a list of ranges: [[{"subnet": "10.1.0.0/24"}]]`),
		Entry("a range set holding a subnet", `{"ranges":[["10.1.0.0/24"]]}`,
			`ipam.ranges[0][0]: want a range, an object such as {"subnet": "10.1.0.0/24"}, got "10.1.0.0/24"`),
		Entry("subnet misspelt in the shorthand", `{"type":"cnm","subnett":"10.1.0.0/24"}`,
			`ipam: no subnet or ranges, but unknown key "ipam.subnett" (did you mean "subnet"?)`),
		Entry("subnet misspelt in a range", `{"ranges":[[{"subnett":"10.1.0.0/24"}]]}`,
			`ipam.ranges[0][0].subnet: missing, but unknown key "ipam.ranges[0][0].subnett" (did you mean "subnet"?)`),
		Entry("a type that is not a string", `{"type":5}`, `ipam.type: want a string, got 5`),
		Entry("routes not a list", `{"subnet":"10.1.0.0/24","routes":{"dst":"0.0.0.0/0"}}`,
			`ipam.routes: want a list of routes such as [{"dst": "0.0.0.0/0"}], got {"dst":"0.0.0.0/0"}`),
		Entry("a route dst that is not a string", `{"subnet":"10.1.0.0/24","routes":[{"dst":5}]}`,
			`ipam.routes[0].dst: want a string, got 5`),
	)

	DescribeTable("lists the keys the built-in allocator does not read, with the likely one",
		func(ipamJSON string, want ...confcheck.Unknown) {
			got := ipam.UnknownKeys(json.RawMessage(ipamJSON))
			if len(want) == 0 {
				Expect(got).To(BeEmpty())
				return
			}
			Expect(got).To(Equal(want))
		},
		Entry("none", `{"type":"cnm","subnet":"10.1.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]}`),
		Entry("keys in another case are read", `{"Subnet":"10.1.0.0/24","RANGES":[[{"Subnet":"10.2.0.0/24"}]]}`),
		Entry("a delegated section's keys are its plugin's", `{"type":"host-local","subnett":"10.1.0.0/24"}`),
		Entry("at every level", `{"subnet":"10.1.0.0/24","rangeStrat":"10.1.0.5","dataDir":"/x",`+
			`"ranges":[[{"subnet":"10.2.0.0/24","rangeStrat":"10.2.0.5"}]],"routes":[{"dst":"0.0.0.0/0","gateway":"10.1.0.1"}]}`,
			confcheck.Unknown{Key: "ipam.dataDir"},
			confcheck.Unknown{Key: "ipam.rangeStrat", Suggestion: "rangeStart"},
			confcheck.Unknown{Key: "ipam.ranges[0][0].rangeStrat", Suggestion: "rangeStart"},
			confcheck.Unknown{Key: "ipam.routes[0].gateway"}),
		Entry("not an object", `"cnm"`),
	)

	It("rejects a config that is not JSON", func() {
		_, err := ipam.ParseConfig([]byte(`{`))
		Expect(err).To(MatchError(ipam.ErrInvalidConfig))
	})

	It("names the field in a ConfigError", func() {
		_, err := ipam.ParseConfig([]byte(netConf(`{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}`)))
		var ce *ipam.ConfigError
		Expect(errors.As(err, &ce)).To(BeTrue())
		Expect(ce.Field).To(Equal("ipam.rangeStart"))
	})
})
