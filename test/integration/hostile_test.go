package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	gomegatypes "github.com/onsi/gomega/types"

	"github.com/cnmnet/cnmnet/test/testns"
)

// hostileTried counts the hostile inputs the plugins were exec'd with.
var hostileTried int

// hostileString is a value no name may take.
type hostileString struct {
	desc, val string
	// viaEnv: the value can reach a plugin through its environment. A NUL
	// cannot: execve ends the string there (and os/exec refuses it), so
	// it is tried only where JSON carries it.
	viaEnv bool
}

var hostileStrings = []hostileString{
	{"../", "../evil", true},
	{"a NUL byte", "a\x00b", false},
	{"a newline", "a\nb", true},
	{"10 KB", strings.Repeat("a", 10<<10), true},
	{"non-ASCII letters", "réseau", true},
	{"CJK", "网络", true},
	{"a leading -", "-evil", true},
}

// hostileCase is one exec of a plugin with one bad input.
type hostileCase struct {
	plugin string
	inv    func(h *hostileWorld) invocation
	code   uint
	// names: the message must contain one of them (case-insensitive):
	// the field, as the plugin or the CNI library (skel) names it.
	names []string
}

// hostileWorld is a world with a resident endpoint on a cnm-bridge and
// on a cnm-null network, and a sandbox for the refused ADDs.
type hostileWorld struct {
	*world
	bridge, null network
	sandbox      ns.NetNS
}

