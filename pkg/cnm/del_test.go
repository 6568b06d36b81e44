package cnm_test

import (
	"time"

	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

var _ = Describe("LoadNetConfForDel", func() {
	DescribeTable("reads what identifies the network past what only ADD needs",
		func(fields map[string]any) {
			_, err := cnm.LoadNetConf(netConf(fields))
			Expect(err).To(HaveOccurred(), "ADD refuses it")
			conf, err := cnm.LoadNetConfForDel(netConf(fields))
			Expect(err).NotTo(HaveOccurred())
			Expect(conf.Name).To(Equal("net1"))
			Expect(conf.Type).To(Equal("cnm-null"))
			Expect(conf.CNIVersion).To(Equal("1.1.0"))
			Expect(conf.DataDir).To(Equal(cnm.DefaultDataDir))
			Expect(conf.PrevResult).To(BeNil())
		},
		Entry("an ipam section that is not an object", map[string]any{"ipam": "host-local"}),
		Entry("ipam ranges that are not a list", map[string]any{"ipam": map[string]any{"type": "cnm", "ranges": "10.0.0.0/24"}}),
		Entry("an ipam subnet that is not one", map[string]any{"ipam": map[string]any{"subnet": "10.0.0.300/24"}}),
		Entry("a reservationTTL that is no duration", map[string]any{"reservationTTL": "tomorrow"}),
		Entry("a negative reservationTTL", map[string]any{"reservationTTL": "-1h"}),
		Entry("an endpointIdentity it does not know", map[string]any{"endpointIdentity": "vm"}),
		Entry("a prevResult that is not a result", map[string]any{"prevResult": map[string]any{"ips": "10.0.0.2"}}),
		Entry("a negative maxPersistentEndpoints", map[string]any{"maxPersistentEndpoints": -1}),
	)

	It("keeps a sound ipam section and reservationTTL", func() {
		conf, err := cnm.LoadNetConfForDel(netConf(map[string]any{
			"dataDir": "/run/cnm", "reservationTTL": "2h", "ipam": map[string]any{"type": "host-local"},
		}))
		Expect(err).NotTo(HaveOccurred())
		Expect(conf.DataDir).To(Equal("/run/cnm"))
		Expect(time.Duration(conf.ReservationTTL)).To(Equal(2 * time.Hour))
		Expect(conf.IPAMConf).NotTo(BeNil())
		Expect(conf.IPAMConf.Type).To(Equal("host-local"))
	})

	DescribeTable("refuses what cannot name the network or its store, naming the field",
		func(fields map[string]any, code uint, field string) {
			_, err := cnm.LoadNetConfForDel(netConf(fields))
			expectCNIError(err, code, field)
		},
		Entry("no name", map[string]any{"name": nil}, uint(types.ErrInvalidNetworkConfig), "name"),
		Entry("a name climbing out", map[string]any{"name": "../x"}, uint(types.ErrInvalidNetworkConfig), "name"),
		Entry("a name that is not a string", map[string]any{"name": 5}, uint(types.ErrInvalidNetworkConfig), "name"),
		Entry("a relative dataDir", map[string]any{"dataDir": "var/lib"}, uint(types.ErrInvalidNetworkConfig), "dataDir"),
		Entry("a dataDir that is not a string", map[string]any{"dataDir": true}, uint(types.ErrInvalidNetworkConfig), "dataDir"),
	)

	It("refuses a configuration that is not JSON with error 6", func() {
		_, err := cnm.LoadNetConfForDel([]byte(`{"name": "net1"`))
		expectCNIError(err, types.ErrDecodingFailure, "decode")
	})
})

var _ = Describe("ParseArgsForDel", func() {
	It("keeps the well-formed pairs of CNI_ARGS that ParseArgs refuses, and refuses nothing", func() {
		for _, s := range []string{"MAC=01:00:5e:00:00:01", "IP=notanip", "CNM_ENDPOINT=../x", "novalue", ";;=x;"} {
			_, err := cnm.ParseArgs(s)
			Expect(err).To(HaveOccurred(), s)
		}
		a := cnm.ParseArgsForDel("IP=notanip;novalue;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;=x")
		Expect(a.All).To(Equal(map[string]string{"IP": "notanip", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p"}))
		Expect(a.PodNamespace).To(Equal("ns"))
		Expect(a.IPs).To(BeNil())
	})
})
