package overlayd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/overlayd"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/test/syncbuf"
)

// reportLag records how long a change took to be programmed.
func reportLag(what string, lag time.Duration) {
	AddReportEntry("lag: "+what, lag.Round(time.Millisecond).String())
	fmt.Fprintf(GinkgoWriter, "lag %s: %v\n", what, lag)
}

// metric is the value of the sample named (with its labels) in a
// Prometheus text exposition, "" when absent.
func metric(body, sample string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

var _ = Describe("cnm-overlayd", func() {
	It("programs the other hosts' peers at start, then each put, move and delete, and a network new on the host", func() {
		w := newWorld(3)
		h1, h2, h3 := w.hosts[0], w.hosts[1], w.hosts[2]
		w.createNetwork(h1, h2)
		a, b, c, d := ep(1), ep(2), ep(3), ep(4)
		w.join(a, h1)
		w.join(b, h2)
		start := time.Now()
		for _, h := range w.hosts {
			w.start(h)
		}
		reportLag("start (h1)", h1.converge(start, entry(b, h2)))
		h2.converge(start, entry(a, h1))

		By("registering each host with its underlay address")
		w.waitRegistered(h1)
		Expect(w.store.View(func(tx store.Tx) error {
			var rec cnm.HostRecord
			if err := store.GetJSON(tx, cnm.HostKey(h1.name), &rec); err != nil {
				return err
			}
			Expect(rec.Address).To(Equal(h1.ip.String()))
			_, err := tx.Get(cnm.HostLiveKey(h1.name))
			return err
		})).To(Succeed())

		By("a network appearing on a host")
		t := time.Now()
		w.createNetwork(h3)
		w.join(c, h3)
		reportLag("network new on h3", h3.converge(t, entry(a, h1), entry(b, h2)))
		reportLag("put (c on h3, seen on h1)", h1.converge(t, entry(b, h2), entry(c, h3)))
		h2.converge(t, entry(a, h1), entry(c, h3))

		By("a put")
		t = time.Now()
		w.join(d, h2)
		reportLag("put", h1.converge(t, entry(b, h2), entry(c, h3), entry(d, h2)))
		h3.converge(t, entry(a, h1), entry(b, h2), entry(d, h2))

		By("a move: b from h2 to h3")
		t = time.Now()
		w.join(b, h3)
		reportLag("move (h1)", h1.converge(t, entry(b, h3), entry(c, h3), entry(d, h2)))
		reportLag("move (h3: b is local now)", h3.converge(t, entry(a, h1), entry(d, h2)))
		reportLag("move (h2: b is remote now)", h2.converge(t, entry(a, h1), entry(b, h3), entry(c, h3)))

		By("a delete")
		t = time.Now()
		w.leave(c)
		reportLag("delete", h1.converge(t, entry(b, h3), entry(d, h2)))
		h2.converge(t, entry(a, h1), entry(b, h3))

		By("an address change: the old address's entry goes")
		a2 := a
		a2.ip = "10.200.0.50"
		t = time.Now()
		w.join(a2, h1)
		reportLag("address change", h2.converge(t, entry(a2, h1), entry(b, h3)))
		h3.converge(t, entry(a2, h1), entry(d, h2))
	})

	It("repairs at its restart the entries that drifted while it was stopped, having removed none at its stop", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b, e := ep(1), ep(2), ep(5)
		w.join(a, h1)
		w.join(b, h2)
		d1 := w.start(h1)
		h1.converge(time.Now(), entry(b, h2))
		d1.stop()
		Expect(h1.entries()).To(Equal(want(entry(b, h2))), "stopping removes nothing")

		By("drift while stopped: a stale entry, a missing one, a record written")
		stale := dataplane.Peer{MAC: net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, 0x00, 0x99}, IPs: []net.IP{net.ParseIP("10.200.0.99")},
			VTEP: net.ParseIP("192.168.77.9")}
		Expect(h1.do(func() error {
			bp, _ := net.ParseMAC(b.mac)
			return errors.Join(dataplane.SetPeer(h1.network(), stale),
				dataplane.DeletePeer(h1.network(), dataplane.Peer{MAC: bp, IPs: []net.IP{net.ParseIP(b.ip)}}))
		})).To(Succeed())
		w.join(e, h2)
		Expect(h1.entries()).To(Equal(want(stale.String())))

		t := time.Now()
		w.start(h1)
		reportLag("restart repair", h1.converge(t, entry(b, h2), entry(e, h2)))
	})

	It("repairs within a resync interval what changed in the kernel behind its back while it runs", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b := ep(1), ep(2)
		w.join(a, h1)
		w.join(b, h2)
		w.start(h1)
		h1.converge(time.Now(), entry(b, h2))
		stale := dataplane.Peer{MAC: net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, 0x00, 0x98}, IPs: []net.IP{net.ParseIP("10.200.0.98")},
			VTEP: net.ParseIP("192.168.77.8")}
		Expect(h1.do(func() error { return dataplane.SetPeer(h1.network(), stale) })).To(Succeed())
		t := time.Now()
		lag := h1.converge(t, entry(b, h2))
		reportLag(fmt.Sprintf("kernel drift repaired (resync %v)", resync), lag)
		Expect(lag).To(BeNumerically("<=", resync+time.Second))
	})

	It("reports a network whose links are missing as unhealthy, touches nothing for it, and programs it once they are back", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b := ep(1), ep(2)
		w.join(a, h1)
		w.join(b, h2)
		Expect(h1.do(func() error { return dataplane.Remove(h1.network()) })).To(Succeed())
		dm := w.start(h1)
		addr := dm.d.Addr().String()
		Eventually(func() (string, error) {
			code, b, err := h1.get(addr, "/healthz")
			return fmt.Sprint(code, " ", b), err
		}, 3*time.Second, 50*time.Millisecond).Should(And(HavePrefix("503 last reconcile failed"), ContainSubstring("not found")))

		t := time.Now()
		Expect(h1.do(func() error { return dataplane.Ensure(h1.network()) })).To(Succeed())
		reportLag("links back to programmed", h1.converge(t, entry(b, h2)))
		Eventually(func() (int, error) { code, _, err := h1.get(addr, "/healthz"); return code, err }, 3*time.Second).Should(Equal(200))
	})

	It("removes on the other hosts the peers of a host whose lease expired, and adds them back when it registers again", func() {
		w := newWorld(3)
		h1, h2, h3 := w.hosts[0], w.hosts[1], w.hosts[2]
		w.createNetwork(h1, h2, h3)
		a, b, c := ep(1), ep(2), ep(3)
		w.join(a, h1)
		w.join(b, h2)
		w.join(c, h3)
		w.start(h1)
		w.start(h2)
		d3 := w.start(h3)
		w.waitRegistered(h1, h2, h3)
		t := time.Now()
		h1.converge(t, entry(b, h2), entry(c, h3))
		h2.converge(t, entry(a, h1), entry(c, h3))
		h3.converge(t, entry(a, h1), entry(b, h2))

		d3.stop()
		t = time.Now()
		lag := h1.converge(t, entry(b, h2))
		h2.converge(t, entry(a, h1))
		reportLag(fmt.Sprintf("lease expiry (TTL %v) to removal", leaseTTL), lag)
		Expect(lag).To(BeNumerically(">=", leaseTTL/2), "not before the lease can have expired")
		Expect(h3.entries()).To(Equal(want(entry(a, h1), entry(b, h2))), "the stopped host's own entries stay")
		Expect(w.store.View(func(tx store.Tx) error { _, err := tx.Get(cnm.HostKey(h3.name)); return err })).To(Succeed(),
			"its registration stays")

		t = time.Now()
		w.start(h3)
		reportLag("host back", h1.converge(t, entry(b, h2), entry(c, h3)))
	})

	It("does not register a host whose underlay address a live host has, says so on /healthz, and registers it once that host is gone", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		d1 := w.start(h1)
		w.waitRegistered(h1)
		cfg := w.daemonConfig(h2)
		cfg.UnderlayAddress = h1.ip
		twin, err := overlayd.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- twin.Run(ctx) }()
		DeferCleanup(func() { cancel(); Eventually(done, 5*time.Second).Should(Receive(BeNil())) })

		Eventually(func() (string, error) {
			_, body, err := h2.get(twin.Addr().String(), "/healthz")
			return body, err
		}, 5*time.Second, 50*time.Millisecond).Should(ContainSubstring("not registered: register host node-2: address taken: " + h1.ip.String() + " is the underlay address of live host node-1"))
		Expect(w.store.View(func(tx store.Tx) error { _, err := tx.Get(cnm.HostLiveKey(h2.name)); return err })).To(MatchError(store.ErrNotFound))

		d1.stop()
		Eventually(func() error {
			return w.store.View(func(tx store.Tx) error { _, err := tx.Get(cnm.HostLiveKey(h2.name)); return err })
		}, 4*leaseTTL+10*time.Second, 100*time.Millisecond).Should(Succeed(), "registered once node-1's lease expired")
		Eventually(func() (int, error) { code, _, err := h2.get(twin.Addr().String(), "/healthz"); return code, err }, 5*time.Second).Should(Equal(200))
	})

	It("keeps the programmed entries while etcd is down, and applies the changes made once it is back", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b, e := ep(1), ep(2), ep(5)
		w.join(a, h1)
		w.join(b, h2)
		d1 := w.start(h1)
		w.start(h2)
		h1.converge(time.Now(), entry(b, h2))
		h2.converge(time.Now(), entry(a, h1))
		addr := d1.d.Addr().String()
		Eventually(func() (int, error) { code, _, err := h1.get(addr, "/healthz"); return code, err }, 3*time.Second).Should(Equal(200))

		Expect(w.etcd.Kill(0)).To(Succeed())
		By("unhealthy once etcd has not answered for three resync intervals")
		var body string
		Eventually(func() (int, error) {
			code, b, err := h1.get(addr, "/healthz")
			body = b
			return code, err
		}, 3*overlayd.HealthPeriods*resync+2*time.Second, 100*time.Millisecond).Should(Equal(503))
		Expect(body).To(ContainSubstring("etcd has not answered"))
		Expect(h1.entries()).To(Equal(want(entry(b, h2))))
		Expect(h2.entries()).To(Equal(want(entry(a, h1))))
		Eventually(func() (string, error) {
			_, m, err := h1.get(addr, "/metrics")
			return metric(m, "cnm_overlayd_etcd_errors_total"), err
		}, 5*time.Second, 100*time.Millisecond).ShouldNot(Equal("0"))
		Expect(h1.entries()).To(Equal(want(entry(b, h2))), "the failed listing removed nothing")

		Expect(w.etcd.Restart(0)).To(Succeed())
		// The test's own client reconnects after a backoff of its own.
		Eventually(func() error { return w.tryJoin(e, h2) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		t := time.Now()
		reportLag("first change after etcd is back", h1.converge(t, entry(b, h2), entry(e, h2)))
		Eventually(func() (int, error) { code, _, err := h1.get(addr, "/healthz"); return code, err }, 5*time.Second).Should(Equal(200))
	})

	It("lists and reconciles again when its watch is compacted away, and serves /metrics and /healthz in the host's namespace", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b, e := ep(1), ep(2), ep(5)
		w.join(a, h1)
		w.join(b, h2)
		cli, err := w.etcd.Client()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		hookErr := make(chan error, 1)
		hooked := false
		dm := w.start(h1, func(d *overlayd.Daemon) {
			overlayd.SetAfterList(d, func() {
				if hooked {
					return
				}
				hooked = true
				// Between the listing and the watch: a write, and the
				// history up to it compacted, so that the watch from the
				// listed revision cannot start.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				v, _ := json.Marshal(records.Peer{Network: nid, Endpoint: e.id, Host: h2.name, VTEP: h2.ip.String(), MAC: e.mac, IPs: []string{e.ip}})
				key := w.store.Key(records.StorePrefix + records.PeerKey(nid, e.id))
				_, err := cli.Put(ctx, key, string(v))
				if err != nil {
					hookErr <- err
					return
				}
				// Compact(rev) keeps rev itself: write twice, so that
				// the watch's first revision is gone.
				resp, err := cli.Put(ctx, key, string(v))
				if err == nil {
					_, err = cli.Compact(ctx, resp.Header.Revision)
				}
				hookErr <- err
			})
		})
		h1.converge(time.Now(), entry(b, h2), entry(e, h2))
		Expect(hookErr).To(Receive(BeNil()))

		addr := dm.d.Addr().String()
		code, m, err := h1.get(addr, "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(200))
		Expect(metric(m, `cnm_overlayd_watch_restarts_total{reason="compacted"}`)).To(Equal("1"))
		Expect(metric(m, "cnm_overlayd_peers_programmed")).To(Equal("2"))
		Expect(metric(m, "cnm_overlayd_networks")).To(Equal("1"))
		Expect(metric(m, "cnm_overlayd_registered")).To(Equal("1"))
		Expect(metric(m, `cnm_overlayd_reconciles_total{result="ok"}`)).NotTo(BeElementOf("", "0"))
		Expect(m).To(ContainSubstring("cnm_overlayd_reconcile_duration_seconds_bucket"))
		Expect(m).To(ContainSubstring("cnm_overlayd_last_reconcile_age_seconds"))
		code, body, err := h1.get(addr, "/healthz")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(200), body)
	})

	It("runs as a binary in the host's namespace: --config with flags winning, /healthz and /metrics on loopback, SIGTERM stops it at once leaving the entries", func() {
		bin := daemonBinary()
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.createNetwork(h1, h2)
		a, b := ep(1), ep(2)
		w.join(a, h1)
		w.join(b, h2)

		conf := filepath.Join(GinkgoT().TempDir(), "overlayd.json")
		data, _ := json.Marshal(map[string]any{
			"etcd-endpoints": w.etcd.Endpoints, "etcd-prefix": prefix, "etcd-timeout": 2,
			"host": h1.name, "lease-ttl": "2s",
			"resync-interval": "30s", "log-format": "json",
		})
		Expect(os.WriteFile(conf, data, 0o600)).To(Succeed())
		// No --underlay-address: the default route's interface's address.
		Expect(h1.do(func() error {
			return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("192.168.77.254")})
		})).To(Succeed())
		cmd := exec.Command(bin, "--config", conf, "--resync-interval", "1s")
		logs := &syncbuf.Buffer{}
		cmd.Stdout, cmd.Stderr = GinkgoWriter, logs
		Expect(h1.do(cmd.Start)).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		DeferCleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				<-exited
			}
			fmt.Fprintf(GinkgoWriter, "cnm-overlayd log:\n%s", logs.String())
		})

		h1.converge(time.Now(), entry(b, h2))
		const addr = "127.0.0.1:9725"
		Eventually(func() (int, error) { code, _, err := h1.get(addr, "/healthz"); return code, err }, 5*time.Second).Should(Equal(200))
		_, m, err := h1.get(addr, "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(metric(m, "cnm_overlayd_peers_programmed")).To(Equal("1"))
		Expect(logs.String()).To(ContainSubstring(`"resync":"1s"`), "the command line wins over the file")
		Expect(logs.String()).To(ContainSubstring(`"leaseTTL":"2s"`), "the file's settings apply")
		Expect(logs.String()).To(ContainSubstring(`"underlay":"192.168.77.1"`), "the default route's address")

		Expect(cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
		t := time.Now()
		Eventually(exited, time.Second).Should(Receive(BeNil()), "exit code 0 within a second")
		reportLag("SIGTERM to exit", time.Since(t))
		Expect(h1.entries()).To(Equal(want(entry(b, h2))), "the entries stay")
	})
})