func newHostileWorld() *hostileWorld {
	h := &hostileWorld{world: newWorld(), bridge: bridgeNet("resident", "10.80.99.0/24"), null: nullNet("1.1.0")}
	for _, n := range []network{h.bridge, h.null} {
		_, err := h.add(n, attachment{id: "resident", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
	}
	h.sandbox = newNS()
	return h
}

// resident is the network of plugin that holds the resident endpoint.
func (h *hostileWorld) resident(plugin string) network {
	if plugin == "cnm-null" {
		return h.null
	}
	return h.bridge
}

// conf is the stdin of an ADD on the resident network of plugin, with
// mutate applied to the configuration object.
func (h *hostileWorld) conf(plugin string, mutate func(map[string]any)) []byte {
	var m map[string]any
	Expect(json.Unmarshal(h.stdin(h.resident(plugin), nil), &m)).To(Succeed())
	mutate(m)
	raw, err := json.Marshal(m)
	Expect(err).NotTo(HaveOccurred())
	return raw
}

// execCapturing execs plugin and returns what it printed on stderr too.
func (h *hostileWorld) execCapturing(plugin string, inv invocation) ([]byte, string, error) {
	var stderr bytes.Buffer
	GinkgoWriter.TeeTo(&stderr)
	defer GinkgoWriter.ClearTeeWriters()
	out, err := h.exec(plugin, inv)
	return out, stderr.String(), err
}

// refuse execs a hostile case and checks that the plugin answered with a
// CNI error of the case's code naming the field, did not panic, and left
// the store, the host's links and (for cnm-bridge) its firewall as they
// were.
func (h *hostileWorld) refuse(c hostileCase) {
	GinkgoHelper()
	inv := c.inv(h)
	if inv.command == "" {
		inv.command = "ADD"
	}
	if inv.command == "ADD" && inv.netns == "" {
		inv.netns = h.sandbox.Path()
	}
	store, links := h.dump(), h.hostLinks("")
	var rules string
	if c.plugin == "cnm-bridge" {
		rules = stripCounters(h.iptablesSave())
	}

	hostileTried++
	_, stderr, err := h.execCapturing(c.plugin, inv)

	Expect(err).To(HaveOccurred(), "%s %s accepted it", c.plugin, inv.command)
	Expect(cniCode(err)).To(Equal(c.code), "%v", err)
	msg := strings.ToLower(err.Error())
	Expect(msg).To(Or(hostileMentions(c.names)...), "the message does not name the field")
	Expect(stderr).NotTo(ContainSubstring("panic"))
	Expect(stderr).NotTo(ContainSubstring("goroutine"))
	Expect(h.dump()).To(Equal(store), "the store changed")
	Expect(h.hostLinks("")).To(Equal(links), "links appeared or went in the host namespace")
	if c.plugin == "cnm-bridge" {
		Expect(stripCounters(h.iptablesSave())).To(Equal(rules), "the firewall changed")
	}
	Expect(testns.LinkNames(h.sandbox)).To(ConsistOf("lo"))
}

func hostileMentions(names []string) []gomegatypes.GomegaMatcher {
	var ms []gomegatypes.GomegaMatcher
	for _, n := range names {
		ms = append(ms, ContainSubstring(strings.ToLower(n)))
	}
	return ms
}

// hostileNameCases are the hostile names, container IDs, interface names and
// endpoint names, for both plugins and (where they apply) ADD and DEL.
func hostileNameCases() []TableEntry {
	var entries []TableEntry
	add := func(desc string, c hostileCase) {
		entries = append(entries, Entry(c.plugin+": "+desc, c))
	}
	for _, plugin := range []string{"cnm-bridge", "cnm-null"} {
		for _, s := range hostileStrings {
			for _, cmd := range []string{"ADD", "DEL"} {
				add(fmt.Sprintf("%s network name with %s", cmd, s.desc), hostileCase{plugin: plugin,
					inv: func(h *hostileWorld) invocation {
						return invocation{command: cmd, containerID: "bad",
							stdin: h.conf(plugin, func(m map[string]any) { m["name"] = s.val })}
					},
					code: types.ErrInvalidNetworkConfig, names: []string{"network name", "name: "}})
				if !s.viaEnv {
					continue
				}
				add(fmt.Sprintf("%s CNI_CONTAINERID with %s", cmd, s.desc), hostileCase{plugin: plugin,
					inv: func(h *hostileWorld) invocation {
						return invocation{command: cmd, containerID: s.val, stdin: h.stdin(h.resident(plugin), nil)}
					},
					code: types.ErrInvalidEnvironmentVariables, names: []string{"containerID", "CNI_CONTAINERID"}})
				// A leading "-" is a valid Linux interface name; see the
				// interface-name spec below.
				if s.val != "-evil" {
					add(fmt.Sprintf("%s CNI_IFNAME with %s", cmd, s.desc), hostileCase{plugin: plugin,
						inv: func(h *hostileWorld) invocation {
							return invocation{command: cmd, containerID: "bad", ifname: s.val, stdin: h.stdin(h.resident(plugin), nil)}
						},
						code: types.ErrInvalidEnvironmentVariables, names: []string{"interface name", "CNI_IFNAME"}})
				}
				// DEL reads no CNI_ARGS: it succeeds (change_core_test.go).
				if cmd == "ADD" {
					add(fmt.Sprintf("%s CNM_ENDPOINT with %s", cmd, s.desc), hostileCase{plugin: plugin,
						inv: func(h *hostileWorld) invocation {
							return invocation{command: cmd, containerID: "bad", args: "IgnoreUnknown=1;CNM_ENDPOINT=" + s.val,
								stdin: h.stdin(h.resident(plugin), nil)}
						},
						code: types.ErrInvalidEnvironmentVariables, names: []string{"CNM_ENDPOINT"}})
				}
			}
			// Only ADD resolves the endpoint a request names.
			add("runtimeConfig.endpoint with "+s.desc, hostileCase{plugin: plugin,
				inv: func(h *hostileWorld) invocation {
					return invocation{containerID: "bad", stdin: h.conf(plugin, func(m map[string]any) {
						m["runtimeConfig"] = map[string]any{"endpoint": s.val}
					})}
				},
				code: types.ErrInvalidNetworkConfig, names: []string{"runtimeConfig.endpoint"}})
			add("args.cnm.endpoint with "+s.desc, hostileCase{plugin: plugin,
				inv: func(h *hostileWorld) invocation {
					return invocation{containerID: "bad", stdin: h.conf(plugin, func(m map[string]any) {
						m["args"] = map[string]any{"cnm": map[string]any{"endpoint": s.val}}
					})}
				},
				code: types.ErrInvalidNetworkConfig, names: []string{"args.cnm.endpoint"}})
			if !s.viaEnv {
				continue
			}
			for _, key := range []string{"K8S_POD_NAMESPACE", "K8S_POD_NAME"} {
				add(fmt.Sprintf("%s with %s (endpointIdentity pod)", key, s.desc), hostileCase{plugin: plugin,
					inv: func(h *hostileWorld) invocation {
						pod := map[string]string{"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}
						pod[key] = s.val
						return invocation{containerID: "bad",
							args:  "K8S_POD_NAMESPACE=" + pod["K8S_POD_NAMESPACE"] + ";K8S_POD_NAME=" + pod["K8S_POD_NAME"],
							stdin: h.conf(plugin, func(m map[string]any) { m["endpointIdentity"] = "pod" })}
					},
					code: types.ErrInvalidEnvironmentVariables, names: []string{key}})
			}
		}
	}
	return entries
}

// hostileBridgeCase is a cnm-bridge ADD on the resident network (or, with
// netName set, on a new network) whose configuration mutate changes.
func hostileBridgeCase(netName string, mutate func(m map[string]any), code uint, names ...string) hostileCase {
	return hostileCase{plugin: "cnm-bridge", code: code, names: names,
		inv: func(h *hostileWorld) invocation {
			return invocation{containerID: "bad", stdin: h.conf("cnm-bridge", func(m map[string]any) {
				if netName != "" {
					m["name"] = netName
					m["ipam"] = ipamRanges("10.80.1.0/24")
				}
				mutate(m)
			})}
		}}
}

// hostileMapping is a portMappings entry whose values are JSON text as given.
func hostileMapping(hostPort, containerPort, protocol, hostIP string) map[string]any {
	m := map[string]any{"hostPort": json.RawMessage(hostPort), "containerPort": json.RawMessage(containerPort)}
	if protocol != "" {
		m["protocol"] = json.RawMessage(protocol)
	}
	if hostIP != "" {
		m["hostIP"] = json.RawMessage(hostIP)
	}
	return m
}

func hostilePorts(ms ...any) func(map[string]any) {
	return func(m map[string]any) { m["runtimeConfig"] = map[string]any{"portMappings": ms} }
}

// hostileBridgeCases are hostile port mappings, MTUs, host addresses, subnets
// and static addresses.
func hostileBridgeCases() []TableEntry {
	var entries []TableEntry
	add := func(desc string, c hostileCase) { entries = append(entries, Entry(desc, c)) }

	// Port numbers: integers out of range and anything that is not a
	// JSON integer are refused as bad values (7) whose message names the
	// field; only JSON that does not parse is undecodable (6).
	for _, field := range []string{"hostPort", "containerPort"} {
		for _, v := range []struct{ desc, json string }{
			{"negative", "-1"}, {"0", "0"}, {"65536", "65536"}, {"99999999999", "99999999999"},
			{"one past int64 (overflow)", "9223372036854775808"}, {"-2^63", "-9223372036854775808"},
			{"1e3 (not an integer literal)", "1e3"}, {"80.5", "80.5"}, {`the string "80"`, `"80"`},
			{`the string "http"`, `"http"`}, {"true", "true"}, {"an array", "[80]"}, {"null (zero)", "null"},
		} {
			code := uint(types.ErrInvalidNetworkConfig)
			host, ctr := "8080", "80"
			if field == "hostPort" {
				host = v.json
			} else {
				ctr = v.json
			}
			add(fmt.Sprintf("portMappings %s %s", field, v.desc),
				hostileBridgeCase("", hostilePorts(hostileMapping(host, ctr, "", "")), code, field))
		}
	}
	for _, p := range []string{`"icmp"`, `"tcp\u0000"`, `"tcp\n"`, `"ＴＣＰ"`, `"` + strings.Repeat("t", 10<<10) + `"`, `6`} {
		add("portMappings protocol "+hostileShort(p), hostileBridgeCase("", hostilePorts(hostileMapping("8080", "80", p, "")),
			types.ErrInvalidNetworkConfig, "protocol"))
	}
	for _, ip := range []string{`"garbage"`, `"999.0.0.1"`, `"10.0.0.1/24"`, `"fe80::1%eth0"`, `"10.0.0.1\n"`, `"1.2.3"`, `"::ffff:999.0.0.1"`} {
		add("portMappings hostIP "+ip, hostileBridgeCase("", hostilePorts(hostileMapping("8080", "80", "", ip)), types.ErrInvalidNetworkConfig, "hostIP"))
	}
	add("portMappings hostIP IPv6 on an IPv4-only endpoint",
		hostileBridgeCase("", hostilePorts(hostileMapping("8080", "80", "", `"fd00::1"`)), types.ErrInvalidNetworkConfig, "hostIP"))
	add("portMappings that is a string", hostileBridgeCase("", func(m map[string]any) {
		m["runtimeConfig"] = map[string]any{"portMappings": "8080:80"}
	}, types.ErrInvalidNetworkConfig, "portMappings"))

	// Keys that shape a network: checked when the network is created.
	for _, v := range []struct {
		json string
		code uint
	}{
		{"-1", types.ErrInvalidNetworkConfig}, {"67", types.ErrInvalidNetworkConfig}, {"65536", types.ErrInvalidNetworkConfig},
		{"1e12", types.ErrInvalidNetworkConfig}, {"99999999999999999999", types.ErrInvalidNetworkConfig},
		{"1500.5", types.ErrInvalidNetworkConfig}, {`"1500"`, types.ErrInvalidNetworkConfig},
	} {
		add("mtu "+v.json+" on a new network",
			hostileBridgeCase("hostile-mtu", func(m map[string]any) { m["mtu"] = json.RawMessage(v.json) }, v.code, "mtu"))
	}
	for _, v := range []string{"garbage", "fd00::1", "10.0.0.1/24", "999.0.0.1", "0.0.0.0\n", "::"} {
		add(fmt.Sprintf("hostBindingIPv4 %q on a new network", v),
			hostileBridgeCase("hostile-hb", func(m map[string]any) { m["hostBindingIPv4"] = v }, types.ErrInvalidNetworkConfig, "hostBindingIPv4"))
	}
	for _, v := range []string{"../x", "réseau", "a\nb", "br:0"} {
		add(fmt.Sprintf("bridge %q on a new network", v),
			hostileBridgeCase("hostile-br", func(m map[string]any) { m["bridge"] = v }, types.ErrInvalidNetworkConfig, "bridge"))
	}
	for _, v := range []string{
		"0.0.0.0/0", "::/0", "10.1.2.3/32", "fd00::1/128", "10.1.2.0/31", "fd00::/127",
		"10.1.2.300/24", "10.1.2.0/33", "::ffff:10.1.2.0/120", "10.1.2.0", "garbage",
	} {
		add("ipam subnet "+v, hostileBridgeCase("hostile-subnet", func(m map[string]any) {
			m["ipam"] = ipamRanges(v)
		}, types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].subnet"))
	}

	// Two addresses in one range set, and an ADD refused after its
	// endpoint was reserved on the existing network, which must leave the
	// network's stored configuration as it was.
	add("runtimeConfig.ips with two addresses of one range set", hostileBridgeCase("", func(m map[string]any) {
		m["runtimeConfig"] = map[string]any{"ips": []string{"10.80.99.5", "10.80.99.6"}}
	}, types.ErrInvalidNetworkConfig, "10.80.99.6"))
	add("a bad port with new network-level keys on the existing network", hostileBridgeCase("", func(m map[string]any) {
		m["mtu"] = 9000
		m["runtimeConfig"] = publish(0, 80)
	}, types.ErrInvalidNetworkConfig, "hostPort"))
	for _, v := range []struct{ key, value string }{{"mtu", "-1"}, {"hostBindingIPv4", `"garbage"`}, {"bridge", `"../x"`}} {
		add(v.key+" "+v.value+" on the existing network", hostileBridgeCase("", func(m map[string]any) {
			m[v.key] = json.RawMessage(v.value)
		}, types.ErrInvalidNetworkConfig, v.key))
	}

	// Static addresses the resident network (10.80.99.0/24) cannot honour.
	// The message names the address (IPv4-mapped ones as IPv4).
	for _, v := range []struct{ desc, ip, named string }{
		{"the network address", "10.80.99.0", "10.80.99.0"}, {"the broadcast address", "10.80.99.255", "10.80.99.255"},
		{"the gateway", "10.80.99.1", "10.80.99.1"}, {"the gateway, IPv4-mapped", "::ffff:10.80.99.1", "10.80.99.1"},
		{"outside the subnet", "10.80.98.5", "10.80.98.5"}, {"outside the subnet, IPv4-mapped", "::ffff:10.80.98.5", "10.80.98.5"},
		{"IPv6 on an IPv4-only network", "fd00::5", "fd00::5"}, {"held by the resident endpoint", "10.80.99.2", "10.80.99.2"},
	} {
		code := uint(types.ErrInvalidNetworkConfig)
		if v.ip == "10.80.99.2" {
			code = 100 // address in use
		}
		add("runtimeConfig.ips "+v.desc, hostileBridgeCase("", func(m map[string]any) {
			m["runtimeConfig"] = map[string]any{"ips": []string{v.ip}}
		}, code, v.named))
	}
	for _, v := range []string{"ten.0.0.1", "10.80.99.5/33", "", "10.80.99.5%eth0", "::ffff:10.80.99.256"} {
		add(fmt.Sprintf("runtimeConfig.ips %q", v), hostileBridgeCase("", func(m map[string]any) {
			m["runtimeConfig"] = map[string]any{"ips": []string{v}}
		}, types.ErrInvalidNetworkConfig, "runtimeConfig.ips"))
	}
	for _, v := range []string{"01:00:5e:00:00:01", "00:00:00:00:00:00", "02:42:0a:50:63", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "zz:zz:zz:zz:zz:zz"} {
		add(fmt.Sprintf("runtimeConfig.mac %q", v), hostileBridgeCase("", func(m map[string]any) {
			m["runtimeConfig"] = map[string]any{"mac": v}
		}, types.ErrInvalidNetworkConfig, "runtimeConfig.mac"))
	}
	for _, v := range []struct {
		args, named string
		code        uint
	}{
		{"IP=10.80.99.0", "10.80.99.0", types.ErrInvalidNetworkConfig},
		{"IP=::ffff:10.80.98.5", "10.80.98.5", types.ErrInvalidNetworkConfig},
		{"IP=10.80.99.5;;", "CNI_ARGS", types.ErrInvalidEnvironmentVariables},
		{"MAC=01:00:5e:00:00:01", "CNI_ARGS MAC", types.ErrInvalidEnvironmentVariables},
		{"IP=10.80.99.5,ten", "CNI_ARGS IP", types.ErrInvalidEnvironmentVariables},
	} {
		add(fmt.Sprintf("CNI_ARGS %q", v.args), hostileCase{plugin: "cnm-bridge", code: v.code, names: []string{v.named},
			inv: func(h *hostileWorld) invocation {
				return invocation{containerID: "bad", args: v.args, stdin: h.stdin(h.bridge, nil)}
			}})
	}
	return entries
}

func hostileShort(s string) string {
	if len(s) > 20 {
		return fmt.Sprintf("%s… (%d bytes)", s[:10], len(s))
	}
	return s
}

func hostileResult(out []byte) types.Result {
	GinkgoHelper()
	res, err := current.NewResult(out)
	Expect(err).NotTo(HaveOccurred(), "%s", out)
	return res
}

// The cases share one world: each checks that it left the store, links
// and firewall as it found them. Ordered for the count printed at the end;
// a failure does not skip the cases after it.
var _ = Describe("hostile input", Ordered, ContinueOnFailure, func() {
	var h *hostileWorld
	BeforeAll(func() {
		h = newHostileWorld()
	})
	AfterAll(func() {
		GinkgoWriter.Printf("hostile inputs tried: %d\n", hostileTried)
		AddReportEntry("hostile inputs tried", hostileTried)
	})

	DescribeTable("in names, IDs, interface and endpoint names: refused naming the field, nothing changed",
		func(c hostileCase) { h.refuse(c) },
		hostileNameCases(),
	)

	DescribeTable("in cnm-bridge's ports, MTU, host addresses, subnets and static requests: refused naming the field, nothing changed",
		func(c hostileCase) { h.refuse(c) },
		hostileBridgeCases(),
	)

	// IPv4-mapped IPv6 addresses are IPv4 addresses: honoured as exactly
	// that IPv4 address, or refused, never another address.
	DescribeTable("an IPv4-mapped static address is honoured as the IPv4 address",
		func(how func(h *hostileWorld, a *invocation), want string) {
			a := invocation{command: "ADD", containerID: "mapped", netns: newNS().Path(), stdin: h.stdin(h.bridge, nil)}
			how(h, &a)
			veths := h.hostLinks("veth")
			hostileTried++
			out, stderr, err := h.execCapturing("cnm-bridge", a)
			Expect(err).NotTo(HaveOccurred())
			Expect(stderr).NotTo(ContainSubstring("panic"))
			res, err := current.NewResultFromResult(hostileResult(out))
			Expect(err).NotTo(HaveOccurred())
			Expect(res.IPs).To(HaveLen(1))
			Expect(res.IPs[0].Address.String()).To(Equal(want))
			Expect(h.dump()).To(HaveKey("ipam/resident/addr/" + strings.TrimSuffix(want, "/24")))

			a.command = "DEL"
			_, _, err = h.execCapturing("cnm-bridge", a)
			Expect(err).NotTo(HaveOccurred())
			Expect(h.dump()).NotTo(HaveKey("ipam/resident/addr/" + strings.TrimSuffix(want, "/24")))
			Expect(h.hostLinks("veth")).To(HaveLen(len(veths)))
		},
		Entry("runtimeConfig.ips ::ffff:10.80.99.50", func(h *hostileWorld, a *invocation) {
			a.stdin = h.conf("cnm-bridge", func(m map[string]any) {
				m["runtimeConfig"] = map[string]any{"ips": []string{"::ffff:10.80.99.50"}}
			})
		}, "10.80.99.50/24"),
		Entry("runtimeConfig.ips ::ffff:10.80.99.51/24", func(h *hostileWorld, a *invocation) {
			a.stdin = h.conf("cnm-bridge", func(m map[string]any) {
				m["runtimeConfig"] = map[string]any{"ips": []string{"::ffff:10.80.99.51/24"}}
			})
		}, "10.80.99.51/24"),
		Entry("CNI_ARGS IP=::ffff:10.80.99.52", func(_ *hostileWorld, a *invocation) {
			a.args = "IP=::ffff:10.80.99.52"
		}, "10.80.99.52/24"),
		Entry("args.cni.ips ::FFFF:0A50:6335 (hex spelling)", func(h *hostileWorld, a *invocation) {
			a.stdin = h.conf("cnm-bridge", func(m map[string]any) {
				m["args"] = map[string]any{"cni": map[string]any{"ips": []string{"::FFFF:0A50:6335"}}}
			})
		}, "10.80.99.53/24"),
	)
	Context("honoured as documented", func() {
		var w *world
		BeforeEach(func() { w = newWorld() })

		It("publishes a port on an IPv4-mapped hostIP as that IPv4 address", func() {
			out := w.outside()
			n := bridgeNet("mapped-host", "10.80.2.0/24")
			a := attachment{id: "mapped-hostip", netns: newNS(), caps: map[string]any{
				"portMappings": []map[string]any{{"hostPort": 8091, "containerPort": 80, "protocol": "tcp", "hostIP": "::ffff:192.0.2.1"}},
			}}
			hostileTried++
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.iptablesSave()).To(ContainSubstring("-d 192.0.2.1/32"))
			serve(a.netns, "tcp", ":80")
			Expect(dial(out, "192.0.2.1:8091")).NotTo(BeEmpty())
			Expect(w.del(n, a)).To(Succeed())
			Expect(w.iptablesSave()).NotTo(ContainSubstring("192.0.2.1"))
		})

		It("binds ports to an IPv4-mapped hostBindingIPv4 as that IPv4 address", func() {
			out := w.outside()
			n := bridgeNet("mapped-hb", "10.80.3.0/24")
			n.extra = map[string]any{"hostBindingIPv4": "::ffff:192.0.2.1"}
			a := attachment{id: "mapped-hb", netns: newNS(), caps: publish(8092, 80)}
			hostileTried++
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.iptablesSave()).To(ContainSubstring("-d 192.0.2.1/32"))
			serve(a.netns, "tcp", ":80")
			Expect(dial(out, "192.0.2.1:8092")).NotTo(BeEmpty())
			Expect(w.del(n, a)).To(Succeed())
		})

		DescribeTable("accepts a subnet",
			func(subnet, wantAddr, wantGateway string) {
				n := bridgeNet("subnet", subnet)
				a := attachment{id: "subnet", netns: newNS()}
				hostileTried++
				res, err := w.add(n, a)
				Expect(err).NotTo(HaveOccurred())
				cur, err := current.NewResultFromResult(res)
				Expect(err).NotTo(HaveOccurred())
				Expect(cur.IPs).To(HaveLen(1))
				Expect(cur.IPs[0].Address.String()).To(Equal(wantAddr))
				Expect(cur.IPs[0].Gateway.String()).To(Equal(wantGateway))
				_, addrs := linkIn(w.hostNS, cur.Interfaces[0].Name)
				Expect(addrStrings(addrs)).To(ContainElement(wantGateway + wantAddr[strings.Index(wantAddr, "/"):]))
				Expect(w.del(n, a)).To(Succeed())
				Expect(w.hostLinks("veth")).To(BeEmpty())
			},
			Entry("with host bits, 10.1.2.3/24: as 10.1.2.0/24", "10.1.2.3/24", "10.1.2.2/24", "10.1.2.1"),
			Entry("IPv6 /64", "fd42:1:2:3::/64", "fd42:1:2:3::2/64", "fd42:1:2:3::1"),
			Entry("IPv6 /64 with host bits", "fd42:1:2:4::77/64", "fd42:1:2:4::2/64", "fd42:1:2:4::1"),
			Entry("IPv4 /30, two usable addresses", "10.1.3.0/30", "10.1.3.2/30", "10.1.3.1"),
		)

		It("names a sandbox interface with a leading -, as Linux allows, and removes it", func() {
			n := bridgeNet("dash", "10.80.4.0/24")
			a := attachment{id: "dash", ifname: "-eth0", netns: newNS()}
			hostileTried++
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(testns.LinkNames(a.netns)).To(ContainElement("-eth0"))
			Expect(w.check(n, a)).To(Succeed())
			Expect(w.del(n, a)).To(Succeed())
			Expect(testns.LinkNames(a.netns)).To(ConsistOf("lo"))
			Expect(w.hostLinks("veth")).To(BeEmpty())
		})
	})
})
