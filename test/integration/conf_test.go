package integration_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("the example conflists of conf/", func() {
	files, _ := filepath.Glob("../../conf/*.conflist")
	It("are there", func() { Expect(files).NotTo(BeEmpty()) })
	for _, f := range files {
		It("work as written: "+filepath.Base(f), func() {
			w := newWorld()
			raw, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			var conf map[string]any
			Expect(json.Unmarshal(raw, &conf)).To(Succeed())
			// The test's own store, not the node's.
			conf["plugins"].([]any)[0].(map[string]any)["dataDir"] = w.dataDir
			raw, _ = json.Marshal(conf)
			list, err := libcni.ConfListFromBytes(raw)
			Expect(err).NotTo(HaveOccurred())
			a := attachment{id: "conf", netns: newNS(),
				args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "conf-0"}}}
			ctx := context.Background()
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				if _, err := w.cni.AddNetworkList(ctx, list, a.rt()); err != nil {
					return err
				}
				if testutils.SpecVersionHasCHECK(list.CNIVersion) {
					if err := w.cni.CheckNetworkList(ctx, list, a.rt()); err != nil {
						return err
					}
				}
				return w.cni.DelNetworkList(ctx, list, a.rt())
			})).To(Succeed())
		})
	}
})
