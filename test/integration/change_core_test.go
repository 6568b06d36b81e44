package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// inSandbox runs f in n, failing the spec on error.
func inSandbox(n ns.NetNS, f func() error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error { return f() })).To(Succeed())
}

// setMAC changes the MAC of a link in n by hand.
func setMAC(n ns.NetNS, name, mac string) {
	GinkgoHelper()
	inSandbox(n, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, hw)
	})
}

// defaultRoutes lists n's default routes as "dst via gw dev name".
func defaultRoutes(n ns.NetNS) []string {
	GinkgoHelper()
	var out []string
	inSandbox(n, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Gw == nil || r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			if ones != 0 {
				continue
			}
			dev := ""
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			dst := "0.0.0.0/0"
			if r.Gw.To4() == nil {
				dst = "::/0"
			}
			out = append(out, fmt.Sprintf("%s via %s dev %s", dst, r.Gw, dev))
		}
		return nil
	})
	return out
}

// delDefaultRoutes removes n's default routes by hand.
func delDefaultRoutes(n ns.NetNS) {
	GinkgoHelper()
	inSandbox(n, func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := netlink.RouteList(nil, fam)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if r.Gw != nil && (r.Dst == nil || r.Dst.IP.IsUnspecified()) {
					if err := netlink.RouteDel(&r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

var _ = Describe("core under change: CHECK consults prevResult", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	DescribeTable("accepts the MAC the reference tuning plugin set later in the chain, and names a MAC changed by hand",
		func(version string) {
			const tuned, byHand = "02:aa:bb:cc:dd:01", "02:aa:bb:cc:dd:99"
			raw, err := json.Marshal(map[string]any{"cniVersion": version, "name": "tuned", "plugins": []any{
				w.pluginConf(bridgeNetNoCaps("tuned", "10.80.41.0/24")),
				// tuning keeps the MAC it replaced for its DEL; in the test's temp dir.
				map[string]any{"type": "tuning", "mac": tuned, "dataDir": GinkgoT().TempDir()},
			}})
			Expect(err).NotTo(HaveOccurred())
			list, err := libcni.ConfListFromBytes(raw)
			Expect(err).NotTo(HaveOccurred())
			a := attachment{id: "tuned", netns: newNS()}
			ctx := context.Background()
			var res types.Result
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				res, err = w.cni.AddNetworkList(ctx, list, a.rt())
				return err
			})).To(Succeed())
			Expect(macOf(res)).To(Equal(tuned), "the chain's result says tuning's MAC")
			eth0, _ := linkIn(a.netns, "eth0")
			Expect(eth0.Attrs().HardwareAddr.String()).To(Equal(tuned))
			check := func() error {
				return w.hostNS.Do(func(ns.NetNS) error { return w.cni.CheckNetworkList(ctx, list, a.rt()) })
			}
			Expect(check()).To(Succeed())

			setMAC(a.netns, "eth0", byHand)
			err = check()
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring("MAC is %s, expected %s", byHand, tuned))

			Expect(w.hostNS.Do(func(ns.NetNS) error { return w.cni.DelNetworkList(ctx, list, a.rt()) })).To(Succeed())
			Expect(w.hostLinks("veth")).To(BeEmpty())
			Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
		},
		Entry("CNI 0.4.0", "0.4.0"),
		Entry("CNI 1.0.0", "1.0.0"),
		Entry("CNI 1.1.0", "1.1.0"),
	)

	It("allows the routes and prefixes prevResult shows later plugins changed, and names an address gone from both", func() {
		n := bridgeNet("prev", "10.80.42.0/24")
		a := attachment{id: "prev", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		prev, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		check := func(p *current.Result) error {
			_, err := w.exec("cnm-bridge", invocation{command: "CHECK", containerID: a.id, netns: a.netns.Path(),
				stdin: w.stdin(n, map[string]any{"prevResult": p})})
			return err
		}
		Expect(check(prev)).To(Succeed())

		// A later plugin replaced the default route (a route-override),
		// and its result says so.
		delDefaultRoutes(a.netns)
		inSandbox(a.netns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.80.42.254")})
		})
		err = check(prev)
		Expect(err).To(HaveOccurred(), "the ADD's own result still says the gateway")
		Expect(err.Error()).To(ContainSubstring("0.0.0.0/0 via 10.80.42.1 missing (has 0.0.0.0/0 via 10.80.42.254)"))
		rerouted := *prev
		rerouted.Routes = []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP("10.80.42.254")}}
		Expect(check(&rerouted)).To(Succeed())
		// ... or removed it from the sandbox and the result.
		delDefaultRoutes(a.netns)
		unrouted := *prev
		unrouted.Routes = nil
		Expect(check(&unrouted)).To(Succeed())

		// An address the result does not list but the sandbox has is fine;
		// gone from both, it is what is wrong.
		unlisted := unrouted
		unlisted.IPs = nil
		Expect(check(&unlisted)).To(Succeed())
		inSandbox(a.netns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr("10.80.42.2/24")
			return netlink.AddrDel(l, addr)
		})
		err = check(&unlisted)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("address 10.80.42.2/24 missing"))
		Expect(err.Error()).To(ContainSubstring("prevResult does not list 10.80.42.2/24 either"))
		Expect(w.del(n, a)).To(Succeed())
	})
})

