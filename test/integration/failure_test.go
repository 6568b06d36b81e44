package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/syncbuf"
	"github.com/cnmnet/cnmnet/test/testdriver"
	"github.com/cnmnet/cnmnet/test/testns"
)

var _ = Describe("a plugin killed with SIGKILL in the middle of ADD", func() {
	// killDuringAdd starts an ADD that waits at step until it is killed.
	killDuringAdd := func(w *world, n network, id string, netns ns.NetNS, step string) {
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			cmd := exec.Command(filepath.Join(binDir, "cnm-testveth"))
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns.Path(),
				"CNI_IFNAME=eth0", "CNI_PATH=" + binDir, testdriver.HangEnv + "=" + step}
			cmd.Stdin = bytes.NewReader(w.stdin(n, nil))
			var stderr syncbuf.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				return err
			}
			Eventually(stderr.String, 10*time.Second, 10*time.Millisecond).Should(ContainSubstring("hanging at " + step))
			Expect(cmd.Process.Kill()).To(Succeed())
			_ = cmd.Wait()
			return nil
		})).To(Succeed())
	}

	expectNothingLeft := func(w *world) {
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "attachments/")).To(BeEmpty())
		Expect(keysUnder(kv, "sandboxes/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
		Expect(w.hostLinks("t")).To(BeEmpty())
	}

	DescribeTable("leaves nothing that DEL or GC cannot remove",
		func(step string, cleanup string) {
			w := newWorld()
			n := vethNet("1.1.0")
			c := newNS()
			killDuringAdd(w, n, "victim", c, step)
			Expect(keysUnder(w.dump(), "endpoints/vethnet/")).To(HaveLen(1), "the reservation was recorded before the host changed")
			switch cleanup {
			case "DEL":
				Expect(w.del(n, attachment{id: "victim", netns: c})).To(Succeed())
			case "GC":
				_, err := w.exec("cnm-testveth", invocation{command: "GC", stdin: w.stdin(n, nil)})
				Expect(err).NotTo(HaveOccurred())
			}
			expectNothingLeft(w)
			Expect(testns.LinkNames(c)).To(ConsistOf("lo"))

			again := attachment{id: "next", netns: newNS()}
			_, err := w.add(n, again)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.check(n, again)).To(Succeed())
		},
		Entry("at CreateEndpoint, cleaned by DEL", "create", "DEL"),
		Entry("in Join after the veth exists, cleaned by DEL", "join", "DEL"),
		Entry("in Join after the veth exists, cleaned by GC", "join", "GC"),
	)
})

var _ = Describe("plugins killed with SIGKILL at random instants of ADD and DEL", func() {
	It("leave a store and host that DEL and GC bring back to clean", func() {
		seed := GinkgoRandomSeed()
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		By(fmt.Sprintf("seed %d", seed))
		w := newWorld()
		n := vethNet("1.1.0")
		start := func(command, id string, netns ns.NetNS) *exec.Cmd {
			cmd := exec.Command(filepath.Join(binDir, "cnm-testveth"))
			cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns.Path(),
				"CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
			cmd.Stdin = bytes.NewReader(w.stdin(n, nil))
			Expect(cmd.Start()).To(Succeed())
			return cmd
		}
		kills := 0
		for i := range 20 {
			id := fmt.Sprintf("k%d", i)
			c := newNS()
			command := "ADD"
			if i%2 == 1 {
				_, err := w.add(n, attachment{id: id, netns: c})
				Expect(err).NotTo(HaveOccurred())
				command = "DEL"
			}
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				cmd := start(command, id, c)
				time.Sleep(time.Duration(rng.IntN(40000)) * time.Microsecond)
				if cmd.Process.Kill() == nil {
					kills++
				}
				_ = cmd.Wait()
				return nil
			})).To(Succeed())
			Expect(w.del(n, attachment{id: id, netns: c})).To(Succeed())
			Expect(testns.LinkNames(c)).To(ConsistOf("lo"))
		}
		_, err := w.exec("cnm-testveth", invocation{command: "GC", stdin: w.stdin(n, nil)})
		Expect(err).NotTo(HaveOccurred())
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "attachments/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
		Expect(w.hostLinks("t")).To(BeEmpty())
		fmt.Fprintf(GinkgoWriter, "%d kills\n", kills)
		_, err = w.add(n, attachment{id: "after", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
	})
})

