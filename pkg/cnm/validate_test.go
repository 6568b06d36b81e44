package cnm_test

import (
	"github.com/containernetworking/cni/pkg/types"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/drivers/bridge"
	"github.com/cnmnet/cnmnet/pkg/drivers/null"
)

// suiteDrivers are the drivers of the suite's plugins, without a store.
func suiteDrivers() *cnm.Drivers {
	GinkgoHelper()
	ds := cnm.NewDrivers()
	Expect(null.Register(ds)).To(Succeed())
	Expect(bridge.Register(ds)).To(Succeed())
	return ds
}

var _ = Describe("configuration keys", func() {
	It("are CNI's and the core's", func() {
		Expect(cnm.ConfigKeys()).To(ContainElements("cniVersion", "name", "type", "capabilities", "runtimeConfig", "args",
			"prevResult", "dns", "ipam", "dataDir", "endpointIdentity", "podNamespace", "reservationTTL", "maxPersistentEndpoints"))
	})

	DescribeTable("UnknownKeys names what nothing reads, with the likely key",
		func(typ string, fields map[string]any, want ...confcheck.Unknown) {
			fields["type"] = typ
			ds := suiteDrivers()
			got := cnm.UnknownKeys(netConf(fields), ds.Driver(typ))
			if len(want) == 0 {
				Expect(got).To(BeEmpty())
				return
			}
			Expect(got).To(Equal(want))
		},
		Entry("a bridge network's keys", "cnm-bridge", map[string]any{"bridge": "cnm0", "ipMasq": false, "hairpinMode": true,
			"capabilities": map[string]any{"ips": true}, "cni.dev/attachments": []any{}, "dataDir": "/run/x",
			"ipam": map[string]any{"type": "cnm", "ranges": []any{[]any{map[string]any{"subnet": "10.1.0.0/24"}}}}}),
		Entry("misspelt bridge keys", "cnm-bridge", map[string]any{"ipMasg": false, "hairpin": true},
			confcheck.Unknown{Key: "hairpin", Suggestion: "hairpinMode"},
			confcheck.Unknown{Key: "ipMasg", Suggestion: "ipMasq"}),
		Entry("a bridge key on a null network", "cnm-null", map[string]any{"mtu": 1500},
			confcheck.Unknown{Key: "mtu"}),
		Entry("core keys misspelt", "cnm-null", map[string]any{"reservationTtl": "1h", "endpointIdentiy": "pod"},
			confcheck.Unknown{Key: "endpointIdentiy", Suggestion: "endpointIdentity"}),
		Entry("a misspelt range key", "cnm-bridge", map[string]any{"ipam": map[string]any{
			"ranges": []any{[]any{map[string]any{"subnet": "10.1.0.0/24", "rangeStrat": "10.1.0.5"}}}}},
			confcheck.Unknown{Key: "ipam.ranges[0][0].rangeStrat", Suggestion: "rangeStart"}),
		Entry("a delegated ipam section's keys are its plugin's", "cnm-bridge", map[string]any{"ipam": map[string]any{
			"type": "host-local", "subnett": "10.1.0.0/24"}}),
	)

	It("checks only the ipam section of a driver that does not declare its keys", func() {
		Expect(cnm.UnknownKeys(netConf(map[string]any{"whatever": 1, "ipam": map[string]any{"subnett": "x"}}), nil)).
			To(Equal([]confcheck.Unknown{{Key: "ipam.subnett", Suggestion: "subnet"}}))
	})

	DescribeTable("CheckConfig refuses what ADD refuses, with the same code and the key named",
		func(fields map[string]any, code uint, msg string) {
			if _, ok := fields["type"]; !ok {
				fields["type"] = "cnm-bridge"
			}
			_, err := cnm.CheckConfig(netConf(fields), suiteDrivers())
			expectCNIError(err, code, msg)
		},
		Entry("reservationTTL in words", map[string]any{"reservationTTL": "1 day"}, types.ErrInvalidNetworkConfig,
			`reservationTTL: "1 day" is not a duration such as "24h" or a number of seconds`),
		Entry("mtu in a string (the driver's key)", map[string]any{"mtu": "1500"}, types.ErrInvalidNetworkConfig,
			`mtu: want a number, got "1500"`),
		Entry("a bridge name with a #", map[string]any{"bridge": "br#x"}, types.ErrInvalidNetworkConfig, `bridge: "br#x"`),
		Entry("ranges not nested", map[string]any{"ipam": map[string]any{"ranges": []any{map[string]any{"subnet": "10.1.0.0/24"}}}},
			types.ErrInvalidNetworkConfig, `ipam.ranges: want a list of range sets`),
		Entry("a type without a driver", map[string]any{"type": "cnm-brige"}, types.ErrInvalidNetworkConfig,
			`type: no driver for network type "cnm-brige"`),
	)

	It("passes a good configuration and reports its unknown keys", func() {
		unknown, err := cnm.CheckConfig(netConf(map[string]any{"type": "cnm-bridge", "mtu": 1500, "ipMasg": false}), suiteDrivers())
		Expect(err).NotTo(HaveOccurred())
		Expect(unknown).To(Equal([]confcheck.Unknown{{Key: "ipMasg", Suggestion: "ipMasq"}}))
	})

	It("refuses JSON that does not parse as a decoding failure", func() {
		_, err := cnm.CheckConfig([]byte(`{"type": "cnm-bridge",`), suiteDrivers())
		expectCNIError(err, types.ErrDecodingFailure, "not valid JSON")
	})
})
