package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/test/etcdtest"
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
			plugin := conf["plugins"].([]any)[0].(map[string]any)
			// The test's own store, not the node's.
			plugin["dataDir"] = w.dataDir
			if plugin["type"] == records.NetworkType {
				// A global network: the test's own cluster store, and a
				// host with an underlay the VTEP is found on.
				useTestCluster(plugin)
				giveUnderlay(w.hostNS)
			}
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

// useTestCluster points a global network's plugin configuration at a
// real etcd of the test's, with TLS when the example names certificate
// files (their keys kept, their paths the test cluster's).
func useTestCluster(plugin map[string]any) {
	GinkgoHelper()
	cluster, _ := plugin["cluster"].(map[string]any)
	Expect(cluster).NotTo(BeNil(), "a global network's example has a cluster section")
	etcd, _ := cluster["etcd"].(map[string]any)
	Expect(etcd).NotTo(BeNil(), "a global network's example has cluster.etcd")
	_, tls := etcd["certFile"]
	c := etcdtest.StartForTest(GinkgoT(), etcdtest.Options{TLS: tls})
	etcd["endpoints"] = c.Endpoints
	if tls {
		etcd["certFile"], etcd["keyFile"], etcd["trustedCAFile"] = c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile
	}
}

// giveUnderlay gives host an underlay as a node has: eth0, a veth whose
// peer is in a namespace of its own, with an address and the default
// route, which is where the overlay finds its VTEP by default.
func giveUnderlay(host ns.NetNS) {
	GinkgoHelper()
	peer := newNS()
	Expect(host.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "ul0",
			PeerNamespace: netlink.NsFd(int(peer.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add eth0: %w", err)
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("192.168.79.1/24")
		if err := netlink.AddrAdd(eth0, addr); err != nil {
			return fmt.Errorf("address eth0: %w", err)
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("192.168.79.254")})
	})).To(Succeed())
	Expect(peer.Do(func(ns.NetNS) error {
		ul, err := netlink.LinkByName("ul0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(ul)
	})).To(Succeed())
}
