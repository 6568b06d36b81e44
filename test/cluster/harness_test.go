package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/test/cniexec"
	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testdriver"
	"github.com/cnmnet/cnmnet/test/testns"
)

// allVersions are the CNI versions every plugin must answer in.
var allVersions = cniexec.Versions

// plugin is the global-scope test driver's binary.
const plugin = testdriver.GlobalNetworkType

// prefix is the etcd key prefix of the tests' cluster store.
const prefix = "/cnmtest"

// cluster is one spec's etcd and its hosts.
type cluster struct {
	etcd    *etcdtest.Cluster
	timeout string // cluster.etcd.timeout of the configurations
	hosts   []*host
}

// host is one "machine": a network namespace where its plugins run, its
// own data directory, and its name in the cluster store.
type host struct {
	c       *cluster
	name    string
	ns      ns.NetNS
	dataDir string
}

// newCluster starts etcd (opts) and makes n hosts.
func newCluster(n int, opts etcdtest.Options) *cluster {
	GinkgoHelper()
	c := &cluster{etcd: etcdtest.StartForTest(GinkgoT(), opts), timeout: "2s"}
	for i := range n {
		c.hosts = append(c.hosts, c.newHost(fmt.Sprintf("node-%d", i+1)))
	}
	return c
}

func (c *cluster) newHost(name string) *host {
	GinkgoHelper()
	h := &host{c: c, name: name, ns: testns.New(), dataDir: GinkgoT().TempDir()}
	testns.UpLoopback(h.ns)
	return h
}

// etcdSection is the configuration's cluster section.
func (c *cluster) etcdSection() map[string]any {
	etcd := map[string]any{"endpoints": c.etcd.Endpoints, "prefix": prefix, "timeout": c.timeout}
	if t := c.etcd.TLS; t != nil {
		etcd["certFile"], etcd["keyFile"], etcd["trustedCAFile"] = t.CertFile, t.KeyFile, t.CAFile
	}
	return map[string]any{"etcd": etcd}
}

// network is a network configuration for a test.
type network struct {
	name, subnet, version string
	more                  map[string]any
}

// conf is n's configuration as host h's runtime passes it.
func (h *host) conf(n network, more map[string]any) []byte {
	GinkgoHelper()
	v := n.version
	if v == "" {
		v = "1.1.0"
	}
	return cniexec.Config(map[string]any{
		"cniVersion": v, "name": n.name, "type": plugin,
		"dataDir": h.dataDir, "cluster": h.c.etcdSection(), "host": h.name,
		"ipam": map[string]any{"type": "cnm", "subnet": n.subnet},
	}, n.more, more)
}

// invocation is one raw exec of a plugin, as a runtime does it.
type invocation struct {
	command, containerID, netns, ifname, args string
	stdin                                     []byte
	env                                       []string
}

// exec runs the plugin in h's namespace and returns its stdout, or the
// CNI error it printed.
func (h *host) exec(inv invocation) ([]byte, error) {
	GinkgoHelper()
	out, _, err := h.run(filepath.Join(binDir, plugin), inv)
	return out, err
}

// run execs bin in h's namespace with the CNI environment of inv, the
// plugins of binDir on its CNI_PATH.
func (h *host) run(bin string, inv invocation) (stdout []byte, stderr string, err error) {
	GinkgoHelper()
	return cniexec.Run(h.ns, bin, cniexec.Invocation{
		Command: inv.command, ContainerID: inv.containerID, NetNS: inv.netns, IfName: inv.ifname, Args: inv.args,
		Path: binDir, Env: inv.env, Stdin: inv.stdin})
}

// killedRun execs the cnmfault build with CNM_FAULT=point and reports
// whether it died of SIGKILL there.
func (h *host) killedRun(point string, inv invocation) bool {
	GinkgoHelper()
	inv.env = append(inv.env, fault.Env+"="+point)
	out, errOut, err := h.run(filepath.Join(binDir, "fault", plugin), inv)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() && st.Signal() == syscall.SIGKILL {
			return true
		}
	}
	Expect(err).NotTo(HaveOccurred(), "%s at %s: %s %s", inv.command, point, out, errOut)
	return false
}

