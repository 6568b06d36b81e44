package integration_test

import (
	"fmt"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

var _ = Describe("persistent endpoints", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = vethNet("1.1.0")
	})

	It("keep address and MAC across DEL and an ADD from a new container (CNM_ENDPOINT)", func() {
		args := [][2]string{{"CNM_ENDPOINT", "web"}}
		a := attachment{id: "ctr-a", netns: newNS(), args: args}
		res1, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())

		ep := w.dump()["endpoints/vethnet/web"]
		Expect(ep).To(ContainSubstring(`"state":"left"`))
		Expect(keysUnder(w.dump(), "ipam/vethnet/addr/")).To(HaveLen(1), "the reservation outlives the container")

		// Another address is taken in between, so reuse is not luck.
		other := attachment{id: "ctr-other", netns: newNS()}
		_, err = w.add(n, other)
		Expect(err).NotTo(HaveOccurred())

		b := attachment{id: "ctr-b", netns: newNS(), args: args}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
		Expect(macOf(res2)).To(Equal(macOf(res1)))
		link, _ := linkIn(b.netns, "eth0")
		Expect(link.Attrs().HardwareAddr.String()).To(Equal(macOf(res1)))
		Expect(w.check(n, b)).To(Succeed())
	})

	It("follow the pod with endpointIdentity pod", func() {
		n.extra = map[string]any{"endpointIdentity": "pod"}
		pod := [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "db-0"}, {"K8S_POD_UID", "uid-1"}}
		a := attachment{id: "sandbox-1", netns: newNS(), args: pod}
		res1, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		pod[2][1] = "uid-2"
		b := attachment{id: "sandbox-2", netns: newNS(), args: pod}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
		Expect(macOf(res2)).To(Equal(macOf(res1)))
		Expect(w.dump()).To(HaveKey("endpoints/vethnet/default/db-0/eth0"))
	})

	It("refuse a second live sandbox and change nothing", func() {
		args := [][2]string{{"CNM_ENDPOINT", "db"}}
		a := attachment{id: "ctr-1", netns: newNS(), args: args}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		before := w.dump()
		_, err = w.add(n, attachment{id: "ctr-2", netns: newNS(), args: args})
		Expect(cniCode(err)).To(Equal(cnm.CodeEndpointInUse))
		Expect(err.Error()).To(ContainSubstring("db"))
		Expect(w.dump()).To(Equal(before))
		Expect(w.check(n, a)).To(Succeed())
	})

	It("are let go by a sandbox that vanished without DEL", func() {
		args := [][2]string{{"CNM_ENDPOINT", "api"}}
		old := attachment{id: "ctr-old", netns: newNS(), args: args}
		res1, err := w.add(n, old)
		Expect(err).NotTo(HaveOccurred())
		removeNS(old.netns)
		b := attachment{id: "ctr-new", netns: newNS(), args: args}
		res2, err := w.add(n, b)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res2)).To(Equal(firstIP(res1)))
		Expect(w.hostLinks("tv")).To(HaveLen(1))
	})

	It("expire after reservationTTL and are collected by GC", func() {
		n.extra = map[string]any{"reservationTTL": "1s"}
		args := [][2]string{{"CNM_ENDPOINT", "tmp"}}
		a := attachment{id: "ctr-ttl", netns: newNS(), args: args}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		gc := invocation{command: "GC", stdin: w.stdin(n, map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}})}
		_, err = w.exec("cnm-testveth", gc)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.dump()).To(HaveKey("endpoints/vethnet/tmp"), "not expired yet")
		time.Sleep(1100 * time.Millisecond)
		_, err = w.exec("cnm-testveth", gc)
		Expect(err).NotTo(HaveOccurred())
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
	})

	It("are kept without a TTL, and GC leaves a joined one whose attachment is gone", func() {
		args := [][2]string{{"CNM_ENDPOINT", "svc"}}
		a := attachment{id: "ctr-svc", netns: newNS(), args: args}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		gc := invocation{command: "GC", stdin: w.stdin(n, nil)}
		_, err = w.exec("cnm-testveth", gc)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.dump()["endpoints/vethnet/svc"]).To(ContainSubstring(`"state":"left"`))
		Expect(w.hostLinks("tv")).To(BeEmpty())
		Expect(keysUnder(w.dump(), "ipam/vethnet/addr/")).To(HaveLen(1))
	})
})

