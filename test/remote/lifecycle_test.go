package remote_test

import (
	"encoding/json"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("cnm-remote with a Docker network plugin", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	DescribeTable("ADD, CHECK, GC, STATUS and DEL through the binary",
		func(version string) {
			c := newContainer("ctr1")
			out, err := w.add(version, c, "", nil)
			Expect(err).NotTo(HaveOccurred())
			res, err := create.CreateFromBytes(out)
			Expect(err).NotTo(HaveOccurred(), "%s", out)
			cur, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			Expect(cur.IPs).To(HaveLen(1))
			Expect(cur.IPs[0].Address.String()).To(HavePrefix("10.77.0."))
			_, addrs := ifaceIn(c.ns, "eth0")
			Expect(addrs).To(ConsistOf(cur.IPs[0].Address.String()))
			Expect(w.plugin.Calls()).To(Equal([]string{"GetCapabilities", "CreateNetwork", "CreateEndpoint", "Join", "ProgramExternalConnectivity"}))
			Expect(vethsIn(w.hostNS)).To(HaveLen(1), "the host end of the plugin's veth")

			if version != "0.3.0" && version != "0.3.1" {
				conf := w.conf(version, map[string]any{"prevResult": json.RawMessage(out)})
				_, _, err = w.exec(invocation{command: "CHECK", containerID: c.id, netns: c.ns.Path(), stdin: conf})
				Expect(err).NotTo(HaveOccurred())
			}
			if strings.HasPrefix(version, "1.1") {
				_, _, err = w.exec(invocation{command: "STATUS", stdin: w.conf(version, nil)})
				Expect(err).NotTo(HaveOccurred())
				gc := w.conf(version, map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": c.id, "ifname": "eth0"}}})
				_, _, err = w.exec(invocation{command: "GC", stdin: gc})
				Expect(err).NotTo(HaveOccurred())
				Expect(w.plugin.Endpoints()).To(Equal(1), "GC keeps a valid attachment")
			}

			_, err = w.del(version, c, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(w.plugin.Calls()).To(ContainElements("RevokeExternalConnectivity", "Leave", "DeleteEndpoint"))
			Expect(w.plugin.Endpoints()).To(BeZero())
			Expect(vethsIn(w.hostNS)).To(BeEmpty())
			_, err = w.del(version, c, "")
			Expect(err).NotTo(HaveOccurred(), "DEL again")
		},
		versionEntries(),
	)

	It("connects the containers of a network: they ping each other over the plugin's bridge", func() {
		a, b := newContainer("a"), newContainer("b")
		_, err := w.add("1.1.0", a, "", nil)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.add("1.1.0", b, "", nil)
		Expect(err).NotTo(HaveOccurred())
		_, addrsB := ifaceIn(b.ns, "eth0")
		Expect(addrsB).To(HaveLen(1))
		Expect(ping(a.ns, strings.Split(addrsB[0], "/")[0])).To(Succeed())
	})

	It("keeps a persistent endpoint's address and MAC across DEL and ADD", func() {
		a := newContainer("a")
		_, err := w.add("1.1.0", a, "CNM_ENDPOINT=db", nil)
		Expect(err).NotTo(HaveOccurred())
		mac, addrs := ifaceIn(a.ns, "eth0")
		_, err = w.del("1.1.0", a, "CNM_ENDPOINT=db")
		Expect(err).NotTo(HaveOccurred())
		Expect(w.plugin.Endpoints()).To(Equal(1), "the plugin's endpoint is kept with the reservation")
		b := newContainer("b")
		_, err = w.add("1.1.0", b, "CNM_ENDPOINT=db", nil)
		Expect(err).NotTo(HaveOccurred())
		mac2, addrs2 := ifaceIn(b.ns, "eth0")
		Expect(mac2).To(Equal(mac))
		Expect(addrs2).To(Equal(addrs))
	})

	It("refuses a plugin that rewrites an assigned MAC, rolling the endpoint back", func() {
		w.plugin.rewriteMAC = "02:00:00:00:00:99"
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "MAC=02:42:0a:4d:00:05", map[string]any{"capabilities": map[string]bool{"mac": true}})
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("changed assigned MAC 02:42:0a:4d:00:05"))
		Expect(w.plugin.Calls()).To(ContainElement("DeleteEndpoint"))
		Expect(w.plugin.Endpoints()).To(BeZero())
		Expect(vethsIn(w.hostNS)).To(BeEmpty())
		Expect(linksIn(c.ns)).To(BeEmpty())
		w.plugin.rewriteMAC = ""
		_, err = w.add("1.1.0", c, "", nil)
		Expect(err).NotTo(HaveOccurred(), "nothing was left behind")
	})

	DescribeTable("a plugin that fails gives the CNI error, within the bound, and leaves nothing behind",
		func(setup func(*world), code int, says string) {
			setup(w)
			c := newContainer("c")
			start := time.Now()
			_, err := w.add("1.1.0", c, "", nil)
			Expect(err).To(HaveOccurred())
			Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
			Expect(cniCode(err)).To(BeEquivalentTo(code), "%v", err)
			Expect(err.Error()).To(ContainSubstring(says))
			Expect(w.plugin.Endpoints()).To(BeZero())
			Expect(vethsIn(w.hostNS)).To(BeEmpty())
			Expect(linksIn(c.ns)).To(BeEmpty())
		},
		Entry("{\"Err\": ...} (HTTP 500)", func(w *world) { w.plugin.fail = "Join" }, 999, "test plugin refuses Join"),
		Entry("malformed JSON", func(w *world) { w.server.fault("/NetworkDriver.CreateEndpoint", "malformed") }, 999, "malformed plugin reply"),
		Entry("HTTP 500 with text", func(w *world) { w.server.fault("/NetworkDriver.Join", "500") }, 999, "plugin crashed (HTTP 500)"),
		Entry("no answer", func(w *world) { w.server.fault("/NetworkDriver.Join", "hang") }, 11, "no answer within 1s"),
		Entry("no plugin on the socket", func(w *world) { w.server.stop() }, 11, "plugin unavailable"),
	)

	It("answers STATUS 50 when the plugin does not activate", func() {
		w.server.stop()
		_, _, err := w.exec(invocation{command: "STATUS", stdin: w.conf("1.1.0", nil)})
		Expect(cniCode(err)).To(BeEquivalentTo(50), "%v", err)
	})

	It("deletes locally while the plugin is gone, and tells the plugin once it is back", func() {
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", nil)
		Expect(err).NotTo(HaveOccurred())
		w.server.stop()
		stderr, err := w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(stderr).To(ContainSubstring("the plugin is told when it answers"))
		Expect(linksIn(c.ns)).To(BeEmpty())
		Expect(w.plugin.Endpoints()).To(Equal(1), "not told yet")
		w.server.start()
		_, _, err = w.exec(invocation{command: "STATUS", stdin: w.conf("1.1.0", nil)})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.plugin.Endpoints()).To(BeZero(), "told once back")
		Expect(vethsIn(w.hostNS)).To(BeEmpty())
	})

	It("deletes through a plugin restarted between ADD and DEL, at once", func() {
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", nil)
		Expect(err).NotTo(HaveOccurred())
		w.server.stop()
		w.server.start()
		stderr, err := w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(stderr).NotTo(ContainSubstring("the plugin is told when it answers"))
		Expect(w.plugin.Endpoints()).To(BeZero())
		Expect(vethsIn(w.hostNS)).To(BeEmpty())
	})

	It("deletes through a plugin restarted without its state, leaving nothing here; an ADD then carries the plugin's refusal", func() {
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", nil)
		Expect(err).NotTo(HaveOccurred())
		w.server.stop()
		w.plugin = newTestPlugin(w.hostNS)
		w.server.plugin = w.plugin
		w.server.start()
		_, err = w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(linksIn(c.ns)).To(BeEmpty())
		Expect(vethsIn(w.hostNS)).To(BeEmpty())
		_, err = w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred(), "DEL again")
		// As with the Docker daemon, the plugin has lost the network: an
		// ADD says so, with the plugin's words, and leaves nothing.
		c2 := newContainer("c2")
		_, err = w.add("1.1.0", c2, "", nil)
		Expect(cniCode(err)).To(BeEquivalentTo(999), "%v", err)
		Expect(err.Error()).To(ContainSubstring("no network"))
		Expect(linksIn(c2.ns)).To(BeEmpty())
		Expect(vethsIn(w.hostNS)).To(BeEmpty())
	})

	DescribeTable("refuses bad configuration with 7 naming the key",
		func(more map[string]any, key string) {
			c := newContainer("c")
			_, err := w.add("1.1.0", c, "", more)
			Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
			Expect(err.Error()).To(ContainSubstring(key))
			Expect(w.plugin.Calls()).To(BeEmpty())
		},
		Entry("no plugin", map[string]any{"socket": nil}, "plugin"),
		Entry("both", map[string]any{"plugin": "x"}, "socket"),
		Entry("a relative socket", map[string]any{"socket": "run/p.sock"}, "socket"),
		Entry("a path for a name", map[string]any{"socket": nil, "plugin": "../p"}, "plugin"),
		Entry("a bad timeout", map[string]any{"timeout": "soon"}, "timeout"),
		Entry("a timeout in a number", map[string]any{"timeout": 5}, "timeout"),
	)
})
