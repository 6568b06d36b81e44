package cluster_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/etcdtest"
)

func TestCluster(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Cluster Suite")
}

// binDir holds the plugins under test, built once for the suite: the
// global-scope test driver (and its cnmfault build under fault/), and a
// cnmctl that knows the test drivers.
var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	if os.Geteuid() != 0 {
		Fail("the cluster tests need root: they create network namespaces")
	}
	dir, err := os.MkdirTemp("", "cnm-cluster-bin-")
	Expect(err).NotTo(HaveOccurred())
	for _, b := range []struct {
		out  string
		tags []string
		pkgs []string
	}{
		{dir, nil, []string{"github.com/cnmnet/cnmnet/test/testdriver/cnm-testglobal"}},
		{filepath.Join(dir, "fault"), []string{"-tags", "cnmfault"}, []string{"github.com/cnmnet/cnmnet/test/testdriver/cnm-testglobal"}},
		{dir, []string{"-tags", "cnmtestdrivers"}, []string{"github.com/cnmnet/cnmnet/cmd/cnmctl"}},
	} {
		args := append(append([]string{"build"}, b.tags...), append([]string{"-o", b.out + "/"}, b.pkgs...)...)
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Run()).To(Succeed())
	}
	_, err = etcdtest.Binary() // built once, before the specs run in parallel
	Expect(err).NotTo(HaveOccurred())
	return []byte(dir)
}, func(dir []byte) {
	binDir = string(dir)
})

var _ = SynchronizedAfterSuite(func() {}, func() {
	Expect(os.RemoveAll(binDir)).To(Succeed())
})
