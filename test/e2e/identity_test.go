package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe(`"endpointIdentity": "pod" through containerd (conf/containerd/20-cnm-bridge-pod.conflist)`, Ordered, func() {
	var (
		n       *node
		web     *pod // web-0, the re-created one
		other   *pod
		ip, mac string
	)
	const namespace = "e2e"

	BeforeAll(func() {
		n = startNode("pod", "20-cnm-bridge-pod.conflist")
	})

	AfterEach(func() {
		if CurrentSpecReport().Failed() && n != nil {
			n.dumpLogs()
		}
	})

	It("gives a pod re-created under the same namespace and name its address and MAC back", func() {
		first := n.runPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0")})
		eth0 := first.link("eth0")
		ip, mac = first.IP, eth0.MAC
		Expect(inSubnet(ip, "10.89.4.0/24")).To(BeTrue(), "%s is in the conflist's subnet", ip)
		Expect(mac).To(Equal(macFor(ip)))
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v, CRI reports %s", eth0.Addrs, ip)
		Expect(first.ping(first.gateway())).To(Succeed())

		n.removePod(first)
		expectTwoDELs(n, "cnm-bridge", first)

		// The address stays reserved for web-0: another pod gets another.
		other = n.runPod(podSpec{Name: "other-0", Namespace: namespace, UID: uid("other-0")})
		Expect(other.IP).NotTo(Equal(ip))

		// A new pod object (new UID, new sandbox) with the same name.
		web = n.runPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0")})
		Expect(web.ID).NotTo(Equal(first.ID))
		Expect(web.IP).To(Equal(ip), "CRI reports the address of the first web-0")
		eth0 = web.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(mac))
		Expect(web.ping(web.gateway())).To(Succeed())
		Expect(web.ping(other.IP)).To(Succeed())
		Expect(other.ping(web.IP)).To(Succeed())
		for _, p := range []*pod{first, web} {
			adds := n.callsFor("cnm-bridge", p.ID, "ADD")
			Expect(adds).To(HaveLen(1))
			Expect(adds[0].Exit).To(Equal(0), n.output(adds[0]))
		}
	})

	It("refuses the endpoint to a second live sandbox of the pod (error 101) and leaves the first as it was", func() {
		before := len(n.trace())
		_, err := n.tryRunPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0"), Attempt: 1})
		Expect(err).To(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "refused: %s\n", crictlMessage(err))
		Expect(crictlMessage(err)).To(ContainSubstring(fmt.Sprintf("endpoint %s/web-0/eth0 of network %s is joined to sandbox", namespace, n.netName)))

		// The refused sandbox's ADD and the DEL containerd sends after it.
		var adds, dels []cniCall
		for _, c := range n.trace()[before:] {
			if c.Plugin != "cnm-bridge" {
				continue
			}
			Expect(c.ContainerID).NotTo(Equal(web.ID))
			switch c.Command {
			case "ADD":
				adds = append(adds, c)
			case "DEL":
				dels = append(dels, c)
			}
		}
		Expect(adds).To(HaveLen(1))
		Expect(adds[0].Exit).NotTo(Equal(0))
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		Expect(json.Unmarshal([]byte(n.output(adds[0])), &cniErr)).To(Succeed(), n.output(adds[0]))
		Expect(cniErr.Code).To(BeEquivalentTo(101))
		Expect(dels).NotTo(BeEmpty())
		for _, d := range dels {
			Expect(d.Exit).To(Equal(0), n.output(d))
		}

		// web-0's own sandbox keeps its interface and connectivity.
		n.inspect(web)
		Expect(web.State).To(Equal("SANDBOX_READY"))
		eth0 := web.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue())
		Expect(eth0.MAC).To(Equal(mac))
		Expect(web.ping(web.gateway())).To(Succeed())
		Expect(web.ping(other.IP)).To(Succeed())
	})

	It("leaves the new sandbox alone when the old one is removed after it was created (kubelet's order)", func() {
		// kubelet stops a pod's old sandbox, creates the new one, and
		// removes the old one later: the DEL of that removal (empty
		// CNI_NETNS, the old sandbox's ID) must not touch the endpoint the
		// new sandbox has joined.
		old := web
		_, err := n.crictl("stopp", old.ID)
		Expect(err).NotTo(HaveOccurred())
		web = n.runPod(podSpec{Name: "web-0", Namespace: namespace, UID: uid("web-0")})
		Expect(web.IP).To(Equal(ip))
		_, err = n.crictl("rmp", old.ID)
		Expect(err).NotTo(HaveOccurred())
		expectTwoDELs(n, "cnm-bridge", old)

		n.inspect(web)
		Expect(web.State).To(Equal("SANDBOX_READY"))
		eth0 := web.link("eth0")
		Expect(eth0.hasAddr(ip)).To(BeTrue(), "eth0 has %v", eth0.Addrs)
		Expect(eth0.MAC).To(Equal(mac))
		Expect(web.ping(web.gateway())).To(Succeed())
		Expect(web.ping(other.IP)).To(Succeed())
	})

	It("keeps both pods' reservations in the store after they are removed", func() {
		n.removePod(web)
		expectTwoDELs(n, "cnm-bridge", web)
		n.removePod(other)
		expectTwoDELs(n, "cnm-bridge", other)
		n.stopContainerd()

		eps := storeKeys(n.dataDir, "endpoints/"+n.netName+"/")
		Expect(keysOf(eps)).To(ConsistOf(
			fmt.Sprintf("endpoints/%s/%s/web-0/eth0", n.netName, namespace),
			fmt.Sprintf("endpoints/%s/%s/other-0/eth0", n.netName, namespace)))
		var ep endpointRecord
		Expect(json.Unmarshal(eps[fmt.Sprintf("endpoints/%s/%s/web-0/eth0", n.netName, namespace)], &ep)).To(Succeed())
		Expect(ep.Persistent).To(BeTrue())
		Expect(ep.State).To(Equal("left"))
		Expect(ep.MAC).To(Equal(mac))
		Expect(ep.Addresses).To(HaveLen(1))
		Expect(strings.SplitN(ep.Addresses[0].Address, "/", 2)[0]).To(Equal(ip))
		Expect(string(ep.Sandbox)).To(BeEmpty())
		Expect(ep.ExpiresAt.Sub(ep.LeftAt)).To(Equal(time.Hour), "reservationTTL 1h")
		Expect(storeKeys(n.dataDir, "ipam/"+n.netName+"/addr/"+ip)).To(HaveLen(1), "the address stays reserved")
		Expect(keysOf(storeKeys(n.dataDir, "attachments/"+n.netName+"/"))).To(BeEmpty())
		Expect(keysOf(storeKeys(n.dataDir, "sandboxes/"))).To(BeEmpty())
	})
})
