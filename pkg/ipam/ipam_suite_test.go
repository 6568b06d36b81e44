package ipam_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

func TestIPAM(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "IPAM Suite")
}

// openStore opens a real store in a fresh temporary directory.
func openStore() *store.FileStore {
	s, err := store.Open(GinkgoT().TempDir(), store.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(s.Close)
	return s
}

// mustParse parses a network config whose ipam section is ipamJSON.
func mustParse(ipamJSON string) *ipam.Config {
	cfg, err := ipam.ParseConfig([]byte(netConf(ipamJSON)))
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg).NotTo(BeNil())
	return cfg
}

func netConf(ipamJSON string) string {
	return `{"cniVersion":"1.1.0","name":"net1","type":"bridge","ipam":` + ipamJSON + `}`
}
