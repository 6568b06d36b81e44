package integration_test

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/test/testns"
)

// The host state of these specs that is not cnmnet's: a bridge the
// "host" had before, with its own address, and ports someone else put on
// a bridge (a veth standing for a VM's tap, and a veth named like
// cnmnet's host veths but not marked as one). Veths, as the kernel of a
// test machine may lack the dummy and tun drivers.
const (
	hostBridge    = "hostbr0"
	hostBridgeIP  = "192.168.77.1/24"
	foreignTap    = "vmtap0"
	foreignTapEnd = "vmtap0p"
	foreignVeth   = "veth0123456789a" // cnmnet's pattern, without its mark
	foreignPeer   = "vmpeer0"
	adoptedSubnet = "10.83.0.0/24"
	adoptedGW     = "10.83.0.1/24"
)

// makeBridge makes a bridge in the world's host namespace, up, with addrs.
func (w *world) makeBridge(name string, addrs ...string) {
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return err
		}
		br, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			if addr.IP.To4() == nil {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(br, addr); err != nil {
				return fmt.Errorf("add %s: %w", a, err)
			}
		}
		return netlink.LinkSetUp(br)
	})).To(Succeed())
}

// plugForeignPorts puts the ports that are not cnmnet's on bridge.
func (w *world) plugForeignPorts(bridge string) {
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		if err := plugVeth(br, foreignTap, foreignTapEnd, ""); err != nil {
			return err
		}
		return plugVeth(br, foreignVeth, foreignPeer, "")
	})).To(Succeed())
}

// plugOrphanVeth puts on bridge a host veth of cnmnet's whose endpoint
// eid no longer exists: named and marked as the driver names and marks
// them (what a crash or a lost record leaves).
func (w *world) plugOrphanVeth(bridge, eid string) (name string) {
	name = "veth" + eid[:11]
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		return plugVeth(br, name, "orphanpeer0", "cnmnet:"+eid)
	})).To(Succeed())
	return name
}

// plugVeth makes a veth pair with its end name on br, with alias unless "".
func plugVeth(br netlink.Link, name, peer, alias string) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if alias == "" {
		return nil
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetAlias(l, alias)
}

// expectPorts asserts that the named links are still on bridge.
func (w *world) expectPorts(bridge string, ports ...string) {
	GinkgoHelper()
	br, _ := linkIn(w.hostNS, bridge)
	Expect(br).NotTo(BeNil(), "bridge %s", bridge)
	for _, p := range ports {
		l, _ := linkIn(w.hostNS, p)
		Expect(l).NotTo(BeNil(), "port %s", p)
		Expect(l.Attrs().MasterIndex).To(Equal(br.Attrs().Index), "port %s is on %s", p, bridge)
	}
}

// expectHostBridgeIntact asserts that the host's own bridge is there with
// its own address and its foreign ports, and without the addresses
// cnmnet added (gone, a list of addresses that must not be on it).
func (w *world) expectHostBridgeIntact(gone ...string) {
	GinkgoHelper()
	br, addrs := linkIn(w.hostNS, hostBridge)
	Expect(br).NotTo(BeNil(), "the host's bridge is still there")
	Expect(br.Attrs().Flags&net.FlagUp).NotTo(BeZero(), "and up")
	Expect(addrStrings(addrs)).To(ContainElement(hostBridgeIP), "with its own address")
	for _, a := range gone {
		Expect(addrStrings(addrs)).NotTo(ContainElement(a), "without the address cnmnet added")
	}
	w.expectPorts(hostBridge, foreignTap, foreignVeth)
}

// expectNoNetwork asserts that the store and the firewall have nothing
// of network name.
func (w *world) expectNoNetwork(name string) {
	GinkgoHelper()
	kv := w.dump()
	Expect(keysUnder(kv, "networks/")).To(BeEmpty())
	Expect(keysUnder(kv, "drivers/cnm-bridge/networks/")).To(BeEmpty())
	Expect(w.iptablesSave()).NotTo(ContainSubstring("cnm:" + name))
}

