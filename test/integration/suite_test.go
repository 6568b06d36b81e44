package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testbin"
)

func TestIntegration(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Integration Suite")
}

// binDir holds the plugins under test, built once for the suite, plus
// host-local and static for delegated IPAM.
var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	if os.Geteuid() != 0 {
		Fail("the integration tests need root: they create network namespaces")
	}
	dir, err := os.MkdirTemp("", "cnm-bin-")
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/cnmnet/cnmnet/cmd/cnm-null",
		"github.com/cnmnet/cnmnet/cmd/cnm-bridge",
		"github.com/cnmnet/cnmnet/cmd/cnm-overlay",
		"github.com/cnmnet/cnmnet/cmd/cnmctl",
		"github.com/cnmnet/cnmnet/test/testdriver/cnm-testveth",
	)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed())
	// The same plugins with the fault points live, for the crash tests,
	// and the full-file-system runner.
	cmd = exec.Command("go", "build", "-tags", "cnmfault", "-o", filepath.Join(dir, "fault")+"/",
		"github.com/cnmnet/cnmnet/cmd/cnm-bridge", "github.com/cnmnet/cnmnet/test/fullfs")
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed())
	// The reference plugins of the plugins module go.mod requires: the
	// current ones, with CNI 1.1's GC and STATUS.
	for _, ref := range []string{"host-local", "static", "portmap", "bandwidth", "tuning", "firewall"} {
		_, err = testbin.Build(ref, dir)
		Expect(err).NotTo(HaveOccurred())
	}
	return []byte(dir)
}, func(dir []byte) {
	binDir = string(dir)
})

var _ = SynchronizedAfterSuite(func() {}, func() {
	Expect(os.RemoveAll(binDir)).To(Succeed())
})

// cnitoolPath is the cnitool that `make test` builds into bin/.
func cnitoolPath() string {
	dir := os.Getenv("CNM_BIN_DIR")
	if dir == "" {
		return ""
	}
	p := filepath.Join(dir, "cnitool")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
