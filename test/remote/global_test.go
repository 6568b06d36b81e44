package remote_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testns"
)

// fabric is the state a global-scope plugin shares across its instances,
// one per host, as such a plugin keeps it in a store of its own: the
// networks and endpoints. Each instance makes its data path on its own
// host (a bridge per network, a veth pair per joined endpoint); traffic
// between hosts is not the test plugin's.
type fabric struct {
	mu        sync.Mutex
	calls     []string // "<host> <method>"
	endpoints map[string]*network.CreateEndpointRequest
}

func (f *fabric) record(host, method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, host+" "+method)
}

// Calls lists "<host> <method>" of the calls so far.
func (f *fabric) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fabric) Endpoints() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.endpoints)
}

// globalPlugin is one host's instance of the global-scope test plugin.
type globalPlugin struct {
	host   string
	hostNS ns.NetNS
	f      *fabric
}

var _ network.Driver = (*globalPlugin)(nil)

func (p *globalPlugin) GetCapabilities() (*network.CapabilitiesResponse, error) {
	p.f.record(p.host, "GetCapabilities")
	return &network.CapabilitiesResponse{Scope: network.GlobalScope, ConnectivityScope: network.GlobalScope}, nil
}

func (p *globalPlugin) CreateNetwork(r *network.CreateNetworkRequest) error {
	p.f.record(p.host, "CreateNetwork")
	return p.hostNS.Do(func(ns.NetNS) error { return makeBridge(r.NetworkID) })
}

func (p *globalPlugin) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	p.f.record(p.host, "DeleteNetwork")
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(bridgeName(r.NetworkID)) })
}

func (p *globalPlugin) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	p.f.record(p.host, "CreateEndpoint")
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	p.f.endpoints[r.EndpointID] = r
	return &network.CreateEndpointResponse{}, nil
}

func (p *globalPlugin) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	p.f.record(p.host, "DeleteEndpoint")
	p.f.mu.Lock()
	delete(p.f.endpoints, r.EndpointID)
	p.f.mu.Unlock()
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(hostVeth(r.EndpointID)) })
}

func (p *globalPlugin) EndpointInfo(r *network.InfoRequest) (*network.InfoResponse, error) {
	p.f.record(p.host, "EndpointOperInfo")
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if _, ok := p.f.endpoints[r.EndpointID]; !ok {
		return nil, fmt.Errorf("no endpoint %s", r.EndpointID)
	}
	return &network.InfoResponse{Value: map[string]string{}}, nil
}

func (p *globalPlugin) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	p.f.record(p.host, "Join")
	p.f.mu.Lock()
	_, known := p.f.endpoints[r.EndpointID]
	p.f.mu.Unlock()
	if !known {
		return nil, fmt.Errorf("no endpoint %s", r.EndpointID)
	}
	return plugVeth(p.hostNS, r)
}

func (p *globalPlugin) Leave(r *network.LeaveRequest) error {
	p.f.record(p.host, "Leave")
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(hostVeth(r.EndpointID)) })
}

func (p *globalPlugin) DiscoverNew(n *network.DiscoveryNotification) error {
	p.f.record(p.host, "DiscoverNew "+discovered(n))
	return nil
}

func (p *globalPlugin) DiscoverDelete(n *network.DiscoveryNotification) error {
	p.f.record(p.host, "DiscoverDelete "+discovered(n))
	return nil
}

// discovered shows a node discovery notification as "<type> <address> self=<bool>".
func discovered(n *network.DiscoveryNotification) string {
	d, _ := n.DiscoveryData.(map[string]any)
	return fmt.Sprintf("%d %v self=%v", n.DiscoveryType, d["Address"], d["Self"])
}

func (p *globalPlugin) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{}, nil
}
func (p *globalPlugin) FreeNetwork(*network.FreeNetworkRequest) error { return nil }
func (p *globalPlugin) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}
func (p *globalPlugin) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