// daemonBinary is $CNM_BIN_DIR/cnm-overlayd when that exists, else one
// built for the test.
func daemonBinary() string {
	GinkgoHelper()
	if dir := os.Getenv("CNM_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "cnm-overlayd"); fileExists(p) {
			return p
		}
	}
	p := filepath.Join(GinkgoT().TempDir(), "cnm-overlayd")
	out, err := exec.Command("go", "build", "-o", p, "github.com/cnmnet/cnmnet/cmd/cnm-overlayd").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// overlayNet is a network as the plugin makes it with masquerade and
// isolation: a cluster record, its VNI, and on each host its links,
// firewall rules and host record carrying what removing them takes.
type overlayNet struct {
	id, name string
	vni      uint32
	subnet   string
	gateway  string
}

var (
	netA = overlayNet{id: nid, name: "ovnet-a", vni: vni, subnet: "10.200.0.0/24", gateway: "10.200.0.1/24"}
	netB = overlayNet{id: "b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1", name: "ovnet-b", vni: 4343,
		subnet: "10.201.0.0/24", gateway: "10.201.0.1/24"}
)

func (n overlayNet) dataplane(h *host) dataplane.Network {
	br, vx := dataplane.Names(n.id)
	ip, gw, _ := net.ParseCIDR(n.gateway)
	gw.IP = ip
	return dataplane.Network{ID: n.id, Bridge: br, VXLAN: vx, VNI: n.vni, Port: dataplane.DefaultPort,
		Underlay: "eth0", LocalIP: h.ip, Gateways: []*net.IPNet{gw}}
}