var _ = Describe("static requests", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = vethNet("1.1.0")
		n.caps = map[string]bool{"ips": true, "mac": true}
	})

	It("honours ips and mac from runtimeConfig exactly", func() {
		a := attachment{id: "ctr-static", netns: newNS(), caps: map[string]any{
			"ips": []string{"10.77.0.50/24"}, "mac": "02:00:00:00:00:50"}}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.77.0.50/24"))
		Expect(macOf(res)).To(Equal("02:00:00:00:00:50"))
		link, _ := linkIn(a.netns, "eth0")
		Expect(link.Attrs().HardwareAddr.String()).To(Equal("02:00:00:00:00:50"))
	})

	It("honours IP and MAC from CNI_ARGS", func() {
		a := attachment{id: "ctr-args", netns: newNS(), args: [][2]string{{"IP", "10.77.0.60"}, {"MAC", "02:00:00:00:00:60"}}}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(Equal("10.77.0.60/24"))
		Expect(macOf(res)).To(Equal("02:00:00:00:00:60"))
	})

	DescribeTable("rejects, without changing anything,",
		func(ip string, code uint, says string) {
			holder := attachment{id: "holder", netns: newNS(), caps: map[string]any{"ips": []string{"10.77.0.9/24"}}}
			_, err := w.add(n, holder)
			Expect(err).NotTo(HaveOccurred())
			before := w.dump()
			_, err = w.add(n, attachment{id: "ctr-bad", netns: newNS(), caps: map[string]any{"ips": []string{ip}}})
			Expect(cniCode(err)).To(Equal(code))
			Expect(err.Error()).To(ContainSubstring(says))
			Expect(w.dump()).To(Equal(before))
			Expect(w.hostLinks("tv")).To(HaveLen(1))
		},
		Entry("an address held by another endpoint", "10.77.0.9/24", cnm.CodeAddressInUse, "10.77.0.9"),
		Entry("the gateway", "10.77.0.1/24", types.ErrInvalidNetworkConfig, "10.77.0.1"),
		Entry("the network address", "10.77.0.0/24", types.ErrInvalidNetworkConfig, "10.77.0.0"),
		Entry("the broadcast address", "10.77.0.255/24", types.ErrInvalidNetworkConfig, "10.77.0.255"),
		Entry("an address outside the subnet", "10.99.0.5/24", types.ErrInvalidNetworkConfig, "10.99.0.5"),
	)

	It("never replaces a persistent endpoint's address with another requested one", func() {
		a := attachment{id: "ctr-p1", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "pinned"}},
			caps: map[string]any{"ips": []string{"10.77.0.70/24"}}}
		_, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, a)).To(Succeed())
		before := w.dump()
		b := a
		b.id, b.netns = "ctr-p2", newNS()
		b.caps = map[string]any{"ips": []string{"10.77.0.71/24"}}
		_, err = w.add(n, b)
		Expect(cniCode(err)).To(Equal(types.ErrInvalidNetworkConfig))
		Expect(err.Error()).To(ContainSubstring("10.77.0.70"))
		Expect(w.dump()).To(Equal(before))
	})
})

var _ = Describe("concurrency", func() {
	It("gives 50 parallel ADDs in one network 50 distinct addresses and a consistent store", func() {
		w := newWorld()
		n := vethNet("1.1.0")
		const count = 50
		ips := make([]string, count)
		atts := make([]attachment, count)
		for i := range atts {
			atts[i] = attachment{id: fmt.Sprintf("par-%d", i), netns: newNS()}
		}
		var wg sync.WaitGroup
		errs := make([]error, count)
		for i := range atts {
			wg.Go(func() {
				defer GinkgoRecover()
				res, err := w.add(n, atts[i])
				errs[i] = err
				if err == nil {
					cur, _ := current.NewResultFromResult(res)
					ips[i] = cur.IPs[0].Address.String()
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		seen := map[string]bool{}
		for _, ip := range ips {
			Expect(seen).NotTo(HaveKey(ip))
			seen[ip] = true
		}
		kv := w.dump()
		Expect(keysUnder(kv, "endpoints/vethnet/")).To(HaveLen(count))
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(HaveLen(count))
		Expect(keysUnder(kv, "attachments/vethnet/")).To(HaveLen(count))
		Expect(w.hostLinks("tv")).To(HaveLen(count))
		for i := range atts {
			wg.Go(func() {
				defer GinkgoRecover()
				Expect(w.del(n, atts[i])).To(Succeed())
			})
		}
		wg.Wait()
		kv = w.dump()
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(keysUnder(kv, "ipam/vethnet/addr/")).To(BeEmpty())
		Expect(w.hostLinks("tv")).To(BeEmpty())
	})
})
