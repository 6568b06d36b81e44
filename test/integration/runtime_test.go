package integration_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/null"
	"github.com/cnmnet/cnmnet/pkg/plugin"
	"github.com/cnmnet/cnmnet/test/testdriver"
)

var _ = Describe("cnitool", func() {
	It("adds, checks, garbage-collects and deletes a container on a cnm-null network", func() {
		tool := cnitoolPath()
		if tool == "" {
			Skip("cnitool not built: run the tests with `make test`")
		}
		w := newWorld()
		n := nullNet("1.1.0")
		confDir := GinkgoT().TempDir()
		raw, err := json.Marshal(map[string]any{"cniVersion": n.version, "name": n.name, "plugins": []any{w.pluginConf(n)}})
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(filepath.Join(confDir, "10-null.conflist"), raw, 0o644)).To(Succeed())
		c := newNS()
		run := func(verb string) string {
			var out []byte
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				cmd := exec.Command(tool, verb, n.name, c.Path())
				cmd.Env = []string{"NETCONFPATH=" + confDir, "CNI_PATH=" + binDir}
				var err error
				out, err = cmd.CombinedOutput()
				Expect(err).NotTo(HaveOccurred(), "cnitool %s: %s", verb, out)
				return nil
			})).To(Succeed())
			return string(out)
		}
		out := run("add")
		res := &current.Result{}
		Expect(json.Unmarshal([]byte(out), res)).To(Succeed())
		Expect(res.CNIVersion).To(Equal("1.1.0"))
		Expect(keysUnder(w.dump(), "endpoints/nullnet/")).To(HaveLen(1))
		run("check")
		run("status")
		run("gc") // no valid attachments: the endpoint is collected
		Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
		run("add")
		run("del")
		Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
	})
})

var _ = Describe("in-process", func() {
	DescribeTable("the plugin verbs run without exec and answer in the requested version",
		func(version string) {
			w := newWorld()
			c := newNS()
			for _, p := range []struct {
				n   network
				reg plugin.RegisterFunc
			}{{nullNet(version), null.Register}, {vethNet(version), testdriver.Register}} {
				funcs := plugin.Funcs(p.reg)
				args := &skel.CmdArgs{ContainerID: "inproc", Netns: c.Path(), IfName: "eth0", StdinData: w.stdin(p.n, nil), Path: binDir}
				if p.n.typ == "cnm-null" {
					args.IfName = "null0"
				}
				var res types.Result
				Expect(w.hostNS.Do(func(ns.NetNS) error {
					var err error
					res, _, err = testutils.CmdAddWithArgs(args, func() error { return funcs.Add(args) })
					return err
				})).To(Succeed())
				Expect(res.Version()).To(Equal(version))
				if testutils.SpecVersionHasCHECK(version) {
					var conf map[string]any
					Expect(json.Unmarshal(args.StdinData, &conf)).To(Succeed())
					conf["prevResult"] = res
					checkArgs := *args
					checkArgs.StdinData, _ = json.Marshal(conf)
					Expect(w.hostNS.Do(func(ns.NetNS) error {
						return testutils.CmdCheckWithArgs(&checkArgs, func() error { return funcs.Check(&checkArgs) })
					})).To(Succeed())
				}
				Expect(w.hostNS.Do(func(ns.NetNS) error {
					return testutils.CmdDelWithArgs(args, func() error { return funcs.Del(args) })
				})).To(Succeed())
			}
			Expect(keysUnder(w.dump(), "endpoints/")).To(BeEmpty())
		},
		versionEntries(),
	)
})
