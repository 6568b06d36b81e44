package overlay_test

import (
	"net"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
)

// publishing is net1 as a runtime passes it for a container that
// publishes its port 80 as the host's hostPort.
func publishing(hostPort int) network {
	n := net1
	n.more = map[string]any{"runtimeConfig": map[string]any{"portMappings": []map[string]any{
		{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"},
	}}}
	return n
}

var _ = Describe("published ports of an overlay endpoint", func() {
	It("are published on the endpoint's host only: reached there from the host and from another host, refused to a second endpoint there, gone after DEL", func() {
		w := newWorld(2)
		a, b := w.hosts[0], w.hosts[1]
		web := a.add(publishing(8080), "web", "")
		serve(web.ns, ":80")
		w.sync()

		Expect(dial(a.ns, "127.0.0.1:8080")).NotTo(BeEmpty(), "from host A itself, on loopback")
		Expect(dial(b.ns, net.JoinHostPort(a.ip.String(), "8080"))).To(Equal(b.ip.String()),
			"from host B at A's address: DNATed on A, not masqueraded")
		_, err := dial(a.ns, net.JoinHostPort(b.ip.String(), "8080"))
		Expect(err).To(HaveOccurred(), "not on host B")
		Expect(web.check(publishing(8080), "")).To(Succeed())
		Expect(a.iptablesSave()).To(ContainSubstring("--dport 8080"))

		By("a second endpoint on A is refused the port, and leaves nothing")
		before := a.links()
		other := a.newContainer("other")
		err = other.tryAdd(publishing(8080), "")
		Expect(cniCode(err)).To(Equal(driverapi.CodePortInUse), "%v", err)
		Expect(err.Error()).To(ContainSubstring("runtimeConfig.portMappings"))
		Expect(a.links()).To(ConsistOf(before))

		By("an endpoint on B publishes the same port there")
		onB := b.add(publishing(8080), "on-b", "")
		serve(onB.ns, ":80")
		Expect(dial(a.ns, net.JoinHostPort(b.ip.String(), "8080"))).To(Equal(a.ip.String()))

		Expect(web.del(publishing(8080), "")).To(Succeed())
		Expect(a.iptablesSave()).NotTo(ContainSubstring("--dport 8080"))
		_, err = dial(b.ns, net.JoinHostPort(a.ip.String(), "8080"))
		Expect(err).To(HaveOccurred())
		Expect(other.tryAdd(publishing(8080), "")).To(Succeed(), "the port is free again on A")
	})

	It("follow a persistent endpoint that moves: published on its new host, no longer on the old", func() {
		w := newWorld(3)
		a, b, c := w.hosts[0], w.hosts[1], w.hosts[2]
		x := a.add(publishing(9090), "x-on-a", "CNM_ENDPOINT=x")
		serve(x.ns, ":80")
		Expect(dial(c.ns, net.JoinHostPort(a.ip.String(), "9090"))).To(Equal(c.ip.String()))

		Expect(x.del(publishing(9090), "CNM_ENDPOINT=x")).To(Succeed())
		moved := b.add(publishing(9090), "x-on-b", "CNM_ENDPOINT=x")
		Expect(moved.ip).To(Equal(x.ip))
		serve(moved.ns, ":80")
		Expect(dial(c.ns, net.JoinHostPort(b.ip.String(), "9090"))).To(Equal(c.ip.String()))
		_, err := dial(c.ns, net.JoinHostPort(a.ip.String(), "9090"))
		Expect(err).To(HaveOccurred())
		Expect(a.iptablesSave()).NotTo(ContainSubstring("--dport 9090"))
	})

	It("left behind by an endpoint removed by force from another host, are reported by cnmctl check and freed by --repair", func() {
		w := newWorld(2)
		a, b := w.hosts[0], w.hosts[1]
		web := a.add(publishing(8080), "web", "")
		eid, name := endpointOf(b, "web")
		out, code := b.cnmctl("endpoint", "rm", "--force", "--network", net1.name, name)
		Expect(code).To(BeZero(), "%s", out)
		Expect(a.iptablesSave()).To(ContainSubstring("--dport 8080"), "nothing of it was touched on A")

		found, code := a.check(false)
		Expect(code).To(Equal(3))
		Expect(objects(found)).To(ConsistOf("link "+hostVeth(eid), "rule "+eid,
			"port endpoints/"+eid, "port hostports/tcp/8080/any4"))
		found, code = a.check(true)
		Expect(code).To(BeZero(), "%+v", found)
		Expect(a.iptablesSave()).NotTo(ContainSubstring("--dport 8080"))
		Expect(linksOf(web)).To(ConsistOf("lo"))
		found, _ = a.check(false)
		Expect(found).To(BeEmpty())

		next := a.add(publishing(8080), "next", "")
		serve(next.ns, ":80")
		Expect(dial(b.ns, net.JoinHostPort(a.ip.String(), "8080"))).To(Equal(b.ip.String()))
	})

	It("refuses a bad mapping with error 7 naming it, creating nothing", func() {
		w := newWorld(1)
		h := w.hosts[0]
		h.add(net1, "first", "") // the network exists here
		before, peers := h.links(), w.peers()
		bad := net1
		bad.more = map[string]any{"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"hostPort": 70000, "containerPort": 80},
		}}}
		err := h.newContainer("bad").tryAdd(bad, "")
		Expect(cniCode(err)).To(Equal(uint(7)), "%v", err)
		Expect(err.Error()).To(ContainSubstring("runtimeConfig.portMappings[0].hostPort"))
		Expect(h.links()).To(ConsistOf(before))
		Expect(w.peers()).To(Equal(peers))
	})
})