// container is a sandbox on a host.
type container struct {
	id string
	ns ns.NetNS
}

func newContainer(id string) container { return container{id: id, ns: testns.New()} }

// add attaches ctr to n on h; args are CNI_ARGS.
func (h *host) add(n network, ctr container, args string) (*current.Result, error) {
	out, err := h.exec(invocation{command: "ADD", containerID: ctr.id, netns: ctr.ns.Path(), args: args, stdin: h.conf(n, nil)})
	if err != nil {
		return nil, err
	}
	res := &current.Result{}
	if n.version == "" || strings.HasPrefix(n.version, "1.") {
		Expect(json.Unmarshal(out, res)).To(Succeed(), "%s", out)
	}
	return res, nil
}

func (h *host) del(n network, ctr container, args string) error {
	_, err := h.exec(invocation{command: "DEL", containerID: ctr.id, netns: ctr.ns.Path(), args: args, stdin: h.conf(n, nil)})
	return err
}

func (h *host) check(n network, ctr container, args string, prev []byte) error {
	more := map[string]any{}
	if prev != nil {
		more["prevResult"] = json.RawMessage(prev)
	}
	_, err := h.exec(invocation{command: "CHECK", containerID: ctr.id, netns: ctr.ns.Path(), args: args, stdin: h.conf(n, more)})
	return err
}

// cnmctl runs the test build of cnmctl in h's namespace, on the cluster
// store as h sees it.
func (h *host) cnmctl(args ...string) ([]byte, error) {
	all := append([]string{"-o", "json", "--data-dir", h.dataDir, "--host", h.name,
		"--etcd-endpoints", strings.Join(h.c.etcd.Endpoints, ","), "--etcd-prefix", prefix, "--etcd-timeout", h.c.timeout}, args...)
	if t := h.c.etcd.TLS; t != nil {
		all = append(all, "--etcd-cert-file", t.CertFile, "--etcd-key-file", t.KeyFile, "--etcd-trusted-ca-file", t.CAFile)
	}
	var out []byte
	var err error
	Expect(h.ns.Do(func(ns.NetNS) error {
		cmd := exec.Command(filepath.Join(binDir, "cnmctl"), all...)
		var e bytes.Buffer
		cmd.Stderr = &e
		out, err = cmd.Output()
		if err != nil {
			err = fmt.Errorf("cnmctl %s: %v: %s%s", strings.Join(args, " "), err, e.String(), out)
		}
		return nil
	})).To(Succeed())
	return out, err
}

// client is an etcd client of the tests' own, to look at the store.
func (c *cluster) client() *clientv3.Client {
	GinkgoHelper()
	cli, err := c.etcd.Client()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	return cli
}

// dump is the whole cluster store as store key → value.
func (c *cluster) dump() map[string]string {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.client().Get(ctx, prefix+"/data/", clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	kv := map[string]string{}
	for _, e := range resp.Kvs {
		kv[strings.TrimPrefix(string(e.Key), prefix+"/data/")] = string(e.Value)
	}
	return kv
}

// keysUnder lists the keys of kv with prefix p.
func keysUnder(kv map[string]string, p string) []string {
	var out []string
	for k := range kv {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	return out
}

// linksIn lists the link names of a namespace.
func linksIn(n ns.NetNS) []string {
	GinkgoHelper()
	return testns.LinkNames(n)
}

// ifaceIn returns the MAC and addresses of ifname in a namespace.
func ifaceIn(n ns.NetNS, ifname string) (mac string, addrs []string) {
	GinkgoHelper()
	return testns.Interface(n, ifname)
}

// cniCode is the CNI code of err, 0 for none.
func cniCode(err error) uint { return cniexec.Code(err) }