func (n overlayNet) firewall(h *host) firewall.Network {
	_, sn, _ := net.ParseCIDR(n.subnet)
	return firewall.Network{Name: n.name, Bridge: n.dataplane(h).Bridge, Subnets: []*net.IPNet{sn}, IPMasq: true, Isolation: true, ICC: true}
}

func (n overlayNet) hostKey(h *host) string {
	return "hosts/" + h.name + "/hostdrivers/" + records.NetworkType + "/" + records.HostNetworkKey(n.id)
}

// create does what the plugin's CreateNetwork does: the cluster record
// and the VNI's first, then on each host its part.
func (w *world) create(n overlayNet, hs ...*host) {
	GinkgoHelper()
	Expect(w.store.Update(func(tx store.Tx) error {
		if err := tx.Put(records.StorePrefix+records.VNIKey(n.vni), []byte(n.id)); err != nil {
			return err
		}
		return store.PutJSON(tx, records.StorePrefix+records.NetworkKey(n.id), records.Network{ID: n.id, Name: n.name, VNI: n.vni,
			Port: dataplane.DefaultPort, Gateways: []string{n.gateway}, Subnets: []string{n.subnet}})
	})).To(Succeed())
	for _, h := range hs {
		dn := n.dataplane(h)
		Expect(h.do(func() error {
			if err := dataplane.Ensure(dn); err != nil {
				return err
			}
			fw, err := firewall.New()
			if err != nil {
				return err
			}
			return fw.EnsureNetwork(n.firewall(h))
		})).To(Succeed())
		w.put(n.hostKey(h), records.HostNetwork{Bridge: dn.Bridge, VXLAN: dn.VXLAN, Underlay: dn.Underlay, LocalIP: h.ip.String(),
			Host: h.name, Name: n.name, VNI: n.vni, Port: dn.Port, Subnets: []string{n.subnet}, Gateways: []string{n.gateway},
			IPMasq: true, Isolation: true})
	}
}