// gprefix is the etcd key prefix of the global tests' cluster store.
const gprefix = "/cnmremote"

// gcluster is one spec's etcd and its hosts, each with its instance of
// the global test plugin on a socket of its own.
type gcluster struct {
	etcd   *etcdtest.Cluster
	fabric *fabric
	hosts  []*ghost
}

// ghost is one "machine": its namespace, data directory, name, address
// and plugin.
type ghost struct {
	c       *gcluster
	name    string
	addr    string
	w       *world // runs cnm-remote in the host's namespace
	plugin  *globalPlugin
	sock    string
	mu      sync.Mutex
	serving net.Listener
}

func newGCluster(n int) *gcluster {
	GinkgoHelper()
	c := &gcluster{etcd: etcdtest.StartForTest(GinkgoT(), etcdtest.Options{}), fabric: &fabric{endpoints: map[string]*network.CreateEndpointRequest{}}}
	for i := range n {
		h := &ghost{c: c, name: fmt.Sprintf("node-%d", i+1), addr: fmt.Sprintf("192.0.2.%d", i+1),
			w: &world{hostNS: testns.New(), dataDir: GinkgoT().TempDir()}, sock: filepath.Join(GinkgoT().TempDir(), "plugin.sock")}
		Expect(h.w.hostNS.Do(func(ns.NetNS) error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(lo)
		})).To(Succeed())
		h.plugin = &globalPlugin{host: h.name, hostNS: h.w.hostNS, f: c.fabric}
		h.start()
		DeferCleanup(h.stop)
		c.hosts = append(c.hosts, h)
	}
	return c
}

// start serves the host's plugin on its socket.
func (h *ghost) start() {
	GinkgoHelper()
	l, err := net.Listen("unix", h.sock)
	Expect(err).NotTo(HaveOccurred())
	h.mu.Lock()
	h.serving = l
	h.mu.Unlock()
	go func() { _ = network.NewHandler(h.plugin).Serve(l) }()
}

// stop takes the host's plugin away (the fabric keeps its state).
func (h *ghost) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.serving != nil {
		_ = h.serving.Close()
		h.serving = nil
	}
}

// conf is the global network's configuration on host h; more adds or
// (nil) removes keys.
func (h *ghost) conf(more map[string]any) []byte {
	GinkgoHelper()
	m := map[string]any{
		"cniVersion": "1.1.0", "name": "gnet", "type": "cnm-remote", "dataDir": h.w.dataDir,
		"socket": h.sock, "timeout": "1s", "host": h.name, "advertiseAddress": h.addr,
		"cluster": map[string]any{"etcd": map[string]any{"endpoints": h.c.etcd.Endpoints, "prefix": gprefix, "timeout": "2s"}},
		"ipam":    map[string]any{"subnet": "10.78.0.0/24"},
	}
	for k, v := range more {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	Expect(err).NotTo(HaveOccurred())
	return b
}

func (h *ghost) add(version string, c container, args string) ([]byte, error) {
	out, _, err := h.w.exec(invocation{command: "ADD", containerID: c.id, netns: c.ns.Path(), args: args,
		stdin: h.conf(map[string]any{"cniVersion": version})})
	return out, err
}

func (h *ghost) del(c container, args string) (string, error) {
	_, stderr, err := h.w.exec(invocation{command: "DEL", containerID: c.id, netns: c.ns.Path(), args: args, stdin: h.conf(nil)})
	return stderr, err
}

// keys lists the cluster store's keys under key prefix p (of the store).
func (c *gcluster) keys(p string) []string {
	GinkgoHelper()
	cli, err := c.etcd.Client()
	Expect(err).NotTo(HaveOccurred())
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, gprefix+"/data/"+p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), gprefix+"/data/"))
	}
	return out
}

// noHostStore asserts that h's own store was never made: a global
// network's invocation writes only the cluster store.
func (h *ghost) noHostStore() {
	GinkgoHelper()
	_, err := os.Stat(filepath.Join(h.w.dataDir, store.FileName))
	Expect(os.IsNotExist(err)).To(BeTrue(), "%s has a store of its own: %v", h.name, err)
}

