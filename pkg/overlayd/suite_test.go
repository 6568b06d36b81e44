package overlayd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/overlayd"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testns"
)

func TestOverlayd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "cnm-overlayd")
}

const (
	nid    = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	vni    = 4242
	prefix = "/cnmtest"
)

// host is a network namespace standing for a machine: eth0 on the
// underlay with 192.168.77.<i>.
type host struct {
	name string
	ns   ns.NetNS
	ip   net.IP
}

// world is an underlay (a namespace with a bridge), hosts on it, and an
// etcd cluster (one member) holding the cluster store.
type world struct {
	underlay ns.NetNS
	hosts    []*host
	etcd     *etcdtest.Cluster
	store    *etcdstore.Store
}

func newWorld(count int) *world {
	GinkgoHelper()
	w := &world{underlay: testns.New()}
	Expect(w.underlay.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})).To(Succeed())
	for i := 1; i <= count; i++ {
		h := &host{name: "node-" + strconv.Itoa(i), ns: testns.New(), ip: net.ParseIP(fmt.Sprintf("192.168.77.%d", i))}
		Expect(w.underlay.Do(func(ns.NetNS) error {
			br, err := netlink.LinkByName("ul")
			if err != nil {
				return err
			}
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h" + strconv.Itoa(i), MasterIndex: br.Attrs().Index},
				PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.ns.Fd()))}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			return netlink.LinkSetUp(veth)
		})).To(Succeed())
		Expect(h.ns.Do(func(ns.NetNS) error {
			for _, name := range []string{"eth0", "lo"} {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				if name == "eth0" {
					addr, _ := netlink.ParseAddr(h.ip.String() + "/24")
					if err := netlink.AddrAdd(l, addr); err != nil {
						return err
					}
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
			}
			return nil
		})).To(Succeed())
		w.hosts = append(w.hosts, h)
	}
	w.etcd = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{})
	var err error
	w.store, err = etcdstore.Open(w.etcdConfig())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.store.Close)
	return w
}

func (w *world) etcdConfig() etcdstore.Config {
	return etcdstore.Config{Endpoints: w.etcd.Endpoints, Prefix: prefix, Timeout: 2 * time.Second}
}

// network is the overlay network's data plane on h, as the plugin makes it.
func (h *host) network() dataplane.Network {
	br, vx := dataplane.Names(nid)
	return dataplane.Network{ID: nid, Bridge: br, VXLAN: vx, VNI: vni, Port: dataplane.DefaultPort,
		Underlay: "eth0", LocalIP: h.ip}
}

func (h *host) do(f func() error) error { return h.ns.Do(func(ns.NetNS) error { return f() }) }

// createNetwork does what the plugin's CreateNetwork does on hs: the
// cluster record, and on each host the links and their host record.
func (w *world) createNetwork(hs ...*host) {
	GinkgoHelper()
	w.put(records.StorePrefix+records.NetworkKey(nid), records.Network{ID: nid, Name: "ov1", VNI: vni, Port: dataplane.DefaultPort,
		Gateways: []string{"10.200.0.1/24"}, Subnets: []string{"10.200.0.0/24"}})
	for _, h := range hs {
		n := h.network()
		Expect(h.do(func() error { return dataplane.Ensure(n) })).To(Succeed())
		w.put(h.hostNetworkKey(), records.HostNetwork{Bridge: n.Bridge, VXLAN: n.VXLAN, Underlay: n.Underlay, LocalIP: h.ip.String()})
	}
}

func (h *host) hostNetworkKey() string {
	return "hosts/" + h.name + "/hostdrivers/" + records.NetworkType + "/" + records.HostNetworkKey(nid)
}

func (w *world) put(key string, v any) {
	GinkgoHelper()
	Expect(w.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, key, v) })).To(Succeed())
}

func (w *world) delete(key string) {
	GinkgoHelper()
	Expect(w.store.Update(func(tx store.Tx) error { return tx.Delete(key) })).To(Succeed())
}

// waitRegistered waits until each host's live key is in the store.
func (w *world) waitRegistered(hs ...*host) {
	GinkgoHelper()
	for _, h := range hs {
		Eventually(func() error {
			// The live key first, then the record (pkg/cluster.Register).
			return w.store.View(func(tx store.Tx) error {
				if _, err := tx.Get(cnm.HostLiveKey(h.name)); err != nil {
					return err
				}
				_, err := tx.Get(cnm.HostKey(h.name))
				return err
			})
		}, 5*time.Second, 10*time.Millisecond).Should(Succeed(), "%s registered", h.name)
	}
}

