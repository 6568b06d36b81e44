package overlay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/test/cniexec"
	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testns"
)

// prefix is the etcd key prefix of the tests' cluster store.
const prefix = "/cnmovl"

// underlayMTU is the MTU of the underlay's links.
const underlayMTU = 1500

// world is one spec's etcd, underlay and hosts.
type world struct {
	etcd     *etcdtest.Cluster
	cli      *clientv3.Client
	underlay ns.NetNS
	hosts    []*host
	ipv6     bool // the hosts' underlay is IPv6 only
}

// worldOptions are what newWorldWith makes differently from newWorld.
type worldOptions struct {
	etcdMembers int  // members of the etcd cluster (0: one)
	ipv6        bool // hosts on an IPv6-only underlay, fd00:77::<i>/64
}

// host is a "machine": a namespace with eth0 on the underlay
// (192.168.77.<i>/24, and the default route through it), where its
// plugin runs, with its own data directory and its name in the cluster.
type host struct {
	w       *world
	name    string
	ns      ns.NetNS
	ip      net.IP
	dataDir string
}

// newWorld starts etcd and makes an underlay with count hosts on it.
func newWorld(count int) *world {
	GinkgoHelper()
	return newWorldWith(count, worldOptions{})
}

// newWorldWith is newWorld with opts.
func newWorldWith(count int, opts worldOptions) *world {
	GinkgoHelper()
	w := &world{etcd: etcdtest.StartForTest(GinkgoT(), etcdtest.Options{Members: opts.etcdMembers}), underlay: testns.New(),
		ipv6: opts.ipv6}
	cli, err := w.etcd.Client()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	w.cli = cli
	in(w.underlay, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul", MTU: underlayMTU}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	for range count {
		w.addHost()
	}
	return w
}

// addHost puts one more host on the underlay.
func (w *world) addHost() *host {
	GinkgoHelper()
	i := len(w.hosts) + 1
	h := &host{w: w, name: fmt.Sprintf("node-%d", i), ns: testns.New(),
		ip: net.ParseIP(fmt.Sprintf("192.168.77.%d", i)), dataDir: GinkgoT().TempDir()}
	cidr, gw := h.ip.String()+"/24", net.ParseIP("192.168.77.254")
	if w.ipv6 {
		h.ip = net.ParseIP(fmt.Sprintf("fd00:77::%d", i))
		cidr, gw = h.ip.String()+"/64", net.ParseIP("fd00:77::fe")
	}
	in(w.underlay, func() error {
		br, err := netlink.LinkByName("ul")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h" + strconv.Itoa(i), MTU: underlayMTU, MasterIndex: br.Attrs().Index},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.ns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	in(h.ns, func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(cidr)
		if w.ipv6 {
			addr.Flags = unix.IFA_F_NODAD // usable at once
		}
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		if err := upLoopback(); err != nil {
			return err
		}
		// The default route picks the underlay: no key names it.
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw})
	})
	w.hosts = append(w.hosts, h)
	return h
}

func upLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// in runs f in n; f runs on a thread locked in n, so it reports by
// error rather than by Expect.
func in(n ns.NetNS, f func() error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error { return f() })).To(Succeed())
}

// network is an overlay network's configuration for a test.
type network struct {
	name, subnet string
	more         map[string]any
}

// conf is n's configuration as host h's runtime passes it; more adds
// keys, or removes those whose value is nil.
func (h *host) conf(n network, more map[string]any) []byte {
	GinkgoHelper()
	return cniexec.Config(map[string]any{
		"cniVersion": "1.1.0", "name": n.name, "type": records.NetworkType,
		"dataDir": h.dataDir, "host": h.name,
		"cluster": map[string]any{"etcd": map[string]any{"endpoints": h.w.etcd.Endpoints, "prefix": prefix, "timeout": "3s"}},
		"ipam":    map[string]any{"type": "cnm", "subnet": n.subnet},
	}, n.more, more)
}

