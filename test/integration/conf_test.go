package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("the example conflists of conf/", func() {
	files, _ := filepath.Glob("../../conf/*.conflist")
	It("are there", func() { Expect(files).NotTo(BeEmpty()) })
	It("can all be used one after the other on one node and one store: no two share a network name, bridge or subnet", func() {
		all, _ := filepath.Glob("../../conf/*/*.conflist")
		all = append(all, files...)
		w := newWorld()
		ctx := context.Background()
		for i, f := range all {
			list := exampleList(f, w.dataDir)
			if !usesPlugin(list, "cnm-bridge") {
				continue
			}
			a := attachment{id: fmt.Sprintf("conf-%d", i), netns: newNS(),
				args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", fmt.Sprintf("conf-%d", i)}}}
			Expect(w.hostNS.Do(func(ns.NetNS) error {
				_, err := w.cni.AddNetworkList(ctx, list, a.rt())
				return err
			})).To(Succeed(), f)
		}
	})
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

// exampleList reads an example conflist with its store put in dataDir.
func exampleList(path, dataDir string) *libcni.NetworkConfigList {
	GinkgoHelper()
	raw, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	var conf map[string]any
	Expect(json.Unmarshal(raw, &conf)).To(Succeed())
	for _, p := range conf["plugins"].([]any) {
		if pc := p.(map[string]any); strings.HasPrefix(fmt.Sprint(pc["type"]), "cnm-") {
			pc["dataDir"] = dataDir
		}
	}
	raw, _ = json.Marshal(conf)
	list, err := libcni.ConfListFromBytes(raw)
	Expect(err).NotTo(HaveOccurred())
	return list
}

// usesPlugin reports whether a conflist runs the plugin of type typ.
func usesPlugin(list *libcni.NetworkConfigList, typ string) bool {
	for _, p := range list.Plugins {
		if p.Network.Type == typ {
			return true
		}
	}
	return false
}
