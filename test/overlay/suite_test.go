package overlay_test

import (
	"os"
	"os/exec"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/etcdtest"
)

func TestOverlay(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Overlay Suite")
}

// binDir holds the cnm-overlay and cnmctl binaries under test, built once.
var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	if os.Geteuid() != 0 {
		Fail("the overlay tests need root: they create network namespaces")
	}
	dir, err := os.MkdirTemp("", "cnm-overlay-bin-")
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/cnmnet/cnmnet/cmd/cnm-overlay", "github.com/cnmnet/cnmnet/cmd/cnmctl")
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed())
	_, err = etcdtest.Binary() // built once, before the specs run
	Expect(err).NotTo(HaveOccurred())
	return []byte(dir)
}, func(dir []byte) {
	binDir = string(dir)
})

var _ = SynchronizedAfterSuite(func() {}, func() {
	Expect(os.RemoveAll(binDir)).To(Succeed())
})