// container is a sandbox on a host, and what ADD gave it.
type container struct {
	id   string
	ns   ns.NetNS
	host *host
	ip   net.IP
	mac  string
	prev []byte // the ADD's result
}

func (h *host) newContainer(id string) *container {
	GinkgoHelper()
	c := &container{id: id, ns: testns.New(), host: h}
	in(c.ns, upLoopback)
	return c
}

// exec runs the plugin in h's namespace as a runtime does, and returns
// its stdout or the CNI error it printed.
func (h *host) exec(command string, c *container, args string, stdin []byte) ([]byte, error) {
	GinkgoHelper()
	return h.execPlugin(filepath.Join(binDir, records.NetworkType), command, c, args, stdin)
}

// execPlugin is exec of the plugin binary at path; every command names
// eth0, as the suite always has.
func (h *host) execPlugin(path, command string, c *container, args string, stdin []byte) ([]byte, error) {
	GinkgoHelper()
	out, _, err := cniexec.Run(h.ns, path, cniexec.Invocation{Command: command, ContainerID: c.id, NetNS: c.ns.Path(),
		IfName: "eth0", Args: args, Path: binDir, Stdin: stdin})
	return out, err
}

// tryAdd attaches c to n on its host.
func (c *container) tryAdd(n network, args string) error {
	out, err := c.host.exec("ADD", c, args, c.host.conf(n, nil))
	if err != nil {
		return err
	}
	res := &current.Result{}
	if err := json.Unmarshal(out, res); err != nil {
		return fmt.Errorf("decode result %s: %w", out, err)
	}
	if len(res.IPs) == 0 {
		return fmt.Errorf("result without an address: %s", out)
	}
	c.ip, c.prev = res.IPs[0].Address.IP, out
	c.mac = c.macOf("eth0")
	return nil
}

// add makes a container on h and attaches it to n.
func (h *host) add(n network, id, args string) *container {
	GinkgoHelper()
	c := h.newContainer(id)
	Expect(c.tryAdd(n, args)).To(Succeed())
	return c
}

func (c *container) del(n network, args string) error {
	_, err := c.host.exec("DEL", c, args, c.host.conf(n, nil))
	return err
}

func (c *container) check(n network, args string) error {
	_, err := c.host.exec("CHECK", c, args, c.host.conf(n, map[string]any{"prevResult": json.RawMessage(c.prev)}))
	return err
}

func (c *container) macOf(ifname string) string {
	var mac string
	_ = c.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifname)
		if err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return err
	})
	return mac
}

// ping sends one echo request of size bytes of payload (0: ping's
// default) from c to dst, DF set, and waits up to two seconds for the
// answer.
func (c *container) ping(dst net.IP, size int) error { return pingFrom(c.ns, dst, size, "2") }

// unreachable says whether an echo request from c to dst goes
// unanswered for a second.
func (c *container) unreachable(dst net.IP) bool { return pingFrom(c.ns, dst, 0, "1") != nil }

func pingFrom(n ns.NetNS, dst net.IP, size int, wait string) error {
	args := []string{"-c", "1", "-W", wait, "-M", "do"}
	if size > 0 {
		args = append(args, "-s", strconv.Itoa(size))
	}
	args = append(args, dst.String())
	return n.Do(func(ns.NetNS) error {
		out, err := exec.Command("ping", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %v: %w: %s", args, err, bytes.TrimSpace(out))
		}
		return nil
	})
}

// dump is the whole cluster store as store key → value.
func (w *world) dump() map[string]string {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, prefix+"/data/", clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	kv := map[string]string{}
	for _, e := range resp.Kvs {
		kv[strings.TrimPrefix(string(e.Key), prefix+"/data/")] = string(e.Value)
	}
	return kv
}

// peers are the overlay's peer records, by network ID.
func (w *world) peers() map[string][]records.Peer {
	GinkgoHelper()
	out := map[string][]records.Peer{}
	for k, v := range w.dump() {
		if !strings.HasPrefix(k, records.StorePrefix+records.PeersPrefix) {
			continue
		}
		p := records.Peer{}
		Expect(json.Unmarshal([]byte(v), &p)).To(Succeed())
		out[p.Network] = append(out[p.Network], p)
	}
	return out
}