// takenIfName is a sandbox whose eth0 exists already, so that an ADD
// fails after the network was made, when the interface is attached.
func takenIfName() ns.NetNS {
	c := newNS()
	Expect(c.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}})
	})).To(Succeed())
	return c
}

// bridgeOf is the name of the bridge of network name, from cnmctl.
func (w *world) bridgeOf(name string) (bridge, id string, owned bool) {
	var nw struct {
		ID   string         `json:"id"`
		Host map[string]any `json:"host"`
	}
	w.cnmctlJSON(&nw, "network", "inspect", name)
	return nw.Host["bridge"].(string), nw.ID, nw.Host["bridgeOwned"] == true
}

var _ = Describe("ownership of host links", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	Describe("a bridge that existed before cnmnet", func() {
		var n network
		BeforeEach(func() {
			w.makeBridge(hostBridge, hostBridgeIP)
			w.plugForeignPorts(hostBridge)
			n = bridgeNet("adopt", adoptedSubnet)
			n.extra = map[string]any{"bridge": hostBridge}
		})

		It("survives a first ADD that fails after the network was made, which removes only the gateway it added", func() {
			_, err := w.add(n, attachment{id: "taken", netns: takenIfName()})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring("eth0"))
			w.expectHostBridgeIntact(adoptedGW)
			w.expectNoNetwork("adopt")
			Expect(w.hostLinks("veth")).To(ConsistOf(foreignVeth))

			// And the network can be made on it afterwards.
			_, err = w.add(n, attachment{id: "next", netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
		})

		It("is used by the network, and network rm removes only what cnmnet added to it", func() {
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			_, addrs := linkIn(w.hostNS, hostBridge)
			Expect(addrStrings(addrs)).To(ContainElements(hostBridgeIP, adoptedGW))
			Expect(ping(a.netns, "10.83.0.2", "10.83.0.1")).To(Succeed())
			br, _, owned := w.bridgeOf("adopt")
			Expect(br).To(Equal(hostBridge))
			Expect(owned).To(BeFalse(), "inspect says the bridge is not cnmnet's")
			Expect(w.dump()).To(HaveKeyWithValue(HavePrefix("drivers/cnm-bridge/networks/"),
				And(ContainSubstring(`"origin":"adopted"`), ContainSubstring(`"addedAddrs":["`+adoptedGW+`"]`))))

			Expect(w.del(n, a)).To(Succeed())
			_, errOut, code := w.cnmctl("network", "rm", "adopt")
			Expect(code).To(BeZero(), errOut)
			w.expectHostBridgeIntact(adoptedGW)
			w.expectNoNetwork("adopt")
			l, _ := linkIn(w.hostNS, hostBridge)
			Expect(l.Attrs().Alias).To(BeEmpty(), "cnmnet never marks a bridge it did not make")
		})

		It("keeps, after network rm, a gateway address the bridge had before", func() {
			// Dual-stack: the bridge has the IPv4 gateway already, not the IPv6 one.
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				br, err := netlink.LinkByName(hostBridge)
				if err != nil {
					return err
				}
				addr, _ := netlink.ParseAddr(adoptedGW)
				return netlink.AddrAdd(br, addr)
			})).To(Succeed())
			n.ipam = ipamRanges(adoptedSubnet, "fd83::/64")
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			_, addrs := linkIn(w.hostNS, hostBridge)
			Expect(addrStrings(addrs)).To(ContainElements(hostBridgeIP, adoptedGW, "fd83::1/64"))
			Expect(w.del(n, a)).To(Succeed())
			_, errOut, code := w.cnmctl("network", "rm", "adopt")
			Expect(code).To(BeZero(), errOut)
			w.expectHostBridgeIntact("fd83::1/64")
			_, addrs = linkIn(w.hostNS, hostBridge)
			Expect(addrStrings(addrs)).To(ContainElement(adoptedGW), "the gateway it had before stays")
		})

		It("keeps its foreign ports through check and check --repair", func() {
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			out, _, code := w.cnmctl("check")
			Expect(code).To(BeZero(), out)
			Expect(out).To(ContainSubstring("store and host agree"))
			out, _, code = w.cnmctl("check", "--repair")
			Expect(code).To(BeZero(), out)
			w.expectHostBridgeIntact()
			Expect(w.check(n, a)).To(Succeed())
		})

		It("remembers the gateway it added across a plugin killed after adopting it", func() {
			inv := invocation{command: "ADD", containerID: "killed", netns: newNS().Path(), stdin: w.stdin(n, nil)}
			Expect(w.killedRun("bridge:bridged", inv)).To(BeTrue())
			// The next ADD finds the gateway on the bridge: still cnmnet's.
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.del(n, a)).To(Succeed())
			Expect(w.del(n, attachment{id: "killed", netns: nil})).To(Succeed())
			_, errOut, code := w.cnmctl("network", "rm", "adopt")
			Expect(code).To(BeZero(), errOut)
			w.expectHostBridgeIntact(adoptedGW)
			w.expectNoNetwork("adopt")
		})
	})

	Describe("a bridge cnmnet made", func() {
		var n network
		BeforeEach(func() { n = bridgeNet("made", "10.84.0.0/24") })

		It("is marked as the network's, and deleted by network rm", func() {
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			br, id, owned := w.bridgeOf("made")
			Expect(owned).To(BeTrue())
			l, _ := linkIn(w.hostNS, br)
			Expect(l.Attrs().Alias).To(Equal("cnmnet:" + id))
			veths := w.hostLinks("veth")
			Expect(veths).To(HaveLen(1))
			v, _ := linkIn(w.hostNS, veths[0])
			Expect(v.Attrs().Alias).To(HavePrefix("cnmnet:"), "the host veth is marked too")

			_, errOut, code := w.cnmctl("network", "rm", "--force", "made")
			Expect(code).To(BeZero(), errOut)
			Expect(w.hostLinks("cnm-")).To(BeEmpty())
			Expect(w.hostLinks("veth")).To(BeEmpty())
			w.expectNoNetwork("made")
		})

		It("is deleted by the rollback of a first ADD that fails after the network was made", func() {
			taken := takenIfName()
			_, err := w.add(n, attachment{id: "taken", netns: taken})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring("eth0"))
			Expect(cniCode(err)).To(Equal(cnm.CodeInterfaceExists))
			Expect(testns.LinkNames(taken)).To(ConsistOf("lo", "eth0"), "the sandbox's own eth0 stays, and nothing is left beside it")
			l, _ := linkIn(taken, "eth0")
			Expect(l.Type()).To(Equal("bridge"), "the eth0 that was there")
			Expect(w.hostLinks("cnm-")).To(BeEmpty())
			Expect(w.hostLinks("veth")).To(BeEmpty())
			w.expectNoNetwork("made")
		})

		It("is still recognised as its own after a plugin killed once it made it", func() {
			inv := invocation{command: "ADD", containerID: "killed", netns: newNS().Path(), stdin: w.stdin(n, nil)}
			Expect(w.killedRun("bridge:bridged", inv)).To(BeTrue())
			Expect(w.hostLinks("cnm-")).To(HaveLen(1))
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			_, _, owned := w.bridgeOf("made")
			Expect(owned).To(BeTrue())
			Expect(w.del(n, a)).To(Succeed())
			Expect(w.del(n, attachment{id: "killed", netns: nil})).To(Succeed())
			_, errOut, code := w.cnmctl("network", "rm", "made")
			Expect(code).To(BeZero(), errOut)
			Expect(w.hostLinks("cnm-")).To(BeEmpty())
		})

		It("keeps ports that are not cnmnet's through check --repair, which removes an orphan veth of cnmnet's", func() {
			a := attachment{id: "c1", netns: newNS()}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			br, _, _ := w.bridgeOf("made")
			w.plugForeignPorts(br)
			orphan := w.plugOrphanVeth(br, "deadbeef0123456789abcdef01234567")

			var found []map[string]any
			out, _, code := w.cnmctl("-o", "json", "check")
			Expect(code).To(Equal(3), out)
			Expect(json.Unmarshal([]byte(out), &found)).To(Succeed())
			Expect(found).To(ConsistOf(And(HaveKeyWithValue("kind", "link"), HaveKeyWithValue("object", orphan))))

			out, _, code = w.cnmctl("check", "--repair")
			Expect(code).To(BeZero(), out)
			Expect(w.hostLinks(orphan)).To(BeEmpty())
			w.expectPorts(br, foreignTap, foreignVeth)
			Expect(w.check(n, a)).To(Succeed())
			out, _, code = w.cnmctl("check")
			Expect(code).To(BeZero(), out)
		})
	})
})

