package remote_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// cnmctlBinary is cnmctl, built once per test process next to cnm-remote.
var cnmctlBinary struct {
	once sync.Once
	path string
	err  error
}

func cnmctlPath() string {
	GinkgoHelper()
	cnmctlBinary.once.Do(func() {
		cnmctlBinary.path = filepath.Join(binDir, "cnmctl")
		cmd := exec.Command("go", "build", "-o", cnmctlBinary.path, "github.com/cnmnet/cnmnet/cmd/cnmctl")
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		cnmctlBinary.err = cmd.Run()
	})
	Expect(cnmctlBinary.err).NotTo(HaveOccurred(), "build cnmctl")
	return cnmctlBinary.path
}

// finding is one of cnmctl check's findings, as -o json prints them.
type finding struct {
	Network  string `json:"network"`
	Kind     string `json:"kind"`
	Object   string `json:"object"`
	Problem  string `json:"problem"`
	Repaired bool   `json:"repaired"`
}

// cnmctlCheck runs cnmctl check (args before it: the store's flags) in
// namespace n and returns its findings and exit code.
func cnmctlCheck(n ns.NetNS, repair bool, args ...string) ([]finding, int) {
	GinkgoHelper()
	args = append(args, "-o", "json", "check")
	if repair {
		args = append(args, "--repair")
	}
	var out, stderr bytes.Buffer
	var err error
	Expect(n.Do(func(ns.NetNS) error {
		cmd := exec.Command(cnmctlPath(), args...)
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err = cmd.Run()
		return nil
	})).To(Succeed())
	fmt.Fprint(GinkgoWriter, stderr.String())
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		Expect(err).NotTo(HaveOccurred())
	}
	var found []finding
	Expect(json.Unmarshal(out.Bytes(), &found)).To(Succeed(), "cnmctl check printed %q (stderr %q)", out.String(), stderr.String())
	return found, code
}

// owed are the findings of calls owed to a plugin, by method.
func owed(found []finding) []string {
	var out []string
	for _, f := range found {
		if f.Kind == "plugin" && strings.Contains(f.Problem, "owed to plugin") {
			out = append(out, f.Object[strings.LastIndex(f.Object, "/")+1:])
		}
	}
	return out
}

func cnmctl(n ns.NetNS, args ...string) (string, error) {
	GinkgoHelper()
	var out []byte
	var err error
	Expect(n.Do(func(ns.NetNS) error {
		out, err = exec.Command(cnmctlPath(), args...).CombinedOutput()
		return nil
	})).To(Succeed())
	return string(out), err
}

var _ = Describe("cnmctl check of a remote network", func() {
	It("lists the calls owed to a plugin that was down, and finishes them with --repair once it is back", func() {
		w := newWorld()
		c := newContainer("c")
		_, err := w.add("1.1.0", c, "", nil)
		Expect(err).NotTo(HaveOccurred())
		w.server.stop()
		_, err = w.del("1.1.0", c, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(w.plugin.Endpoints()).To(Equal(1), "not told yet")

		found, code := cnmctlCheck(w.hostNS, false, "--data-dir", w.dataDir)
		Expect(code).To(Equal(3), "problems left: %+v", found)
		Expect(owed(found)).To(ConsistOf("NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"))
		for _, f := range found {
			Expect(f.Network).To(Equal("rnet"))
			Expect(f.Problem).To(ContainSubstring(w.server.sock))
		}

		out, err := cnmctl(w.hostNS, "--data-dir", w.dataDir, "check", "--repair")
		Expect(err).To(HaveOccurred(), "the plugin is still down: %s", out)
		Expect(out).To(ContainSubstring("plugin unavailable"))
		Expect(w.plugin.Endpoints()).To(Equal(1))

		w.server.start()
		found, code = cnmctlCheck(w.hostNS, true, "--data-dir", w.dataDir)
		Expect(code).To(BeZero(), "%+v", found)
		Expect(owed(found)).To(HaveLen(3))
		for _, f := range found {
			Expect(f.Repaired).To(BeTrue(), "%+v", f)
		}
		Expect(w.plugin.Endpoints()).To(BeZero(), "told")
		Expect(w.plugin.Calls()).To(ContainElements("RevokeExternalConnectivity", "Leave", "DeleteEndpoint"))
		Expect(vethsIn(w.hostNS)).To(BeEmpty())

		found, code = cnmctlCheck(w.hostNS, false, "--data-dir", w.dataDir)
		Expect(code).To(BeZero())
		Expect(found).To(BeEmpty())
	})

	Context("of a global-scope plugin's network, on the cluster store", func() {
		var c *gcluster
		var a, b *ghost
		var flags func(h *ghost) []string
		BeforeEach(func() {
			c = newGCluster(2)
			a, b = c.hosts[0], c.hosts[1]
			flags = func(h *ghost) []string {
				return []string{"--etcd-endpoints", strings.Join(c.etcd.Endpoints, ","), "--etcd-prefix", gprefix, "--host", h.name}
			}
		})

		It("lists on the host that owes them the calls its plugin did not get, and finishes them there", func() {
			ca, cb := newContainer("ca"), newContainer("cb")
			_, err := a.add("1.1.0", ca, "")
			Expect(err).NotTo(HaveOccurred())
			_, err = b.add("1.1.0", cb, "")
			Expect(err).NotTo(HaveOccurred())
			a.stop()
			_, err = a.del(ca, "")
			Expect(err).NotTo(HaveOccurred())

			found, code := cnmctlCheck(a.w.hostNS, false, flags(a)...)
			Expect(code).To(Equal(3), "%+v", found)
			Expect(owed(found)).To(ConsistOf("NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"))
			found, code = cnmctlCheck(b.w.hostNS, false, flags(b)...)
			Expect(code).To(BeZero(), "B owes nothing, and its endpoint is its own: %+v", found)
			Expect(found).To(BeEmpty())

			a.start()
			found, code = cnmctlCheck(a.w.hostNS, true, flags(a)...)
			Expect(code).To(BeZero(), "%+v", found)
			Expect(c.fabric.Endpoints()).To(Equal(1), "B's endpoint is left alone")
			Expect(vethsIn(b.w.hostNS)).To(HaveLen(1))
		})

		It("removes the network with cnmctl network rm: the plugin of that host is told DeleteNetwork, and that the host goes", func() {
			ca := newContainer("ca")
			_, err := a.add("1.1.0", ca, "")
			Expect(err).NotTo(HaveOccurred())
			_, err = a.del(ca, "")
			Expect(err).NotTo(HaveOccurred())
			out, err := cnmctl(a.w.hostNS, append(flags(a), "network", "rm", "gnet")...)
			Expect(err).NotTo(HaveOccurred(), "%s", out)
			Expect(c.fabric.Calls()).To(ContainElements(a.name+" DeleteNetwork", a.name+" DiscoverDelete 1 "+a.addr+" self=true"))
			Expect(c.keys("networks/")).To(BeEmpty())
			Expect(c.keys("hosts/" + a.name + "/hostdrivers/")).To(BeEmpty())
			Expect(linksIn(a.w.hostNS)).To(BeEmpty(), "the plugin's bridge is gone")
			_, err = os.Stat(filepath.Join(a.w.dataDir, "state.db"))
			Expect(os.IsNotExist(err)).To(BeTrue())
		})
	})
})