var _ = Describe("core under change: the default route after the network that gave it leaves", func() {
	var (
		w   *world
		sbx ns.NetNS
	)
	BeforeEach(func() {
		w = newWorld()
		sbx = newNS()
	})
	// on is the container's attachment to a network as ifname.
	on := func(ifname string) attachment { return attachment{id: "multi", ifname: ifname, netns: sbx} }

	It("goes through the other network's gateway, which carries traffic out, and CHECK expects it", func() {
		out := w.outside()
		na, nb := bridgeNet("gwa", "10.80.51.0/24"), bridgeNet("gwb", "10.80.52.0/24")
		_, err := w.add(na, on("eth0"))
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(nb, on("eth1"))
		Expect(err).NotTo(HaveOccurred())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.51.1 dev eth0"))

		Expect(w.del(na, on("eth0"))).To(Succeed())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.52.1 dev eth1"))
		serve(out, "tcp", "192.0.2.2:9000")
		Expect(dial(sbx, "192.0.2.2:9000")).To(Equal("192.0.2.1"), "out through network gwb, masqueraded")
		Expect(w.check(nb, on("eth1"))).To(Succeed(), "with the ADD's prevResult, which has no default route")
		Expect(w.del(na, on("eth0"))).To(Succeed(), "a second DEL changes nothing")
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.52.1 dev eth1"))

		delDefaultRoutes(sbx)
		err = w.check(nb, on("eth1"))
		Expect(err).To(HaveOccurred(), "the elected route is the endpoint's now")
		Expect(err.Error()).To(ContainSubstring("route 0.0.0.0/0 via 10.80.52.1 missing"))

		Expect(w.del(nb, on("eth1"))).To(Succeed())
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "sandboxes/")).To(BeEmpty())
		Expect(testns.LinkNames(sbx)).To(ConsistOf("lo"))
	})

	It("hands on both families of a dual-stack sandbox", func() {
		na, nb := bridgeNet("gwa6", ""), bridgeNet("gwb6", "")
		na.ipam = ipamRanges("10.80.53.0/24", "fd80:53::/64")
		nb.ipam = ipamRanges("10.80.54.0/24", "fd80:54::/64")
		_, err := w.add(na, on("eth0"))
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add(nb, on("eth1"))
		Expect(err).NotTo(HaveOccurred())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.53.1 dev eth0", "::/0 via fd80:53::1 dev eth0"))

		Expect(w.del(na, on("eth0"))).To(Succeed())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.54.1 dev eth1", "::/0 via fd80:54::1 dev eth1"))
		serve(w.hostNS, "tcp6", "[fd80:54::1]:9000")
		Expect(dial(sbx, "[fd80:54::1]:9000")).To(Equal("fd80:54::2"))
		Expect(w.check(nb, on("eth1"))).To(Succeed())
	})

	It("elects as libnetwork does: a dual-stack endpoint first, then by network name", func() {
		na, nb, nz := bridgeNet("gwa", "10.80.55.0/24"), bridgeNet("gwb", "10.80.56.0/24"), bridgeNet("gwz", "")
		nz.ipam = ipamRanges("10.80.57.0/24", "fd80:57::/64")
		for _, x := range []struct {
			n      network
			ifname string
		}{{na, "eth0"}, {nb, "eth1"}, {nz, "eth2"}} {
			_, err := w.add(x.n, on(x.ifname))
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.55.1 dev eth0", "::/0 via fd80:57::1 dev eth2"))

		Expect(w.del(na, on("eth0"))).To(Succeed())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.57.1 dev eth2", "::/0 via fd80:57::1 dev eth2"),
			"gwz has gateways of both families: before gwb")
		Expect(w.del(nz, on("eth2"))).To(Succeed())
		Expect(defaultRoutes(sbx)).To(ConsistOf("0.0.0.0/0 via 10.80.56.1 dev eth1"))
		Expect(w.check(nb, on("eth1"))).To(Succeed())
	})
})