// delete does what the plugin's DeleteNetwork does on h: h's firewall
// rules, links and host record, then the cluster records.
func (w *world) deleteOn(n overlayNet, h *host) {
	GinkgoHelper()
	Expect(h.do(func() error {
		fw, err := firewall.New()
		if err != nil {
			return err
		}
		return errors.Join(fw.RemoveNetwork(n.firewall(h)), dataplane.Remove(n.dataplane(h)))
	})).To(Succeed())
	w.delete(n.hostKey(h))
	Expect(w.store.Update(func(tx store.Tx) error {
		return errors.Join(tx.Delete(records.StorePrefix+records.VNIKey(n.vni)), tx.Delete(records.StorePrefix+records.NetworkKey(n.id)))
	})).To(Succeed())
}

// leftOn is what h still has of n: its links, the lines of iptables-save
// naming it, its bridge or its chains, and its host record.
func (w *world) leftOn(n overlayNet, h *host) []string {
	GinkgoHelper()
	left := n.linksAndRules(h)
	err := w.store.View(func(tx store.Tx) error { _, err := tx.Get(n.hostKey(h)); return err })
	switch {
	case err == nil:
		left = append(left, "host record")
	case errors.Is(err, store.ErrUnavailable):
		// etcd just came back and the test's client has not reconnected
		// yet: the record may be there.
		left = append(left, "host record (unknown: "+err.Error()+")")
	default:
		Expect(err).To(MatchError(store.ErrNotFound))
	}
	return left
}

