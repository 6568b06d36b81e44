package cnm

import (
	"encoding/json"
	"net"

	"github.com/containernetworking/cni/pkg/version"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
)

var _ = Describe("what CHECK expects of the sandbox interface", func() {
	// ep is what an ADD recorded: an address, a MAC, a default route and
	// a static route, and an elected IPv6 default route.
	ep := func() *Endpoint {
		return &Endpoint{Name: "e", MAC: "02:42:0a:00:00:05", Addresses: []Address{{Address: "10.0.0.5/24", Gateway: "10.0.0.1"}},
			Sandbox: &Attachment{Key: "/run/netns/x", DstName: "eth0", Routes: []Route{
				{Dst: "0.0.0.0/0", GW: "10.0.0.1"}, {Dst: "10.9.0.0/16", GW: "10.0.0.1"}, {Dst: "::/0", GW: "fd00::1", Elected: true},
			}}}
	}
	// confWith is a CHECK's configuration with prevResult prev.
	confWith := func(prev map[string]any) *NetConf {
		GinkgoHelper()
		raw, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "n", "type": "t", "prevResult": prev})
		Expect(err).NotTo(HaveOccurred())
		conf := &NetConf{}
		Expect(json.Unmarshal(raw, conf)).To(Succeed())
		Expect(version.ParsePrevResult(&conf.NetConf)).To(Succeed())
		return conf
	}
	iface := func(mac string) []any {
		return []any{map[string]any{"name": "cnm-x"}, map[string]any{"name": "eth0", "mac": mac, "sandbox": "/run/netns/x"}}
	}
	routes := func(want expected) []string {
		var out []string
		for _, r := range want.Routes {
			out = append(out, r.String())
		}
		return out
	}

	It("is the record without prevResult", func() {
		want, err := expectedInterface(&NetConf{}, ep())
		Expect(err).NotTo(HaveOccurred())
		Expect(want.MAC.String()).To(Equal("02:42:0a:00:00:05"))
		Expect(routes(want)).To(ConsistOf("0.0.0.0/0 via 10.0.0.1", "10.9.0.0/16 via 10.0.0.1", "::/0 via fd00::1"))
	})

	It("takes the MAC, prefixes and gateways from prevResult, and leaves out the routes it dropped but the elected one", func() {
		want, err := expectedInterface(confWith(map[string]any{
			"cniVersion": "1.1.0", "interfaces": iface("02:aa:bb:cc:dd:01"),
			"ips":    []any{map[string]any{"address": "10.0.0.5/16", "interface": 1}},
			"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.0.0.254"}},
		}), ep())
		Expect(err).NotTo(HaveOccurred())
		Expect(want.MAC.String()).To(Equal("02:aa:bb:cc:dd:01"), "tuning's mac")
		Expect(want.Addresses).To(HaveLen(1))
		Expect(want.Addresses[0].String()).To(Equal("10.0.0.5/16"))
		Expect(want.unlisted).To(BeEmpty())
		Expect(routes(want)).To(ConsistOf("0.0.0.0/0 via 10.0.0.254", "::/0 via fd00::1"))
	})

	It("keeps the recorded gateway for a route prevResult lists without one", func() {
		want, err := expectedInterface(confWith(map[string]any{
			"cniVersion": "1.1.0", "interfaces": iface(""),
			"ips":    []any{map[string]any{"address": "10.0.0.5/24"}},
			"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "10.9.0.0/16", "gw": "10.0.0.1"}},
		}), ep())
		Expect(err).NotTo(HaveOccurred())
		Expect(want.MAC.String()).To(Equal("02:42:0a:00:00:05"), "no mac in prevResult: the record's")
		Expect(routes(want)).To(ConsistOf("0.0.0.0/0 via 10.0.0.1", "10.9.0.0/16 via 10.0.0.1", "::/0 via fd00::1"))
	})

	It("still expects in the sandbox an address prevResult does not list, and says so", func() {
		want, err := expectedInterface(confWith(map[string]any{"cniVersion": "1.1.0", "interfaces": iface("")}), ep())
		Expect(err).NotTo(HaveOccurred())
		Expect(want.Addresses).To(HaveLen(1))
		Expect(want.Addresses[0].String()).To(Equal("10.0.0.5/24"))
		Expect(want.unlisted).To(ConsistOf("10.0.0.5/24"))
	})

	It("refuses a prevResult without the sandbox interface, or with a MAC that is not one", func() {
		_, err := expectedInterface(confWith(map[string]any{"cniVersion": "1.1.0",
			"interfaces": []any{map[string]any{"name": "eth0"}}}), ep())
		Expect(err).To(MatchError(ContainSubstring("prevResult: interface eth0 of endpoint e is missing")))
		_, err = expectedInterface(confWith(map[string]any{"cniVersion": "1.1.0", "interfaces": iface("zz")}), ep())
		Expect(err).To(MatchError(ContainSubstring(`mac "zz"`)))
	})
})

var _ = Describe("the arguments of a delegated release", func() {
	It("drop static addresses and malformed pairs, and mark the rest to be ignored where unknown", func() {
		Expect(releaseArgs("")).To(Equal("IgnoreUnknown=1"))
		Expect(releaseArgs("IP=notanip;novalue;K8S_POD_NAME=p;CNM_ENDPOINT=../x")).
			To(Equal("IgnoreUnknown=1;K8S_POD_NAME=p;CNM_ENDPOINT=../x"))
		Expect(releaseArgs("IgnoreUnknown=true;IP=10.0.0.5")).To(Equal("IgnoreUnknown=true"))
	})

	It("name the ipam type a configuration uses", func() {
		for raw, want := range map[string]string{
			`{}`: "", `{"ipam": null}`: "", `{"ipam": {}}`: "cnm", `{"ipam": {"type": "host-local", "ranges": "x"}}`: "host-local",
		} {
			typ, known := ipamTypeOf([]byte(raw))
			Expect(known).To(BeTrue(), raw)
			Expect(typ).To(Equal(want), raw)
		}
		_, known := ipamTypeOf([]byte(`{"ipam": "host-local"}`))
		Expect(known).To(BeFalse())
	})
})

var _ = Describe("the standby default routes of a join", func() {
	It("are the routes the sandbox skipped", func() {
		_, dflt, _ := net.ParseCIDR("0.0.0.0/0")
		routes := []Route{{Dst: "10.9.0.0/16", GW: "10.0.0.1"}, {Dst: "0.0.0.0/0", GW: "10.0.0.1"}}
		skipped := []sandbox.Route{{Dst: dflt, GW: net.ParseIP("10.0.0.1")}}
		Expect(standbyRoutes(routes, skipped)).To(Equal([]Route{{Dst: "0.0.0.0/0", GW: "10.0.0.1"}}))
		Expect(withoutRoutes(routes, skipped)).To(Equal([]Route{{Dst: "10.9.0.0/16", GW: "10.0.0.1"}}))
	})
})