// badDelInput is input an ADD refuses and a DEL does not need.
type badDelInput struct {
	desc   string
	conf   map[string]any // keys replaced in the configuration
	args   string         // CNI_ARGS
	netns  string         // CNI_NETNS instead of the container's
	code   uint
	naming string
}

var badDelInputs = []badDelInput{
	{desc: "an ipam section that does not parse", conf: map[string]any{"ipam": map[string]any{"type": "cnm", "ranges": "10.77.0.0/24"}},
		code: types.ErrInvalidNetworkConfig, naming: "ipam"},
	{desc: "a negative reservationTTL", conf: map[string]any{"reservationTTL": "-1h"}, code: types.ErrInvalidNetworkConfig, naming: "reservationTTL"},
	{desc: "a prevResult that is not a result", conf: map[string]any{"prevResult": map[string]any{"ips": "10.77.0.9"}},
		code: types.ErrDecodingFailure, naming: "prevResult"},
	{desc: "CNI_ARGS MAC= multicast", args: "MAC=01:00:5e:00:00:01", code: types.ErrInvalidEnvironmentVariables, naming: "MAC"},
	{desc: "CNI_ARGS IP=notanip", args: "IP=notanip", code: types.ErrInvalidEnvironmentVariables, naming: "IP"},
	{desc: "CNI_ARGS CNM_ENDPOINT=../x", args: "CNM_ENDPOINT=../x", code: types.ErrInvalidEnvironmentVariables, naming: "CNM_ENDPOINT"},
	{desc: "a CNI_ARGS pair without =", args: "K8S_POD_NAME=web;garbage", code: types.ErrInvalidEnvironmentVariables, naming: "CNI_ARGS"},
	{desc: "a relative CNI_NETNS", netns: "run/netns/x", code: types.ErrInvalidEnvironmentVariables, naming: "CNI_NETNS"},
}

func badDelEntries() []TableEntry {
	var entries []TableEntry
	for _, bad := range badDelInputs {
		for _, v := range allVersions {
			entries = append(entries, Entry(fmt.Sprintf("%s, CNI %s", bad.desc, v), v, bad))
		}
	}
	return entries
}