var _ = Describe("bridge names", func() {
	// Each is a name Linux or iptables-restore would refuse or read as
	// something else.
	bad := []string{
		`br'x`, `br"x`, `br#x`, `br;x`, "br x", "br\tx", "br\nx", "br\x00x", `br/x`, `br:x`, `br*x`,
		"-brx", "!brx", ".brx", "brx+", "brü", "br\xffx", "abcdefghijklmnop", "",
	}
	var entries []TableEntry
	for _, name := range bad {
		entries = append(entries, Entry(fmt.Sprintf("%q", name), name))
	}

	DescribeTable("refuses a bad one with error 7 naming bridge, in every CNI version, with nothing created",
		func(name string) {
			w := newWorld()
			for _, v := range allVersions {
				n := bridgeNet("badname", "10.85.0.0/24")
				n.version = v
				c := newNS()
				stdin := w.stdin(n, map[string]any{"bridge": name})
				_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "bad", netns: c.Path(), stdin: stdin})
				Expect(err).To(HaveOccurred(), "CNI %s", v)
				Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)), "CNI %s: %v", v, err)
				Expect(err.(*types.Error).Msg).To(HavePrefix("bridge: "), "CNI %s", v)
				Expect(testns.LinkNames(w.hostNS)).To(ConsistOf("lo"), "CNI %s", v)
				Expect(testns.LinkNames(c)).To(ConsistOf("lo"), "CNI %s", v)
				kv := w.dump()
				Expect(keysUnder(kv, "networks/")).To(BeEmpty(), "CNI %s", v)
				Expect(keysUnder(kv, "drivers/")).To(BeEmpty(), "CNI %s", v)
				Expect(keysUnder(kv, "endpoints/")).To(BeEmpty(), "CNI %s", v)
			}
			Expect(w.iptablesSave()).NotTo(ContainSubstring("CNM-"))
			out, _, code := w.cnmctl("network", "ls")
			Expect(code).To(BeZero())
			Expect(out).NotTo(ContainSubstring("badname"))
		},
		entries,
	)

	It("accepts letters, digits, '-', '_' and '.', and refuses a bad one on an existing network too", func() {
		w := newWorld()
		n := bridgeNet("goodname", "10.86.0.0/24")
		n.extra = map[string]any{"bridge": "Br_0.x-15bytes1"}
		_, err := w.add(n, attachment{id: "c1", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.hostLinks("Br_0.x-15bytes1")).To(HaveLen(1))

		before := w.dump()
		n.extra = map[string]any{"bridge": "br#x"}
		_, err = w.add(n, attachment{id: "c2", netns: newNS()})
		Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)))
		Expect(err.Error()).To(ContainSubstring("bridge"))
		Expect(w.dump()).To(Equal(before))
		Expect(w.hostLinks("br")).To(BeEmpty())
	})
})
