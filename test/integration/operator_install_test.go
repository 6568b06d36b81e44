package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("make install and make uninstall", func() {
	It("stage the binaries under DESTDIR with the documented variables, and uninstall leaves nothing", func() {
		if _, err := exec.LookPath("make"); err != nil {
			Skip("make is not installed")
		}
		root, err := filepath.Abs("../..")
		Expect(err).NotTo(HaveOccurred())
		dest := GinkgoT().TempDir()
		vars := []string{"DESTDIR=" + dest, "CNI_BIN_DIR=/usr/libexec/cni", "BIN_DIR=/usr/bin"}
		make := func(target string) {
			GinkgoHelper()
			cmd := exec.Command("make", append([]string{"-C", root, target}, vars...)...)
			out, err := cmd.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "make %s: %s", target, out)
		}
		make("install")
		for _, f := range []string{"usr/libexec/cni/cnm-null", "usr/libexec/cni/cnm-bridge", "usr/libexec/cni/cnm-overlay", "usr/libexec/cni/cnm-remote", "usr/bin/cnmctl", "usr/bin/cnm-overlayd"} {
			st, err := os.Stat(filepath.Join(dest, f))
			Expect(err).NotTo(HaveOccurred(), f)
			Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o755)), f)
		}
		out, err := exec.Command(filepath.Join(dest, "usr/bin/cnmctl"), "version").Output()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(out)).To(MatchRegexp(`^cnmctl \S+ \(commit [0-9a-f]{40}\)\n$`), "make stamps the commit")

		make("uninstall")
		var left []string
		Expect(filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				left = append(left, p)
			}
			return err
		})).To(Succeed())
		Expect(left).To(BeEmpty())
	})
})
