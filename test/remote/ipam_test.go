package remote_test

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote"
	remoteipam "github.com/cnmnet/cnmnet/pkg/ipam/remote"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ = Describe("remote IPAM: a Docker IPAM plugin hands out the addresses", func() {
	var (
		w     *world
		ip    *testIPAM
		isrv  *ipamServer
		ipamc func(more map[string]any) map[string]any
		// with is the network configuration's keys for remote IPAM.
		with func(more map[string]any) map[string]any
	)
	BeforeEach(func() {
		w = newWorld()
		ip = newTestIPAM()
		isrv = startIPAMServer(ip, GinkgoT().TempDir())
		ipamc = func(more map[string]any) map[string]any {
			m := map[string]any{"type": "remote", "socket": isrv.sock, "timeout": "1s"}
			for k, v := range more {
				if v == nil {
					delete(m, k)
				} else {
					m[k] = v
				}
			}
			return m
		}
		with = func(more map[string]any) map[string]any { return map[string]any{"ipam": ipamc(more)} }
	})

	// controller is cnmctl's view of the spec's store, in-process.
	controller := func() *cnm.Controller {
		GinkgoHelper()
		s, err := store.Open(w.dataDir, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		c := cnm.New(s)
		Expect(driverapi.RegisterAll(remote.Register, remoteipam.Register)(c)).To(Succeed())
		return c
	}

	addressOf := func(out []byte) string {
		GinkgoHelper()
		res, err := create.CreateFromBytes(out)
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		cur, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		Expect(cur.IPs).To(HaveLen(1))
		return cur.IPs[0].Address.String()
	}

	DescribeTable("ADD, CHECK, STATUS and DEL through the binary",
		func(version string) {
			c := newContainer("ctr1")
			out, err := w.add(version, c, "", with(nil))
			Expect(err).NotTo(HaveOccurred())
			addr := addressOf(out)
			Expect(addr).To(Equal("10.88.0.2/24"), "the gateway .1 is the pool's first address")
			_, addrs := ifaceIn(c.ns, "eth0")
			Expect(addrs).To(ConsistOf(addr))
			Expect(ip.Calls()).To(Equal([]string{"GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "RequestAddress", "RequestAddress"}))
			Expect(ip.Held()).To(ConsistOf("10.88.0.1", "10.88.0.2"))

			if version != "0.3.0" && version != "0.3.1" {
				conf := w.conf(version, map[string]any{"ipam": ipamc(nil), "prevResult": json.RawMessage(out)})
				_, _, err = w.exec(invocation{command: "CHECK", containerID: c.id, netns: c.ns.Path(), stdin: conf})
				Expect(err).NotTo(HaveOccurred())
			}
			if strings.HasPrefix(version, "1.1") {
				_, _, err = w.exec(invocation{command: "STATUS", stdin: w.conf(version, with(nil))})
				Expect(err).NotTo(HaveOccurred())
			}
			_, _, err = w.exec(invocation{command: "DEL", containerID: c.id, netns: c.ns.Path(), stdin: w.conf(version, with(nil))})
			Expect(err).NotTo(HaveOccurred())
			Expect(ip.Held()).To(ConsistOf("10.88.0.1"), "the address is released, the network's gateway kept")
			Expect(ip.Calls()).To(ContainElement("ReleaseAddress"))
		},
		versionEntries(),
	)

	It("asks for the configured pool, range and gateway, and takes a gateway the plugin's pool data gives", func() {
		a := newContainer("a")
		out, err := w.add("1.1.0", a, "", with(map[string]any{"subnet": "10.99.0.0/16", "ipRange": "10.99.5.0/24", "gateway": "10.99.0.254"}))
		Expect(err).NotTo(HaveOccurred())
		Expect(addressOf(out)).To(Equal("10.99.5.1/16"))
		Expect(ip.Held()).To(ConsistOf("10.99.0.254", "10.99.5.1"))

		w2 := newWorld()
		ip2 := newTestIPAM()
		ip2.gatewayData = true
		s2 := startIPAMServer(ip2, GinkgoT().TempDir())
		out, err = w2.add("1.1.0", newContainer("b"), "", map[string]any{"ipam": map[string]any{"type": "remote", "socket": s2.sock}})
		Expect(err).NotTo(HaveOccurred())
		res, err := create.CreateFromBytes(out)
		Expect(err).NotTo(HaveOccurred())
		cur, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		Expect(cur.IPs[0].Gateway.String()).To(Equal("10.88.0.1"))
		Expect(ip2.Calls()).To(Equal([]string{"GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "RequestAddress"}), "no gateway requested")
	})

	It("keeps a persistent endpoint's address across DEL and ADD; only its removal releases it", func() {
		a := newContainer("a")
		out, err := w.add("1.1.0", a, "CNM_ENDPOINT=db", with(nil))
		Expect(err).NotTo(HaveOccurred())
		addr := addressOf(out)
		_, _, err = w.exec(invocation{command: "DEL", containerID: a.id, netns: a.ns.Path(), args: "CNM_ENDPOINT=db", stdin: w.conf("1.1.0", with(nil))})
		Expect(err).NotTo(HaveOccurred())
		Expect(ip.Calls()).NotTo(ContainElement("ReleaseAddress"))
		Expect(ip.Held()).To(ContainElement(strings.Split(addr, "/")[0]))

		b := newContainer("b")
		out, err = w.add("1.1.0", b, "CNM_ENDPOINT=db", with(nil))
		Expect(err).NotTo(HaveOccurred())
		Expect(addressOf(out)).To(Equal(addr))
		_, _, err = w.exec(invocation{command: "DEL", containerID: b.id, netns: b.ns.Path(), args: "CNM_ENDPOINT=db", stdin: w.conf("1.1.0", with(nil))})
		Expect(err).NotTo(HaveOccurred())

		c := controller()
		defer c.Close()
		Expect(c.RemoveEndpoint(context.Background(), "rnet", "db", false)).To(Succeed())
		Expect(ip.Held()).To(ConsistOf("10.88.0.1"))
		Expect(c.RemoveNetwork(context.Background(), "rnet", false)).To(Succeed())
		Expect(ip.Held()).To(BeEmpty())
		Expect(ip.Pools()).To(BeZero(), "the pool is released with the network")
	})

	It("refuses, on a network that exists, another pool than the one its first ADD asked for, asking the plugin nothing", func() {
		_, err := w.add("1.1.0", newContainer("a"), "", with(map[string]any{"subnet": "10.99.0.0/16"}))
		Expect(err).NotTo(HaveOccurred())
		calls := len(ip.Calls())
		_, err = w.add("1.1.0", newContainer("b"), "", with(map[string]any{"subnet": "10.98.0.0/16"}))
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("exists with the pools its remote IPAM plugin gave for 10.99.0.0/16"))
		Expect(ip.Calls()).To(HaveLen(calls))
	})

	It("honours a static address as the preferred one", func() {
		c := newContainer("c")
		out, err := w.add("1.1.0", c, "IP=10.88.0.77", with(nil))
		Expect(err).NotTo(HaveOccurred())
		Expect(addressOf(out)).To(Equal("10.88.0.77/24"))
	})

	DescribeTable("a plugin that fails gives the CNI error, within the bound, and leaves nothing behind",
		func(setup func(), code int, says string) {
			setup()
			c := newContainer("c")
			start := time.Now()
			_, err := w.add("1.1.0", c, "", with(nil))
			Expect(err).To(HaveOccurred())
			Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
			Expect(cniCode(err)).To(BeEquivalentTo(code), "%v", err)
			Expect(err.Error()).To(ContainSubstring(says))
			Expect(ip.Held()).To(BeEmpty())
			Expect(ip.Pools()).To(BeZero())
			Expect(w.plugin.Endpoints()).To(BeZero())
			Expect(linksIn(c.ns)).To(BeEmpty())
		},
		Entry("{\"Err\": ...} (HTTP 500)", func() { ip.setFail("RequestAddress") }, 999, "test ipam refuses RequestAddress"),
		Entry("{\"Error\": ...}", func() { isrv.fault("/IpamDriver.RequestPool", "error") }, 999, "the ipam plugin says no"),
		Entry("malformed JSON", func() { isrv.fault("/IpamDriver.RequestAddress", "malformed") }, 999, "malformed plugin reply"),
		Entry("no answer", func() { isrv.fault("/IpamDriver.RequestAddress", "hang") }, 11, "no answer within 1s"),
		Entry("no plugin on the socket", func() { isrv.stop() }, 11, "plugin unavailable"),
	)

	It("deletes while the IPAM plugin is down, and GC releases the address once it is back", func() {
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", with(nil))
		Expect(err).NotTo(HaveOccurred())
		isrv.stop()
		_, _, err = w.exec(invocation{command: "DEL", containerID: c.id, netns: c.ns.Path(), stdin: w.conf("1.1.0", with(nil))})
		Expect(err).NotTo(HaveOccurred())
		Expect(linksIn(c.ns)).To(BeEmpty())
		Expect(ip.Held()).To(ConsistOf("10.88.0.1", "10.88.0.2"), "not released yet")

		gc := w.conf("1.1.0", map[string]any{"ipam": ipamc(nil), "cni.dev/valid-attachments": []map[string]string{}})
		_, _, err = w.exec(invocation{command: "GC", stdin: gc})
		Expect(err).To(HaveOccurred(), "the release is still pending")
		isrv.start()
		_, _, err = w.exec(invocation{command: "GC", stdin: gc})
		Expect(err).NotTo(HaveOccurred())
		Expect(ip.Held()).To(ConsistOf("10.88.0.1"))
	})

	It("keeps the pool release of a network removed while the plugin is down, for cnmctl gc", func() {
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", with(nil))
		Expect(err).NotTo(HaveOccurred())
		_, err = w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred())
		isrv.stop()
		ctl := controller()
		defer ctl.Close()
		Expect(ctl.RemoveNetwork(context.Background(), "rnet", false)).To(Succeed())
		Expect(ip.Pools()).To(Equal(1))
		isrv.start()
		_, err = ctl.Collect(context.Background(), false)
		Expect(err).NotTo(HaveOccurred())
		Expect(ip.Pools()).To(BeZero())
		Expect(ip.Held()).To(BeEmpty())
	})

	It("answers STATUS 50 when the IPAM plugin does not activate", func() {
		isrv.stop()
		_, _, err := w.exec(invocation{command: "STATUS", stdin: w.conf("1.1.0", with(nil))})
		Expect(cniCode(err)).To(BeEquivalentTo(50), "%v", err)
	})

	DescribeTable("refuses bad configuration with 7 naming the key, asking the plugins nothing",
		func(more map[string]any, key string) {
			c := newContainer("c")
			_, err := w.add("1.1.0", c, "", with(more))
			Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
			Expect(err.Error()).To(ContainSubstring(key))
			Expect(ip.Calls()).To(BeEmpty())
			Expect(w.plugin.Calls()).To(BeEmpty())
		},
		Entry("no plugin", map[string]any{"socket": nil}, "ipam.plugin"),
		Entry("both", map[string]any{"plugin": "x"}, "ipam.socket"),
		Entry("a relative socket", map[string]any{"socket": "run/p.sock"}, "ipam.socket"),
		Entry("a path for a name", map[string]any{"socket": nil, "plugin": "../p"}, "ipam.plugin"),
		Entry("a bad timeout", map[string]any{"timeout": "soon"}, "ipam.timeout"),
		Entry("an ipRange outside the subnet", map[string]any{"subnet": "10.99.0.0/16", "ipRange": "10.98.0.0/24"}, "ipam.ipRange"),
		Entry("a gateway without a subnet", map[string]any{"gateway": "10.99.0.1"}, "ipam.subnet"),
	)
})
