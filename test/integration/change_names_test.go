package integration_test

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

// listedEndpoint is what `cnmctl -o json endpoint ls` shows of one endpoint.
type listedEndpoint struct {
	Network   string `json:"network"`
	Name      string `json:"name"`
	ID        string `json:"id"`
	MAC       string `json:"mac"`
	Addresses []struct {
		Address string `json:"address"`
	} `json:"addresses"`
}

// listedWith returns the endpoint cnmctl endpoint ls shows holding ip.
func (w *world) listedWith(ip string) listedEndpoint {
	GinkgoHelper()
	var eps []listedEndpoint
	w.cnmctlJSON(&eps, "endpoint", "ls")
	for _, ep := range eps {
		for _, a := range ep.Addresses {
			if strings.SplitN(a.Address, "/", 2)[0] == ip {
				return ep
			}
		}
	}
	Fail(fmt.Sprintf("cnmctl endpoint ls shows no endpoint with %s: %+v", ip, eps))
	return listedEndpoint{}
}

// expectNamesHolder checks that a refusal names the endpoint in the way
// as cnmctl endpoint ls shows it, by name and network, not by its ID.
func expectNamesHolder(err error, code uint, holder listedEndpoint) {
	GinkgoHelper()
	Expect(cniCode(err)).To(Equal(code), "%v", err)
	Expect(holder.ID).NotTo(BeEmpty())
	Expect(err.Error()).To(ContainSubstring(fmt.Sprintf("endpoint %s of network %s", holder.Name, holder.Network)))
	Expect(err.Error()).NotTo(ContainSubstring(holder.ID), "the internal endpoint ID")
}

var _ = Describe("errors that name the endpoint in the way", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	DescribeTable("100: a requested address another endpoint holds names that endpoint",
		func(version string) {
			n := bridgeNet("names", "10.84.0.0/24")
			n.version = version
			_, err := w.add(n, attachment{id: "holder-ctr", netns: newNS(), args: [][2]string{{"IP", "10.84.0.20"}}})
			Expect(err).NotTo(HaveOccurred())
			holder := w.listedWith("10.84.0.20")
			Expect(holder.Name).To(Equal("holder-ctr/eth0"))

			before := w.dump()
			_, err = w.add(n, attachment{id: "second", netns: newNS(), args: [][2]string{{"IP", "10.84.0.20"}}})
			expectNamesHolder(err, cnm.CodeAddressInUse, holder)
			Expect(err.Error()).To(ContainSubstring("10.84.0.20 is held by endpoint holder-ctr/eth0 of network names"))
			Expect(w.dump()).To(Equal(before))
		},
		versionEntries())

	It("100: names a persistent endpoint that keeps the address after its DEL, to ADD and to cnmctl endpoint create", func() {
		n := bridgeNet("names", "10.84.0.0/24")
		db := attachment{id: "db-ctr", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "db"}, {"IP", "10.84.0.30"}}}
		_, err := w.add(n, db)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.del(n, db)).To(Succeed())
		holder := w.listedWith("10.84.0.30")
		Expect(holder.Name).To(Equal("db"))

		_, err = w.add(n, attachment{id: "other", netns: newNS(), caps: map[string]any{"ips": []string{"10.84.0.30/24"}}})
		expectNamesHolder(err, cnm.CodeAddressInUse, holder)

		_, errOut, code := w.cnmctl("endpoint", "create", "--network", "names", "--name", "x", "--ip", "10.84.0.30")
		Expect(code).NotTo(BeZero())
		Expect(errOut).To(ContainSubstring("10.84.0.30 is held by endpoint db of network names"))
		Expect(errOut).NotTo(ContainSubstring(holder.ID))
	})

	DescribeTable("104: a host port another endpoint publishes names that endpoint",
		func(version string) {
			n := bridgeNet("names", "10.84.0.0/24")
			n.version = version
			res, err := w.add(n, attachment{id: "web-ctr", netns: newNS(), caps: publish(8090, 80)})
			Expect(err).NotTo(HaveOccurred())
			r, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			holder := w.listedWith(r.IPs[0].Address.IP.String())
			Expect(holder.Name).To(Equal("web-ctr/eth0"))

			_, err = w.add(n, attachment{id: "second", netns: newNS(), caps: publish(8090, 81)})
			expectNamesHolder(err, cnm.CodePortInUse, holder)
			Expect(err.Error()).To(ContainSubstring("port 8090 on any4 is already published by endpoint web-ctr/eth0 of network names"))
		},
		versionEntries())

	It("104: names the network of a holder on another network of the driver", func() {
		first := bridgeNet("names", "10.84.0.0/24")
		res, err := w.add(first, attachment{id: "web-ctr", netns: newNS(),
			args: [][2]string{{"CNM_ENDPOINT", "web"}}, caps: publish(8091, 80)})
		Expect(err).NotTo(HaveOccurred())
		r, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		holder := w.listedWith(r.IPs[0].Address.IP.String())
		Expect(holder.Name).To(Equal("web"))

		second := bridgeNet("names2", "10.84.1.0/24")
		second.extra = map[string]any{"bridge": "cnm-names2"}
		_, err = w.add(second, attachment{id: "api-ctr", netns: newNS(), caps: publish(8091, 80)})
		expectNamesHolder(err, cnm.CodePortInUse, holder)
		Expect(err.Error()).To(ContainSubstring("already published by endpoint web of network names"))
	})
})

