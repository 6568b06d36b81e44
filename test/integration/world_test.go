package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/test/cniexec"
	"github.com/cnmnet/cnmnet/test/testns"
)

// allVersions are the CNI versions every plugin must answer in.
var allVersions = cniexec.Versions

// world is one test's "host" namespace, where the plugins run, its store
// and libcni's cache. Everything is removed when the test ends.
type world struct {
	hostNS   ns.NetNS
	dataDir  string
	cacheDir string
	cni      *libcni.CNIConfig
}

func newWorld() *world {
	w := &world{dataDir: GinkgoT().TempDir(), cacheDir: GinkgoT().TempDir()}
	w.hostNS = newNS()
	// A host's loopback is up; a new namespace's is not.
	testns.UpLoopback(w.hostNS)
	w.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, w.cacheDir, nil)
	return w
}

// newNS makes a network namespace that goes when the test ends.
func newNS() ns.NetNS { return testns.New() }

// removeNS removes a namespace before the test ends.
func removeNS(n ns.NetNS) { Expect(testns.Remove(n)).To(Succeed()) }

// network describes a network configuration for a test.
type network struct {
	name, typ, version string
	ipam               map[string]any
	extra              map[string]any
	caps               map[string]bool
}

func ipamRanges(subnets ...string) map[string]any {
	var sets []any
	for _, s := range subnets {
		sets = append(sets, []any{map[string]any{"subnet": s}})
	}
	return map[string]any{"type": "cnm", "ranges": sets}
}

// pluginConf is the plugin configuration object of n.
func (w *world) pluginConf(n network) map[string]any {
	p := map[string]any{"type": n.typ, "dataDir": w.dataDir}
	if n.ipam != nil {
		p["ipam"] = n.ipam
	}
	for k, v := range n.extra {
		p[k] = v
	}
	if n.caps != nil {
		p["capabilities"] = n.caps
	}
	return p
}

func (w *world) list(n network) *libcni.NetworkConfigList {
	raw, err := json.Marshal(map[string]any{
		"cniVersion": n.version, "name": n.name, "plugins": []any{w.pluginConf(n)},
	})
	Expect(err).NotTo(HaveOccurred())
	l, err := libcni.ConfListFromBytes(raw)
	Expect(err).NotTo(HaveOccurred())
	return l
}

// stdin is the configuration a runtime hands the plugin for n.
func (w *world) stdin(n network, more map[string]any) []byte {
	p := w.pluginConf(n)
	p["name"], p["cniVersion"] = n.name, n.version
	for k, v := range more {
		p[k] = v
	}
	raw, err := json.Marshal(p)
	Expect(err).NotTo(HaveOccurred())
	return raw
}

// attachment is one container's interface on a network.
type attachment struct {
	id, ifname string
	netns      ns.NetNS
	args       [][2]string
	caps       map[string]any
}

func (a attachment) rt() *libcni.RuntimeConf {
	path := ""
	if a.netns != nil {
		path = a.netns.Path()
	}
	ifname := a.ifname
	if ifname == "" {
		ifname = "eth0"
	}
	return &libcni.RuntimeConf{ContainerID: a.id, NetNS: path, IfName: ifname, Args: a.args, CapabilityArgs: a.caps}
}

func (w *world) add(n network, a attachment) (types.Result, error) {
	var res types.Result
	err := w.hostNS.Do(func(ns.NetNS) error {
		var err error
		res, err = w.cni.AddNetworkList(context.Background(), w.list(n), a.rt())
		return err
	})
	return res, err
}

func (w *world) del(n network, a attachment) error {
	return w.hostNS.Do(func(ns.NetNS) error {
		return w.cni.DelNetworkList(context.Background(), w.list(n), a.rt())
	})
}

func (w *world) check(n network, a attachment) error {
	return w.hostNS.Do(func(ns.NetNS) error {
		return w.cni.CheckNetworkList(context.Background(), w.list(n), a.rt())
	})
}

func (w *world) status(n network) error {
	return w.hostNS.Do(func(ns.NetNS) error {
		return w.cni.GetStatusNetworkList(context.Background(), w.list(n))
	})
}

// invocation is one raw exec of a plugin, as a runtime does it.
type invocation struct {
	command, containerID, netns, ifname, args string
	stdin                                     []byte
	env                                       []string
}

// exec runs a plugin binary in the host namespace and returns its
// stdout, or the CNI error it printed.
func (w *world) exec(plugin string, inv invocation) ([]byte, error) {
	GinkgoHelper()
	out, _, err := w.execStderr(plugin, inv)
	return out, err
}

// execStderr is exec that returns the plugin's stderr too.
func (w *world) execStderr(plugin string, inv invocation) ([]byte, string, error) {
	GinkgoHelper()
	return cniexec.Run(w.hostNS, filepath.Join(binDir, plugin), cniexec.Invocation{
		Command: inv.command, ContainerID: inv.containerID, NetNS: inv.netns, IfName: inv.ifname, Args: inv.args,
		Path: binDir, Env: inv.env, Stdin: inv.stdin})
}

// dump is the whole store as key → value, without creating it.
func (w *world) dump() map[string]string {
	kv := map[string]string{}
	if _, err := os.Stat(filepath.Join(w.dataDir, store.FileName)); errors.Is(err, os.ErrNotExist) {
		return kv
	}
	s, err := store.Open(w.dataDir, store.Options{})
	Expect(err).NotTo(HaveOccurred())
	defer s.Close()
	Expect(s.View(func(tx store.Tx) error {
		return tx.Scan("", func(k string, v []byte) error {
			kv[k] = string(v)
			return nil
		})
	})).To(Succeed())
	return kv
}

// keysUnder lists the store's keys with the given prefix.
func keysUnder(kv map[string]string, prefix string) []string {
	var keys []string
	for k := range kv {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	return keys
}

// hostLinks lists the links in the host namespace whose names start with prefix.
func (w *world) hostLinks(prefix string) []string {
	var names []string
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, prefix) {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})).To(Succeed())
	return names
}

// link returns the named link in n with its addresses, or nil.
func linkIn(n ns.NetNS, name string) (netlink.Link, []netlink.Addr) {
	var link netlink.Link
	var addrs []netlink.Addr
	Expect(n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		link = l
		addrs, err = netlink.AddrList(l, netlink.FAMILY_ALL)
		return err
	})).To(Succeed())
	return link, addrs
}

// cniCode returns the code of a CNI error, or 0.
func cniCode(err error) uint { return cniexec.Code(err) }
