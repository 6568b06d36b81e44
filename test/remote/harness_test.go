package remote_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"

	. "github.com/onsi/ginkgo/v2"

	"github.com/cnmnet/cnmnet/test/cniexec"
	"github.com/cnmnet/cnmnet/test/testns"
)

// allVersions are the CNI versions every plugin must answer in.
var allVersions = cniexec.Versions

func versionEntries() []TableEntry { return cniexec.VersionEntries() }

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
	testns.UpLoopback(w.hostNS)
	w.plugin = newTestPlugin(w.hostNS)
	w.server = startServer(w.plugin, GinkgoT().TempDir())
	return w
}

// conf is a network configuration on the test plugin's socket; more
// adds or (nil) removes keys.
func (w *world) conf(version string, more map[string]any) []byte {
	GinkgoHelper()
	return cniexec.Config(map[string]any{
		"cniVersion": version, "name": "rnet", "type": "cnm-remote", "dataDir": w.dataDir,
		"socket": w.server.sock, "timeout": "1s",
		"ipam": map[string]any{"subnet": "10.77.0.0/24"},
	}, more)
}

type invocation struct {
	command, containerID, netns, ifname, args string
	stdin                                     []byte
}

// exec runs cnm-remote in the host namespace; a failure is the CNI
// error it printed. stderr is returned too.
func (w *world) exec(inv invocation) ([]byte, string, error) {
	GinkgoHelper()
	return cniexec.Run(w.hostNS, filepath.Join(binDir, "cnm-remote"), cniexec.Invocation{
		Command: inv.command, ContainerID: inv.containerID, NetNS: inv.netns, IfName: inv.ifname, Args: inv.args,
		Path: binDir, Stdin: inv.stdin})
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

func cniCode(err error) uint { return cniexec.Code(err) }

// linksIn lists a namespace's links but lo.
func linksIn(n ns.NetNS) []string {
	GinkgoHelper()
	var names []string
	for _, l := range testns.LinkNames(n) {
		if l != "lo" {
			names = append(names, l)
		}
	}
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
	return testns.Interface(n, ifname)
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