// linksAndRules is what leftOn reports but the host record.
func (n overlayNet) linksAndRules(h *host) []string {
	GinkgoHelper()
	var left []string
	dn := n.dataplane(h)
	chains := firewall.NetworkChains(n.name)
	Expect(h.do(func() error {
		for _, name := range []string{dn.Bridge, dn.VXLAN} {
			if _, err := netlink.LinkByName(name); err == nil {
				left = append(left, "link "+name)
			}
		}
		out, err := exec.Command("iptables-save").Output()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, s := range []string{n.name, dn.Bridge, chains.Forward, chains.DNAT, chains.Postrouting} {
				if strings.Contains(line, s) {
					left = append(left, "rule "+line)
					break
				}
			}
		}
		return nil
	})).To(Succeed())
	return left
}

// isWhole says that left has both links, some rules and the host record.
func isWhole(left []string) {
	GinkgoHelper()
	Expect(left).To(ContainElements(HavePrefix("link ov-"), HavePrefix("link vx-"), HavePrefix("rule "), "host record"), "links, rules and record")
}

var _ = Describe("cnm-overlayd, when a network is deleted on another host", func() {
	It("removes the network's links, firewall state and host record here within a second, and nothing of another network", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.create(netA, h1, h2)
		w.create(netB, h2)
		w.start(h1)
		d2 := w.start(h2)
		w.waitRegistered(h1, h2)
		addr := d2.d.Addr().String()
		Eventually(func() (string, error) {
			_, m, err := h2.get(addr, "/metrics")
			return metric(m, "cnm_overlayd_networks"), err
		}, 3*time.Second, 20*time.Millisecond).Should(Equal("2"))
		isWhole(w.leftOn(netA, h2))
		leftB := w.leftOn(netB, h2)
		isWhole(leftB)

		t := time.Now()
		w.deleteOn(netA, h1)
		Expect(w.leftOn(netA, h1)).To(BeEmpty())
		Eventually(func() []string { return w.leftOn(netA, h2) }, time.Second, 10*time.Millisecond).Should(BeEmpty())
		reportLag("network deleted on h1 to removed on h2", time.Since(t))
		Expect(w.leftOn(netB, h2)).To(Equal(leftB), "the other network is untouched")
		Expect(h2.do(func() error {
			fw, err := firewall.New()
			if err != nil {
				return err
			}
			return fw.Check(netB.firewall(h2), nil)
		})).To(Succeed(), "the other network's rules are whole")
		_, m, err := h2.get(addr, "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(metric(m, "cnm_overlayd_networks_removed_total")).To(Equal("1"))
		Expect(metric(m, "cnm_overlayd_networks")).To(Equal("1"))
	})

	It("removes nothing while etcd is down, even for a network deleted meanwhile, and removes that one once etcd is back", func() {
		w := newWorld(2)
		h1, h2 := w.hosts[0], w.hosts[1]
		w.create(netA, h1, h2)
		d2 := w.start(h2)
		w.waitRegistered(h2)
		addr := d2.d.Addr().String()
		Eventually(func() (int, error) { code, _, err := h2.get(addr, "/healthz"); return code, err }, 3*time.Second).Should(Equal(200))
		left := w.leftOn(netA, h2)
		isWhole(left)

		By("etcd down under a running daemon")
		Expect(w.etcd.Kill(0)).To(Succeed())
		Eventually(func() (string, error) {
			_, m, err := h2.get(addr, "/metrics")
			return metric(m, "cnm_overlayd_etcd_errors_total"), err
		}, 5*time.Second, 100*time.Millisecond).ShouldNot(Equal("0"))
		time.Sleep(2 * resync)
		Expect(netA.linksAndRules(h2)).To(Equal(left[:len(left)-1]))
		Expect(w.etcd.Restart(0)).To(Succeed())
		Eventually(func() error {
			return w.store.View(func(tx store.Tx) error { _, err := tx.Get(netA.hostKey(h2)); return err })
		},
			10*time.Second, 100*time.Millisecond).Should(Succeed())
		Expect(w.leftOn(netA, h2)).To(Equal(left))

		By("a daemon starting while etcd is down, after the network was deleted")
		d2.stop()
		w.deleteOn(netA, h1)
		Expect(w.etcd.Kill(0)).To(Succeed())
		d2 = w.start(h2)
		time.Sleep(3 * resync)
		_, m, err := h2.get(d2.d.Addr().String(), "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(metric(m, "cnm_overlayd_networks_removed_total")).To(Equal("0"))
		Expect(metric(m, "cnm_overlayd_etcd_errors_total")).NotTo(Equal("0"))
		Expect(netA.linksAndRules(h2)).To(Equal(left[:len(left)-1]), "nothing removed")
		Expect(w.etcd.Restart(0)).To(Succeed())
		Eventually(func() []string { return w.leftOn(netA, h2) }, 15*time.Second, 50*time.Millisecond).Should(BeEmpty())
	})
})
