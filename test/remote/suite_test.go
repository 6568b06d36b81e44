package remote_test

import (
	"os"
	"os/exec"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestRemote(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Remote Suite")
}

// binDir holds cnm-remote, built once for the suite.
var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	if os.Geteuid() != 0 {
		Fail("the remote tests need root: they create network namespaces")
	}
	dir, err := os.MkdirTemp("", "cnm-remote-bin-")
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/cnmnet/cnmnet/cmd/cnm-remote")
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed())
	return []byte(dir)
}, func(dir []byte) {
	binDir = string(dir)
})

var _ = SynchronizedAfterSuite(func() {}, func() {
	Expect(os.RemoveAll(binDir)).To(Succeed())
})