var _ = Describe(`"podNamespace": the namespace of "endpointIdentity": "pod" when CNI_ARGS has none`, func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("podman", "10.84.2.0/24")
		n.extra = map[string]any{"endpointIdentity": "pod", "podNamespace": "podman"}
	})

	// What podman 4 sends: the container's name, no namespace.
	podmanArgs := func(name string) [][2]string {
		return [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", name}}
	}

	DescribeTable("gives a container re-created under the same name its address and MAC back",
		func(version string) {
			n.version = version
			first := attachment{id: "ctr-1", netns: newNS(), args: podmanArgs("web")}
			res, err := w.add(n, first)
			Expect(err).NotTo(HaveOccurred())
			r, err := current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			ip := r.IPs[0].Address.IP.String()
			ep := w.listedWith(ip)
			Expect(ep.Name).To(Equal("podman/web/eth0"))
			Expect(w.del(n, first)).To(Succeed())

			again := attachment{id: "ctr-2", netns: newNS(), args: podmanArgs("web")}
			res, err = w.add(n, again)
			Expect(err).NotTo(HaveOccurred())
			r, err = current.NewResultFromResult(res)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.IPs[0].Address.IP.String()).To(Equal(ip))
			link, _ := linkIn(again.netns, "eth0")
			Expect(link).NotTo(BeNil())
			Expect(link.Attrs().HardwareAddr.String()).To(Equal(ep.MAC))
		},
		versionEntries())

	It("is overridden by a K8S_POD_NAMESPACE the runtime sends", func() {
		res, err := w.add(n, attachment{id: "ctr-1", netns: newNS(),
			args: [][2]string{{"K8S_POD_NAMESPACE", "prod"}, {"K8S_POD_NAME", "web"}}})
		Expect(err).NotTo(HaveOccurred())
		r, err := current.NewResultFromResult(res)
		Expect(err).NotTo(HaveOccurred())
		Expect(w.listedWith(r.IPs[0].Address.IP.String()).Name).To(Equal("prod/web/eth0"))
	})

	It("is none by default: an ADD without K8S_POD_NAMESPACE is refused with error 4 and changes nothing", func() {
		n.extra = map[string]any{"endpointIdentity": "pod"}
		_, err := w.add(n, attachment{id: "ctr-1", netns: newNS(), args: podmanArgs("web")})
		Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidEnvironmentVariables)))
		Expect(err.Error()).To(ContainSubstring("K8S_POD_NAMESPACE"))
		Expect(err.Error()).To(ContainSubstring("podNamespace"))
		Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
		Expect(w.hostLinks("veth")).To(BeEmpty())
	})

	It("is refused with error 7 naming it when it is not a valid name segment", func() {
		n.extra = map[string]any{"endpointIdentity": "pod", "podNamespace": "../etc"}
		_, err := w.add(n, attachment{id: "ctr-1", netns: newNS(), args: podmanArgs("web")})
		Expect(cniCode(err)).To(Equal(uint(types.ErrInvalidNetworkConfig)))
		Expect(err.Error()).To(ContainSubstring("podNamespace"))
		Expect(w.dump()).To(BeEmpty())
	})
})
