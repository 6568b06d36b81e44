package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// The two systems under test.
const (
	sysCNM = "cnm"
	sysRef = "ref"
)

var systems = []string{sysCNM, sysRef}

// label names a system in tables and charts.
func label(sys string, ports bool) string {
	switch {
	case sys == sysCNM:
		return "cnm-bridge"
	case ports:
		return "bridge+host-local+portmap"
	default:
		return "bridge+host-local"
	}
}

// cleanups run at the end of the run, last registered first, and on
// SIGINT, SIGTERM and SIGHUP.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// newNetNS creates a throwaway network namespace with lo up, removed at
// cleanup.
func newNetNS() (ns.NetNS, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, err
	}
	atCleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: lo up: %w", n.Path(), err)
	}
	return n, nil
}

// pool is a set of container namespaces created up front and reused; an
// ADD/DEL pair always completes before its namespace is used again.
type pool struct {
	nss []ns.NetNS
}

func newPool(n int) (*pool, error) {
	p := &pool{}
	for range n {
		c, err := newNetNS()
		if err != nil {
			return nil, err
		}
		p.nss = append(p.nss, c)
	}
	return p, nil
}

func (p *pool) get(i int) ns.NetNS { return p.nss[i%len(p.nss)] }

// env is one system set up for one scenario: its own "host" namespace
// (the plugins run there, never in the root namespace), its own state
// directories and its conflist.
type env struct {
	sys    string
	label  string
	net    string
	subnet string
	ports  bool
	hostNS ns.NetNS
	dir    string
	// dataDir is cnm-bridge's store directory or host-local's dataDir.
	dataDir string
	binDir  string
	list    *libcni.NetworkConfigList
	conf    []byte
	cni     *libcni.CNIConfig
}

type envSpec struct {
	sys    string
	net    string
	subnet string
	ports  bool
}

// newEnv makes a fresh host namespace and state directories for spec.
func (h *harness) newEnv(s envSpec) (*env, error) {
	hostNS, err := newNetNS()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.tmp, s.net)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	e := &env{sys: s.sys, label: label(s.sys, s.ports), net: s.net, subnet: s.subnet, ports: s.ports,
		hostNS: hostNS, dir: dir}
	var conf map[string]any
	if s.sys == sysCNM {
		e.dataDir = filepath.Join(dir, "cnm")
		e.binDir = h.cnmBin
		p := map[string]any{
			"type":    "cnm-bridge",
			"bridge":  "cnm0",
			"dataDir": e.dataDir,
			"ipMasq":  true,
			"ipam":    map[string]any{"type": "cnm", "ranges": [][]map[string]string{{{"subnet": s.subnet}}}},
			// The scale runs stand endpoints in with persistent
			// reservations: far more than the default cap allows.
			"maxPersistentEndpoints": 20000,
		}
		if s.ports {
			p["capabilities"] = map[string]bool{"portMappings": true}
		}
		conf = map[string]any{"cniVersion": "1.0.0", "name": s.net, "plugins": []any{p}}
	} else {
		e.dataDir = filepath.Join(dir, "host-local")
		e.binDir = h.refBin
		plugins := []any{map[string]any{
			"type":      "bridge",
			"bridge":    "cni0",
			"isGateway": true,
			"ipMasq":    true,
			"ipam": map[string]any{"type": "host-local", "dataDir": e.dataDir,
				"ranges": [][]map[string]string{{{"subnet": s.subnet}}}},
		}}
		if s.ports {
			plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
		}
		conf = map[string]any{"cniVersion": "1.0.0", "name": s.net, "plugins": plugins}
	}
	if e.conf, err = json.Marshal(conf); err != nil {
		return nil, err
	}
	if e.list, err = libcni.ConfListFromBytes(e.conf); err != nil {
		return nil, err
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{e.binDir}, filepath.Join(dir, "cache"), nil)
	return e, nil
}

// withExec returns a copy of e whose plugins are found in binDir and run
// through x (nil: libcni's default).
func (e *env) withExec(binDir string, x invoke.Exec) *env {
	c := *e
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(e.dir, "cache"), x)
	return &c
}

// rt is the runtime configuration of container id in c, publishing
// hostPort (0: nothing) on container port 80.
func (e *env) rt(id string, c ns.NetNS, hostPort int) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: c.Path(), IfName: "eth0"}
	if e.ports && hostPort > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
			{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"},
		}}
	}
	return rt
}

// add runs ADD from a locked thread in the host namespace and times it.
func (e *env) add(id string, c ns.NetNS, hostPort int) (time.Duration, error) {
	var d time.Duration
	err := e.hostNS.Do(func(ns.NetNS) error {
		start := time.Now()
		_, err := e.cni.AddNetworkList(context.Background(), e.list, e.rt(id, c, hostPort))
		d = time.Since(start)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("%s ADD %s: %w", e.label, id, err)
	}
	return d, nil
}

// del runs DEL like add.
func (e *env) del(id string, c ns.NetNS, hostPort int) (time.Duration, error) {
	var d time.Duration
	err := e.hostNS.Do(func(ns.NetNS) error {
		start := time.Now()
		err := e.cni.DelNetworkList(context.Background(), e.list, e.rt(id, c, hostPort))
		d = time.Since(start)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("%s DEL %s: %w", e.label, id, err)
	}
	return d, nil
}

// leftovers lists what a scenario left behind in the host namespace: veth
// links (every ADD/DEL pair complete means none).
func (e *env) leftovers() ([]string, error) {
	var out []string
	err := e.hostNS.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() == "veth" {
				out = append(out, l.Attrs().Name)
			}
		}
		return nil
	})
	return out, err
}

// reservations counts the endpoints (cnm-bridge) or addresses
// (host-local) the system still holds.
func (e *env) reservations() (int, error) {
	if e.sys == sysCNM {
		s, err := store.Open(e.dataDir, store.Options{})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		eps, err := cnm.New(s).Endpoints(e.net)
		return len(eps), err
	}
	entries, err := os.ReadDir(filepath.Join(e.dataDir, e.net))
	if os.IsNotExist(err) {
		return 0, nil
	}
	n := 0
	for _, en := range entries {
		if name := en.Name(); name != "lock" && !strings.HasPrefix(name, "last_reserved_ip") {
			n++
		}
	}
	return n, err
}