var _ = Describe("bad input", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = vethNet("1.1.0")
		// Some state to keep unchanged.
		_, err := w.add(n, attachment{id: "resident", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
	})

	type badCase struct {
		plugin string
		inv    func(w *world, netns string) invocation
		code   uint
		field  string
	}
	conf := func(mutate func(map[string]any)) func(*world, string) invocation {
		return func(w *world, netns string) invocation {
			var m map[string]any
			Expect(json.Unmarshal(w.stdin(vethNet("1.1.0"), nil), &m)).To(Succeed())
			mutate(m)
			raw, _ := json.Marshal(m)
			return invocation{command: "ADD", containerID: "bad", netns: netns, stdin: raw}
		}
	}
	env := func(mutate func(*invocation)) func(*world, string) invocation {
		return func(w *world, netns string) invocation {
			inv := invocation{command: "ADD", containerID: "bad", netns: netns, stdin: w.stdin(vethNet("1.1.0"), nil)}
			mutate(&inv)
			return inv
		}
	}

	DescribeTable("gets a CNI error with the spec's code, names the field, and changes nothing",
		func(c badCase) {
			before := w.dump()
			plugin := c.plugin
			if plugin == "" {
				plugin = "cnm-testveth"
			}
			_, err := w.exec(plugin, c.inv(w, newNS().Path()))
			Expect(err).To(HaveOccurred())
			Expect(cniCode(err)).To(Equal(c.code), err.Error())
			Expect(strings.ToLower(err.Error())).To(ContainSubstring(strings.ToLower(c.field)))
			Expect(w.dump()).To(Equal(before))
			Expect(w.hostLinks("tv")).To(HaveLen(1))
		},
		Entry("undecodable configuration", badCase{inv: env(func(i *invocation) { i.stdin = []byte("{not json") }),
			code: types.ErrDecodingFailure, field: "unmarshal"}),
		Entry("unsupported cniVersion", badCase{inv: conf(func(m map[string]any) { m["cniVersion"] = "0.2.0" }),
			code: types.ErrIncompatibleCNIVersion, field: "0.2.0"}),
		Entry("network name with ../", badCase{inv: conf(func(m map[string]any) { m["name"] = "../etc" }),
			code: types.ErrInvalidNetworkConfig, field: "name"}),
		Entry("network name with a newline", badCase{inv: conf(func(m map[string]any) { m["name"] = "a\nb" }),
			code: types.ErrInvalidNetworkConfig, field: "name"}),
		Entry("network name of 10 KB", badCase{inv: conf(func(m map[string]any) { m["name"] = strings.Repeat("a", 10240) }),
			code: types.ErrInvalidNetworkConfig, field: "name"}),
		Entry("relative dataDir", badCase{inv: conf(func(m map[string]any) { m["dataDir"] = "var/lib/x" }),
			code: types.ErrInvalidNetworkConfig, field: "dataDir"}),
		Entry("dataDir with ..", badCase{inv: conf(func(m map[string]any) { m["dataDir"] = "/var/lib/../../etc" }),
			code: types.ErrInvalidNetworkConfig, field: "dataDir"}),
		Entry("unknown endpointIdentity", badCase{inv: conf(func(m map[string]any) { m["endpointIdentity"] = "node" }),
			code: types.ErrInvalidNetworkConfig, field: "endpointIdentity"}),
		Entry("negative reservationTTL", badCase{inv: conf(func(m map[string]any) { m["reservationTTL"] = "-5s" }),
			code: types.ErrInvalidNetworkConfig, field: "reservationTTL"}),
		Entry("ipam subnet that is not one", badCase{inv: conf(func(m map[string]any) {
			m["ipam"] = map[string]any{"type": "cnm", "ranges": []any{[]any{map[string]any{"subnet": "10.1.2.300/24"}}}}
		}), code: types.ErrInvalidNetworkConfig, field: "ipam.ranges[0][0].subnet"}),
		Entry("ipam subnet /32", badCase{inv: conf(func(m map[string]any) {
			m["ipam"] = map[string]any{"type": "cnm", "subnet": "10.1.2.3/32"}
		}), code: types.ErrInvalidNetworkConfig, field: "ipam"}),
		Entry("runtimeConfig ips that is not an address", badCase{inv: conf(func(m map[string]any) {
			m["runtimeConfig"] = map[string]any{"ips": []string{"ten.0.0.1"}}
		}), code: types.ErrInvalidNetworkConfig, field: "runtimeConfig.ips"}),
		Entry("runtimeConfig mac that is multicast", badCase{inv: conf(func(m map[string]any) {
			m["runtimeConfig"] = map[string]any{"mac": "01:00:5e:00:00:01"}
		}), code: types.ErrInvalidNetworkConfig, field: "runtimeConfig.mac"}),
		Entry("type no driver serves", badCase{inv: conf(func(m map[string]any) { m["type"] = "cnm-nope" }),
			code: types.ErrInvalidNetworkConfig, field: "type"}),
		Entry("container ID with a slash", badCase{inv: env(func(i *invocation) { i.containerID = "../../x" }),
			code: types.ErrInvalidEnvironmentVariables, field: "containerid"}),
		Entry("container ID with a control character", badCase{inv: env(func(i *invocation) { i.containerID = "a\tb" }),
			code: types.ErrInvalidEnvironmentVariables, field: "containerid"}),
		Entry("interface name longer than 15", badCase{inv: env(func(i *invocation) { i.ifname = "eth0123456789abcdef" }),
			code: types.ErrInvalidEnvironmentVariables, field: "interface name"}),
		Entry("CNI_ARGS without =", badCase{inv: env(func(i *invocation) { i.args = "IgnoreUnknown" }),
			code: types.ErrInvalidEnvironmentVariables, field: "CNI_ARGS"}),
		Entry("CNI_ARGS MAC that is not one", badCase{inv: env(func(i *invocation) { i.args = "MAC=zz:zz" }),
			code: types.ErrInvalidEnvironmentVariables, field: "MAC"}),
		Entry("CNI_ARGS IP that is not one", badCase{inv: env(func(i *invocation) { i.args = "IP=10.0.0.999" }),
			code: types.ErrInvalidEnvironmentVariables, field: "IP"}),
		Entry("CNM_ENDPOINT with ../", badCase{inv: env(func(i *invocation) { i.args = "CNM_ENDPOINT=../evil" }),
			code: types.ErrInvalidEnvironmentVariables, field: "CNM_ENDPOINT"}),
		Entry("endpointIdentity pod without the pod's name", badCase{inv: func(w *world, netns string) invocation {
			n := vethNet("1.1.0")
			n.extra = map[string]any{"endpointIdentity": "pod"}
			return invocation{command: "ADD", containerID: "bad", netns: netns, stdin: w.stdin(n, nil)}
		}, code: types.ErrInvalidEnvironmentVariables, field: "K8S_POD_NAMESPACE"}),
		Entry("a CNI_NETNS that is not a network namespace", badCase{inv: env(func(i *invocation) { i.netns = "/proc/self/ns/mnt" }),
			code: types.ErrInvalidNetNS, field: "CNI_NETNS"}),
		Entry("a network of another driver's name", badCase{plugin: "cnm-null", inv: func(w *world, netns string) invocation {
			n := nullNet("1.1.0")
			n.name = "vethnet"
			return invocation{command: "ADD", containerID: "bad", netns: netns, stdin: w.stdin(n, nil)}
		}, code: types.ErrInvalidNetworkConfig, field: "type"}),
		Entry("a cnm-null network with ipam", badCase{plugin: "cnm-null", inv: func(w *world, netns string) invocation {
			n := nullNet("1.1.0")
			n.name, n.ipam = "nullipam", ipamRanges("10.88.0.0/24")
			return invocation{command: "ADD", containerID: "bad", netns: netns, stdin: w.stdin(n, nil)}
		}, code: types.ErrInvalidNetworkConfig, field: "ipam"}),
	)
})
