package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// TestE2E runs the suite when CNM_E2E=1; `go test ./...` skips it.
func TestE2E(t *testing.T) {
	if os.Getenv("CNM_E2E") != "1" {
		t.Skip("end-to-end tests with containerd and podman: set CNM_E2E=1 (make e2e); they need root and install packages")
	}
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	// Stop (and tear down) before go test's own deadline kills the binary
	// with everything still running.
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d) - 45*time.Second; left > time.Minute {
			suiteConfig.Timeout = left
		}
	}
	// go test -v: show the set-up steps and timings written to GinkgoWriter.
	reporterConfig.Verbose = reporterConfig.Verbose || testing.Verbose()
	if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		reporterConfig.NoColor = true // a log file or CI
	}
	RunSpecs(t, "E2E Suite", suiteConfig, reporterConfig)
}

// The suite's shared state, set up by BeforeSuite.
var (
	repoRoot    string // the checkout
	cacheDir    string // crictl and the pause image, kept between runs
	runDir      string // this run's work dir, /tmp/cnm-e2e/run-<pid>
	toolsDir    string // launch and cnitrace
	pluginsDir  string // private copies of the plugins under test
	crictlBin   string
	pauseTar    string
	snapshotter string
	cgroups     *cgroupPlan
	// podmanUnavailable says why the podman scenarios are skipped; "" if
	// they run.
	podmanUnavailable string
	suiteFailed       bool
	setUp             bool // BeforeSuite finished
)

const (
	pauseImage    = "localhost/cnm-e2e/pause:1.0"
	crictlVersion = "v1.34.0"
	workBase      = "/tmp/cnm-e2e"
	refLoopback   = "/usr/lib/cni/loopback"
	defaultCache  = "/var/cache/cnm-e2e"
	hostPort      = 18080
	containerPort = 80
)

var _ = BeforeSuite(func() {
	start := time.Now()
	Expect(os.Geteuid()).To(Equal(0), "the e2e suite needs root: it runs containerd and creates namespaces")
	// Plugins find iptables-restore, containerd finds runc and the shim, on PATH.
	Expect(os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin:"+os.Getenv("PATH"))).To(Succeed())

	var err error
	repoRoot, err = filepath.Abs("../..")
	Expect(err).NotTo(HaveOccurred())
	Expect(filepath.Join(repoRoot, "conf", "containerd")).To(BeADirectory())
	cacheDir = os.Getenv("CNM_E2E_CACHE")
	if cacheDir == "" {
		cacheDir = defaultCache
	}
	Expect(os.MkdirAll(cacheDir, 0o755)).To(Succeed())

	// A run killed before its teardown leaves a run dir with the state
	// needed to finish it.
	reapStaleRuns()

	runDir = filepath.Join(workBase, "run-"+strconv.Itoa(os.Getpid()))
	Expect(os.RemoveAll(runDir)).To(Succeed())
	Expect(os.MkdirAll(runDir, 0o700)).To(Succeed())
	toolsDir = filepath.Join(runDir, "tools")
	pluginsDir = filepath.Join(runDir, "plugins")

	step := func(what string, fn func()) {
		t := time.Now()
		fn()
		fmt.Fprintf(GinkgoWriter, "setup: %s: %s\n", what, time.Since(t).Round(time.Millisecond))
	}
	step("packages", installPackages)
	step("crictl", func() { crictlBin = ensureCrictl() })
	step("helpers and plugins", buildHelpersAndPlugins)
	step("pause image", func() { pauseTar = ensurePauseImage() })
	step("snapshotter", func() { snapshotter = detectSnapshotter() })
	cgroups = planCgroups(os.Getpid())
	Expect(cgroups.save(filepath.Join(runDir, "cgroups.json"))).To(Succeed())
	fmt.Fprintf(GinkgoWriter, "setup: %s; snapshotter %s; pod cgroup parent %s; versions: %s\n",
		time.Since(start).Round(time.Millisecond), snapshotter, cgroups.Parent, versions())
	setUp = true
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		suiteFailed = true
	}
})

var _ = AfterSuite(func() {
	if cgroups != nil {
		cgroups.remove()
	}
	if runDir == "" {
		return
	}
	if suiteFailed || !setUp {
		fmt.Fprintf(GinkgoWriter, "work dir kept for inspection: %s (logs/, cni-trace.tsv, cni-calls/ of each scenario)\n", runDir)
		return
	}
	Expect(removeWorkDir(runDir)).To(Succeed())
})