// hostNetworks are h's records of the overlay networks it has, by ID.
func (h *host) hostNetworks() map[string]records.HostNetwork {
	GinkgoHelper()
	p := "hosts/" + h.name + "/hostdrivers/" + records.NetworkType + "/networks/"
	out := map[string]records.HostNetwork{}
	for k, v := range h.w.dump() {
		if nid, ok := strings.CutPrefix(k, p); ok {
			hn := records.HostNetwork{}
			Expect(json.Unmarshal([]byte(v), &hn)).To(Succeed())
			out[nid] = hn
		}
	}
	return out
}

func dataplaneNetwork(nid string, hn records.HostNetwork) dataplane.Network {
	return dataplane.Network{ID: nid, Bridge: hn.Bridge, VXLAN: hn.VXLAN, VNI: hn.VNI, Port: hn.Port,
		Underlay: hn.Underlay, LocalIP: net.ParseIP(hn.LocalIP), MTU: hn.MTU}
}

// sync does on each of hosts (every host when none is given) what
// cnm-overlayd will: programs exactly the endpoints joined on other
// hosts of each network the host has, from the records in etcd.
func (w *world) sync(hosts ...*host) {
	GinkgoHelper()
	if len(hosts) == 0 {
		hosts = w.hosts
	}
	all := w.peers()
	for _, h := range hosts {
		for nid, hn := range h.hostNetworks() {
			var want []dataplane.Peer
			for _, p := range all[nid] {
				if p.Host == h.name {
					continue
				}
				mac, err := net.ParseMAC(p.MAC)
				Expect(err).NotTo(HaveOccurred())
				want = append(want, dataplane.Peer{MAC: mac, IPs: p.ParseIPs(), VTEP: net.ParseIP(p.VTEP)})
			}
			in(h.ns, func() error {
				_, _, err := dataplane.Reconcile(dataplaneNetwork(nid, hn), want)
				return err
			})
		}
	}
}

// programmed lists the peers h forwards to on network nid, as "mac@vtep".
func (h *host) programmed(nid string) []string {
	GinkgoHelper()
	var out []string
	in(h.ns, func() error {
		peers, err := dataplane.Peers(dataplaneNetwork(nid, h.hostNetworks()[nid]))
		for _, p := range peers {
			out = append(out, p.MAC.String()+"@"+p.VTEP.String())
		}
		return err
	})
	return out
}

// links lists the link names of h's namespace.
func (h *host) links() []string {
	GinkgoHelper()
	return testns.LinkNames(h.ns)
}

// networkID is the ID of the overlay network called name.
func (w *world) networkID(name string) string {
	GinkgoHelper()
	for k, v := range w.dump() {
		if !strings.HasPrefix(k, records.StorePrefix+"networks/") {
			continue
		}
		n := records.Network{}
		Expect(json.Unmarshal([]byte(v), &n)).To(Succeed())
		if n.Name == name {
			return n.ID
		}
	}
	Fail("no overlay network " + name)
	return ""
}

// serve listens on addr inside n and answers every connection with the
// address it came from, until the spec ends.
func serve(n ns.NetNS, addr string) {
	GinkgoHelper()
	var l net.Listener
	in(n, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	DeferCleanup(l.Close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, c.RemoteAddr().String())
			_ = c.Close()
		}
	}()
}

// dial connects from inside n to addr and returns the source address
// the server saw.
func dial(n ns.NetNS, addr string) (string, error) {
	var seen string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		seen, _, err = net.SplitHostPort(string(b))
		return err
	})
	return seen, err
}

// cniCode is the CNI code of err, 0 for none.
func cniCode(err error) uint { return cniexec.Code(err) }

