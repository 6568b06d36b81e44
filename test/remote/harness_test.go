package remote_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// allVersions are the CNI versions every plugin must answer in.
var allVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func versionEntries() []TableEntry {
	var out []TableEntry
	for _, v := range allVersions {
		out = append(out, Entry("CNI "+v, v))
	}
	return out
}

// world is one spec's host namespace, where cnm-remote and the test
// plugin's links live, its store and its plugin.
type world struct {
	hostNS  ns.NetNS
	dataDir string
	plugin  *testPlugin
	server  *server
}

func newWorld() *world {
	GinkgoHelper()
	w := &world{hostNS: testns.New(), dataDir: GinkgoT().TempDir()}
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})).To(Succeed())
	w.plugin = newTestPlugin(w.hostNS)
	w.server = startServer(w.plugin, GinkgoT().TempDir())
	return w
}

// conf is a network configuration on the test plugin's socket; more
// adds or (nil) removes keys.
func (w *world) conf(version string, more map[string]any) []byte {
	GinkgoHelper()
	m := map[string]any{
		"cniVersion": version, "name": "rnet", "type": "cnm-remote", "dataDir": w.dataDir,
		"socket": w.server.sock, "timeout": "1s",
		"ipam": map[string]any{"subnet": "10.77.0.0/24"},
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

type invocation struct {
	command, containerID, netns, ifname, args string
	stdin                                     []byte
}

// exec runs cnm-remote in the host namespace; a failure is the CNI
// error it printed. stderr is returned too.
func (w *world) exec(inv invocation) ([]byte, string, error) {
	if inv.ifname == "" && inv.command != "GC" && inv.command != "STATUS" {
		inv.ifname = "eth0"
	}
	var out []byte
	var stderr string
	var err error
	Expect(w.hostNS.Do(func(ns.NetNS) error {
		cmd := exec.Command(filepath.Join(binDir, "cnm-remote"))
		cmd.Env = []string{
			"CNI_COMMAND=" + inv.command, "CNI_CONTAINERID=" + inv.containerID, "CNI_NETNS=" + inv.netns,
			"CNI_IFNAME=" + inv.ifname, "CNI_ARGS=" + inv.args, "CNI_PATH=" + binDir, "PATH=" + os.Getenv("PATH"),
		}
		cmd.Stdin = bytes.NewReader(inv.stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		out, stderr = o.Bytes(), e.String()
		fmt.Fprint(GinkgoWriter, stderr)
		return nil
	})).To(Succeed())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		te := &types.Error{}
		if jerr := json.Unmarshal(out, te); jerr != nil {
			return nil, stderr, fmt.Errorf("plugin failed without a CNI error (%v): %s", err, out)
		}
		return nil, stderr, te
	}
	return out, stderr, err
}

// container is a sandbox.
type container struct {
	id string
	ns ns.NetNS
}

func newContainer(id string) container { return container{id: id, ns: testns.New()} }

func (w *world) add(version string, c container, args string, more map[string]any) ([]byte, error) {
	out, _, err := w.exec(invocation{command: "ADD", containerID: c.id, netns: c.ns.Path(), args: args, stdin: w.conf(version, more)})
	return out, err
}

func (w *world) del(version string, c container, args string) (string, error) {
	_, stderr, err := w.exec(invocation{command: "DEL", containerID: c.id, netns: c.ns.Path(), args: args, stdin: w.conf(version, nil)})
	return stderr, err
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// linksIn lists a namespace's links but lo.
func linksIn(n ns.NetNS) []string {
	GinkgoHelper()
	var names []string
	Expect(n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})).To(Succeed())
	return names
}

// vethsIn lists the test plugin's host veths in a namespace.
func vethsIn(n ns.NetNS) []string {
	var out []string
	for _, l := range linksIn(n) {
		if strings.HasPrefix(l, "rh") || strings.HasPrefix(l, "rc") {
			out = append(out, l)
		}
	}
	return out
}

// ifaceIn returns the MAC and global addresses of ifname in a namespace.
func ifaceIn(n ns.NetNS, ifname string) (mac string, addrs []string) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr.String()
		list, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range list {
			if a.IP.IsGlobalUnicast() {
				addrs = append(addrs, a.IPNet.String())
			}
		}
		return err
	})).To(Succeed())
	return mac, addrs
}

// ping sends one ping from a namespace.
func ping(from ns.NetNS, to string) error {
	var err error
	_ = from.Do(func(ns.NetNS) error {
		out, e := exec.Command("ping", "-c", "1", "-W", "2", to).CombinedOutput()
		if e != nil {
			err = fmt.Errorf("ping %s: %v: %s", to, e, out)
		}
		return nil
	})
	return err
}