// endpoint is a joined endpoint as its record names it.
type endpoint struct {
	id  string
	mac string
	ip  string
}

func ep(i int) endpoint {
	return endpoint{id: fmt.Sprintf("e%02d", i), mac: fmt.Sprintf("02:42:0a:c8:00:%02x", i), ip: fmt.Sprintf("10.200.0.%d", i+10)}
}

// join writes e's peer record as joined on h.
func (w *world) join(e endpoint, h *host) {
	GinkgoHelper()
	Expect(w.tryJoin(e, h)).To(Succeed())
}

// tryJoin is join that returns the store's error.
func (w *world) tryJoin(e endpoint, h *host) error {
	return w.store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, records.StorePrefix+records.PeerKey(nid, e.id), records.Peer{Network: nid, Endpoint: e.id,
			Host: h.name, VTEP: h.ip.String(), MAC: e.mac, IPs: []string{e.ip}})
	})
}

func (w *world) leave(e endpoint) {
	GinkgoHelper()
	w.delete(records.StorePrefix + records.PeerKey(nid, e.id))
}

// entry is a peer as the tests compare them: "mac ip at vtep".
func entry(e endpoint, h *host) string { return e.mac + " [" + e.ip + "] at " + h.ip.String() }

// entries are the peers programmed on h, sorted.
func (h *host) entries() []string {
	GinkgoHelper()
	var peers []dataplane.Peer
	Expect(h.do(func() error {
		var err error
		peers, err = dataplane.Peers(h.network())
		return err
	})).To(Succeed())
	out := []string{}
	for _, p := range peers {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out
}

func want(es ...string) []string {
	out := append([]string{}, es...)
	sort.Strings(out)
	return out
}

// daemon is an in-process cnm-overlayd for a host.
type daemon struct {
	d      *overlayd.Daemon
	cancel context.CancelFunc
	done   chan error
}

const (
	leaseTTL = 2 * time.Second
	resync   = time.Second
)

// daemonConfig is the configuration of h's daemon in the specs.
func (w *world) daemonConfig(h *host) overlayd.Config {
	log := slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return overlayd.Config{
		Etcd: w.etcdConfig(), Host: h.name, UnderlayAddress: h.ip, LeaseTTL: leaseTTL, ResyncInterval: resync,
		MetricsAddress: "127.0.0.1:0", Logger: log, InNetNS: h.do,
	}
}

func (w *world) newDaemon(h *host, configure ...func(*overlayd.Daemon)) *overlayd.Daemon {
	GinkgoHelper()
	d, err := overlayd.New(w.daemonConfig(h))
	Expect(err).NotTo(HaveOccurred())
	for _, f := range configure {
		f(d)
	}
	return d
}

// start runs a daemon for h until stop or the spec's end.
func (w *world) start(h *host, configure ...func(*overlayd.Daemon)) *daemon {
	GinkgoHelper()
	ctx, cancel := context.WithCancel(context.Background())
	dm := &daemon{d: w.newDaemon(h, configure...), cancel: cancel, done: make(chan error, 1)}
	go func() { dm.done <- dm.d.Run(ctx) }()
	DeferCleanup(dm.stop)
	return dm
}

// stop stops the daemon and waits for it; stopping twice is fine.
func (dm *daemon) stop() {
	GinkgoHelper()
	if dm.cancel == nil {
		return
	}
	dm.cancel()
	dm.cancel = nil
	Eventually(dm.done, 5*time.Second).Should(Receive(BeNil()))
}

// get fetches path from a server listening at addr in h's namespace.
func (h *host) get(addr, path string) (int, string, error) {
	return testns.Get(h.ns, "http://"+addr+path)
}

// converge waits until h's entries are exactly es and returns how long
// that took from start.
func (h *host) converge(start time.Time, es ...string) time.Duration {
	GinkgoHelper()
	var lag time.Duration
	Eventually(func() []string {
		got := h.entries()
		lag = time.Since(start)
		return got
	}, 5*time.Second, 5*time.Millisecond).Should(Equal(want(es...)), "entries on %s", h.name)
	return lag
}