// linksOf lists the link names of a container's namespace.
func linksOf(c *container) []string {
	GinkgoHelper()
	return testns.LinkNames(c.ns)
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

func setNoMaster(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetNoMaster(l)
}

// keysWith lists the keys of kv that start with p.
func keysWith(kv map[string]string, p string) []string {
	var out []string
	for k := range kv {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	return out
}

// removeNetwork removes network name as `cnmctl network rm` does, in
// process, in h's namespace: the core's RemoveNetwork with the overlay
// driver on the cluster store.
func (h *host) removeNetwork(name string) error {
	GinkgoHelper()
	var rmErr error
	in(h.ns, func() error {
		s, err := cluster.Open(&cnm.ClusterConf{Etcd: &cnm.EtcdConf{Endpoints: h.w.etcd.Endpoints, Prefix: prefix,
			Timeout: cnm.Duration(3 * time.Second)}})
		if err != nil {
			return err
		}
		c := cnm.NewClustered(s, h.name)
		defer c.Close()
		if err := overlay.Register(c); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rmErr = c.RemoveNetwork(ctx, name, false)
		return nil
	})
	return rmErr
}

// iptablesSave is the IPv4 rules of h's namespace.
func (h *host) iptablesSave() string {
	GinkgoHelper()
	var out []byte
	in(h.ns, func() error {
		var err error
		out, err = exec.Command("iptables-save").CombinedOutput()
		return err
	})
	return string(out)
}

// cnmctl runs the test build of cnmctl in h's namespace, on the cluster
// store as h sees it, with JSON output; code is its exit code.
func (h *host) cnmctl(args ...string) (out []byte, code int) {
	GinkgoHelper()
	all := append([]string{"-o", "json", "--data-dir", h.dataDir, "--host", h.name,
		"--etcd-endpoints", strings.Join(h.w.etcd.Endpoints, ","), "--etcd-prefix", prefix, "--etcd-timeout", "3s"}, args...)
	in(h.ns, func() error {
		cmd := exec.Command(filepath.Join(binDir, "cnmctl"), all...)
		var e bytes.Buffer
		cmd.Stderr = &e
		var err error
		out, err = cmd.Output()
		fmt.Fprint(GinkgoWriter, e.String())
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			return nil
		}
		return err
	})
	return out, code
}

// finding is one line of cnmctl check's JSON output.
type finding struct {
	Network  string `json:"network"`
	Kind     string `json:"kind"`
	Object   string `json:"object"`
	Problem  string `json:"problem"`
	Repaired bool   `json:"repaired"`
}

// check runs cnmctl check (with --repair when repair) on h.
func (h *host) check(repair bool) (found []finding, code int) {
	GinkgoHelper()
	args := []string{"check"}
	if repair {
		args = append(args, "--repair")
	}
	out, code := h.cnmctl(args...)
	fmt.Fprintf(GinkgoWriter, "cnmctl %v: %d: %s\n", args, code, out)
	Expect(json.Unmarshal(out, &found)).To(Succeed(), "%s", out)
	return found, code
}

// capture is a Registerer that keeps the driver registered with it.
type capture struct {
	*cnm.Controller
	driver driverapi.Driver
}

func (c *capture) RegisterDriver(name string, d driverapi.Driver, capability driverapi.Capability) error {
	c.driver = d
	return c.Controller.RegisterDriver(name, d, capability)
}

// janitor runs f in h's namespace with the overlay driver's Janitor, in
// process, on the cluster store as h sees it: what cnmctl check calls.
func (h *host) janitor(f func(driverapi.Janitor) error) {
	GinkgoHelper()
	in(h.ns, func() error {
		s, err := cluster.Open(&cnm.ClusterConf{Etcd: &cnm.EtcdConf{Endpoints: h.w.etcd.Endpoints, Prefix: prefix,
			Timeout: cnm.Duration(3 * time.Second)}})
		if err != nil {
			return err
		}
		c := &capture{Controller: cnm.NewClustered(s, h.name)}
		defer c.Close()
		if err := overlay.Register(c); err != nil {
			return err
		}
		j, ok := c.driver.(driverapi.Janitor)
		if !ok {
			return fmt.Errorf("the overlay driver is no driverapi.Janitor")
		}
		return f(j)
	})
}