var _ = Describe("core under change: DEL needs only what identifies the attachment", func() {
	DescribeTable("an ADD refused for its input is followed by a DEL that succeeds, and a DEL with that input releases what the store says",
		func(version string, bad badDelInput) {
			w := newWorld()
			n := vethNet(version)
			_, err := w.add(n, attachment{id: "resident", netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
			stdin := w.stdin(n, bad.conf)
			inv := func(command, id string, sbx ns.NetNS) invocation {
				path := sbx.Path()
				if bad.netns != "" {
					path = bad.netns
				}
				return invocation{command: command, containerID: id, netns: path, args: bad.args, stdin: stdin}
			}

			before := w.dump()
			_, err = w.exec("cnm-testveth", inv("ADD", "refused", newNS()))
			Expect(err).To(HaveOccurred())
			Expect(cniCode(err)).To(Equal(bad.code), err.Error())
			Expect(err.Error()).To(ContainSubstring(bad.naming))
			Expect(w.dump()).To(Equal(before))
			_, err = w.exec("cnm-testveth", inv("DEL", "refused", newNS()))
			Expect(err).NotTo(HaveOccurred())
			Expect(w.dump()).To(Equal(before), "nothing to release, nothing touched")

			victim := attachment{id: "victim", netns: newNS()}
			_, err = w.add(n, victim)
			Expect(err).NotTo(HaveOccurred())
			_, err = w.exec("cnm-testveth", inv("DEL", "victim", victim.netns))
			Expect(err).NotTo(HaveOccurred())
			after := w.dump()
			for _, prefix := range []string{"endpoints/", "attachments/", "sandboxes/", "ipam/vethnet/addr/", "releases/"} {
				Expect(keysUnder(after, prefix)).To(ConsistOf(keysUnder(before, prefix)), prefix)
			}
			Expect(testns.LinkNames(victim.netns)).To(ConsistOf("lo"))
			Expect(w.hostLinks("tv")).To(HaveLen(1), "the resident's only")
		},
		badDelEntries(),
	)

	Describe("with delegated IPAM", func() {
		var (
			w       *world
			hlDir   string
			hlFiles func(network string) []string
		)
		BeforeEach(func() {
			w = newWorld()
			hlDir = GinkgoT().TempDir()
			hlFiles = func(network string) []string {
				entries, _ := os.ReadDir(filepath.Join(hlDir, network))
				var ips []string
				for _, e := range entries {
					if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
						ips = append(ips, e.Name())
					}
				}
				return ips
			}
		})
		hostLocal := func(name, subnet string) network {
			return network{name: name, typ: "cnm-testveth", version: "1.1.0", ipam: map[string]any{
				"type": "host-local", "dataDir": hlDir, "ranges": []any{[]any{map[string]any{"subnet": subnet}}},
			}}
		}

		It("releases through the plugin whatever CNI_ARGS says, and keeps for GC what a broken ipam section keeps it from releasing", func() {
			n := hostLocal("hlnet", "10.66.0.0/24")
			a := attachment{id: "hl-args", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(hlFiles("hlnet")).To(ConsistOf("10.66.0.2"))
			_, err = w.exec("cnm-testveth", invocation{command: "DEL", containerID: a.id, netns: a.netns.Path(),
				args: "IP=notanip;MAC=01:00:5e:00:00:01;CNM_ENDPOINT=../x;garbage", stdin: w.stdin(n, nil)})
			Expect(err).NotTo(HaveOccurred())
			Expect(hlFiles("hlnet")).To(BeEmpty(), "host-local, which reads IP even on DEL, got no static address")
			Expect(keysUnder(w.dump(), "releases/")).To(BeEmpty())

			b := attachment{id: "hl-broken", netns: newNS()}
			_, err = w.add(n, b)
			Expect(err).NotTo(HaveOccurred())
			broken := w.stdin(n, map[string]any{"ipam": map[string]any{"type": "host-local", "dataDir": hlDir, "ranges": "garbage"}})
			_, err = w.exec("cnm-testveth", invocation{command: "DEL", containerID: b.id, netns: b.netns.Path(), stdin: broken})
			Expect(err).NotTo(HaveOccurred())
			kv := w.dump()
			Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
			Expect(keysUnder(kv, "releases/hlnet/")).To(HaveLen(1))
			Expect(hlFiles("hlnet")).To(HaveLen(1), "host-local refused the broken section")

			// GC retries with the network's configuration now, which
			// host-local accepts.
			_, err = w.exec("cnm-testveth", invocation{command: "GC", stdin: w.stdin(n, map[string]any{
				"cni.dev/valid-attachments": []types.GCAttachment{}})})
			Expect(err).NotTo(HaveOccurred())
			Expect(keysUnder(w.dump(), "releases/")).To(BeEmpty())
			Expect(hlFiles("hlnet")).To(BeEmpty())
		})

		It("refuses a mistyped IPAM type leaving nothing, and the DEL that follows succeeds", func() {
			n := hostLocal("typo", "10.67.0.0/24")
			n.ipam["type"] = "nosuchipam"
			a := attachment{id: "typo", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).To(HaveOccurred())
			Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)), err.Error())
			Expect(err.Error()).To(ContainSubstring("nosuchipam"))
			// The plugin never ran: nothing to release, nothing kept.
			Expect(w.dump()).To(HaveKeyWithValue("meta/schema", "1"))
			Expect(w.dump()).To(HaveLen(1))
			Expect(w.del(n, a)).To(Succeed())
			n.ipam["type"] = "host-local"
			_, err = w.add(n, a)
			Expect(err).NotTo(HaveOccurred(), "the fixed configuration serves")
			Expect(hlFiles("typo")).To(HaveLen(1))
		})

		It("records a release whose plugin went missing, reports it, and GC clears it once the plugin is there", func() {
			n := hostLocal("gone", "10.67.0.0/24")
			a := attachment{id: "gone", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(hlFiles("gone")).To(HaveLen(1))
			// The plugin is not in CNI_PATH any more when DEL comes.
			noPlugins := []string{"CNI_PATH=/nonexistent"}
			_, err = w.exec("cnm-testveth", invocation{command: "DEL", containerID: a.id, netns: a.netns.Path(), stdin: w.stdin(n, nil), env: noPlugins})
			Expect(err).NotTo(HaveOccurred(), "DEL never stops at a plugin")
			kv := w.dump()
			Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
			Expect(keysUnder(kv, "releases/gone/")).To(HaveLen(1))

			out, _, code := w.cnmctl("check")
			Expect(code).To(Equal(3))
			Expect(out).To(ContainSubstring("release"))
			Expect(out).To(ContainSubstring("host-local"))

			gc := func(env []string) error {
				_, err := w.exec("cnm-testveth", invocation{command: "GC", env: env, stdin: w.stdin(n, map[string]any{
					"cni.dev/valid-attachments": []types.GCAttachment{}})})
				return err
			}
			err = gc(noPlugins)
			Expect(err).To(HaveOccurred(), "still missing: GC says why the release is pending")
			Expect(err.Error()).To(ContainSubstring("host-local"))
			Expect(keysUnder(w.dump(), "releases/gone/")).To(HaveLen(1))
			Expect(hlFiles("gone")).To(HaveLen(1), "the plugin still holds the address")

			Expect(gc(nil)).To(Succeed())
			Expect(keysUnder(w.dump(), "releases/")).To(BeEmpty())
			Expect(hlFiles("gone")).To(BeEmpty(), "released at last")
			out, _, code = w.cnmctl("check")
			Expect(code).To(BeZero(), out)
		})
	})

	It("lets DEL, cnmctl endpoint rm --force and network rm --force remove endpoints whose IPAM plugin is missing", func() {
		w := newWorld()
		n := bridgeNet("typo-br", "")
		n.ipam = map[string]any{"type": "nosuchipam"}
		// Plugins killed after recording their endpoints: the state an
		// ADD with the mistyped type could leave before DEL went lenient.
		for _, id := range []string{"k1", "k2", "k3"} {
			Expect(w.killedRun("add:reserved", invocation{command: "ADD", containerID: id, netns: newNS().Path(), stdin: w.stdin(n, nil)})).To(BeTrue())
		}
		Expect(keysUnder(w.dump(), "endpoints/typo-br/")).To(HaveLen(3))

		Expect(w.del(n, attachment{id: "k1"})).To(Succeed())
		_, errOut, code := w.cnmctl("endpoint", "rm", "k2/eth0", "--network", "typo-br", "--force")
		Expect(code).To(BeZero(), errOut)
		_, errOut, code = w.cnmctl("network", "rm", "typo-br", "--force")
		Expect(code).To(BeZero(), errOut)
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "networks/")).To(BeEmpty())
		Expect(keysUnder(kv, "releases/typo-br/")).To(HaveLen(3))

		var found []struct{ Kind, Object string }
		out, _, code := w.cnmctl("-o", "json", "check")
		Expect(code).To(Equal(3))
		Expect(json.Unmarshal([]byte(out), &found)).To(Succeed())
		Expect(found).To(ConsistOf(
			struct{ Kind, Object string }{"release", "k1/eth0"},
			struct{ Kind, Object string }{"release", "k2/eth0"},
			struct{ Kind, Object string }{"release", "k3/eth0"},
		))
		// The network is gone and its plugin was never there: nothing could
		// release these, and gc says it drops them.
		out, errOut, code = w.cnmctl("gc")
		Expect(code).To(BeZero(), errOut)
		Expect(out).To(ContainSubstring("dropped"))
		Expect(keysUnder(w.dump(), "releases/")).To(BeEmpty())
		out, _, code = w.cnmctl("check")
		Expect(code).To(BeZero(), out)
	})
})