func firstIP(out []byte) string {
	GinkgoHelper()
	res, err := create.CreateFromBytes(out)
	Expect(err).NotTo(HaveOccurred(), "%s", out)
	cur, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	Expect(cur.IPs).NotTo(BeEmpty())
	return cur.IPs[0].Address.String()
}

var _ = Describe("cnm-remote with a global-scope Docker network plugin", func() {
	var c *gcluster
	var a, b *ghost
	BeforeEach(func() {
		c = newGCluster(2)
		a, b = c.hosts[0], c.hosts[1]
	})

	DescribeTable("keeps the network in the cluster store, an address unique across hosts",
		func(version string) {
			ca, cb := newContainer("ca"), newContainer("cb")
			outA, err := a.add(version, ca, "")
			Expect(err).NotTo(HaveOccurred())
			outB, err := b.add(version, cb, "")
			Expect(err).NotTo(HaveOccurred())
			ipA, ipB := firstIP(outA), firstIP(outB)
			Expect(ipA).To(HavePrefix("10.78.0."))
			Expect(ipB).To(HavePrefix("10.78.0."))
			Expect(ipA).NotTo(Equal(ipB))
			_, addrs := ifaceIn(cb.ns, "eth0")
			Expect(addrs).To(ConsistOf(ipB))

			Expect(c.keys("networks/")).To(ConsistOf("networks/gnet"))
			Expect(c.keys("endpoints/gnet/")).To(HaveLen(2))
			Expect(c.keys("drivers/cnm-remote/endpoints/")).To(HaveLen(2), "the endpoints the plugins were told of, shared")
			for _, h := range c.hosts {
				Expect(c.keys("hosts/"+h.name+"/hostdrivers/cnm-remote/networks/")).To(HaveLen(1), "each host's plugin made the network")
				h.noHostStore()
				Expect(vethsIn(h.w.hostNS)).To(HaveLen(1))
			}
			calls := c.fabric.Calls()
			for _, h := range c.hosts {
				Expect(calls).To(ContainElements(h.name+" CreateNetwork", h.name+" CreateEndpoint", h.name+" Join",
					h.name+" DiscoverNew 1 "+h.addr+" self=true"))
			}

			_, err = a.del(ca, "")
			Expect(err).NotTo(HaveOccurred())
			_, err = b.del(cb, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(c.keys("endpoints/gnet/")).To(BeEmpty())
			Expect(c.keys("drivers/cnm-remote/endpoints/")).To(BeEmpty())
			Expect(c.fabric.Endpoints()).To(BeZero())
		},
		versionEntries(),
	)

	It("moves a persistent endpoint from host A to host B with its address and MAC", func() {
		ca := newContainer("ca")
		_, err := a.add("1.1.0", ca, "CNM_ENDPOINT=db")
		Expect(err).NotTo(HaveOccurred())
		mac, addrs := ifaceIn(ca.ns, "eth0")
		_, err = a.del(ca, "CNM_ENDPOINT=db")
		Expect(err).NotTo(HaveOccurred())
		Expect(vethsIn(a.w.hostNS)).To(BeEmpty(), "left on A")
		Expect(c.fabric.Endpoints()).To(Equal(1), "the plugin's endpoint is kept with the reservation")

		cb := newContainer("cb")
		_, err = b.add("1.1.0", cb, "CNM_ENDPOINT=db")
		Expect(err).NotTo(HaveOccurred())
		mac2, addrs2 := ifaceIn(cb.ns, "eth0")
		Expect(mac2).To(Equal(mac))
		Expect(addrs2).To(Equal(addrs))
		Expect(vethsIn(b.w.hostNS)).To(HaveLen(1))
		calls := c.fabric.Calls()
		Expect(calls).To(ContainElement(b.name + " Join"))
		Expect(calls).NotTo(ContainElement(b.name+" CreateEndpoint"), "the endpoint is the one A's plugin was told of")
	})

	It("deletes while the plugin is gone (its scope kept from before), and tells it once back", func() {
		ca := newContainer("ca")
		_, err := a.add("1.1.0", ca, "")
		Expect(err).NotTo(HaveOccurred())
		a.stop()
		stderr, err := a.del(ca, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(stderr).To(ContainSubstring("the plugin is told when it answers"))
		Expect(c.keys("endpoints/gnet/")).To(BeEmpty(), "released in the cluster store")
		Expect(c.keys("hosts/" + a.name + "/hostdrivers/cnm-remote/pending/")).NotTo(BeEmpty())
		Expect(c.keys("hosts/"+b.name+"/")).To(BeEmpty(), "owed by A's plugin, not B's")
		Expect(c.fabric.Endpoints()).To(Equal(1), "not told yet")

		a.start()
		_, _, err = a.w.exec(invocation{command: "STATUS", stdin: a.conf(nil)})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.fabric.Endpoints()).To(BeZero(), "told once back")
		Expect(c.keys("hosts/" + a.name + "/hostdrivers/cnm-remote/pending/")).To(BeEmpty())
		Expect(vethsIn(a.w.hostNS)).To(BeEmpty())
	})

	It("asks a plugin its capabilities once while its socket stays, and again once it was restarted", func() {
		asked := func() int {
			n := 0
			for _, call := range c.fabric.Calls() {
				if call == a.name+" GetCapabilities" {
					n++
				}
			}
			return n
		}
		c1, c2 := newContainer("c1"), newContainer("c2")
		_, err := a.add("1.1.0", c1, "")
		Expect(err).NotTo(HaveOccurred())
		_, err = a.add("1.1.0", c2, "")
		Expect(err).NotTo(HaveOccurred())
		_, err = a.del(c1, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(asked()).To(Equal(1))
		a.stop()
		a.start()
		_, _, err = a.w.exec(invocation{command: "STATUS", stdin: a.conf(nil)})
		Expect(err).NotTo(HaveOccurred())
		Expect(asked()).To(Equal(2), "a new socket is a new plugin")
		_, err = a.del(c2, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(asked()).To(Equal(2))
	})

	It("refuses a configuration without a cluster section with 7, touching nothing", func() {
		cb := newContainer("cb")
		_, _, err := b.w.exec(invocation{command: "ADD", containerID: cb.id, netns: cb.ns.Path(), stdin: b.conf(map[string]any{"cluster": nil})})
		Expect(cniCode(err)).To(BeEquivalentTo(7), "%v", err)
		Expect(err.Error()).To(ContainSubstring("cluster"))
		Expect(err.Error()).To(ContainSubstring("global scope"))
		Expect(c.fabric.Calls()).NotTo(ContainElement(b.name + " CreateNetwork"))
		Expect(linksIn(cb.ns)).To(BeEmpty())
		b.noHostStore()
	})

	It("answers 11 within the bound while etcd is down, and serves once it is back", func() {
		Expect(c.etcd.Kill(0)).To(Succeed())
		ca := newContainer("ca")
		start := time.Now()
		_, err := a.add("1.1.0", ca, "")
		Expect(cniCode(err)).To(BeEquivalentTo(11), "%v", err)
		Expect(time.Since(start)).To(BeNumerically("<", 8*time.Second))
		Expect(linksIn(ca.ns)).To(BeEmpty())
		Expect(c.fabric.Calls()).NotTo(ContainElement(a.name + " CreateNetwork"))
		a.noHostStore()
		_, _, err = a.w.exec(invocation{command: "STATUS", stdin: a.conf(nil)})
		Expect(cniCode(err)).To(BeEquivalentTo(50), "%v", err)

		Expect(c.etcd.Restart(0)).To(Succeed())
		_, err = a.add("1.1.0", ca, "")
		Expect(err).NotTo(HaveOccurred())
	})
})
