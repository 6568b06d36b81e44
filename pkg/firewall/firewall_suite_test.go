package firewall_test

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/test/testns"
)

func TestFirewall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "firewall")
}

// newTestNS makes a network namespace of the spec's own.
func newTestNS() ns.NetNS { return testns.New() }

// inNS runs f in n; iptables processes started there inherit n.
func inNS(n ns.NetNS, f func() error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error { return f() })).To(Succeed())
}

// errIn runs f in n and returns its error, for the specs that expect one.
func errIn(n ns.NetNS, f func() error) error {
	return n.Do(func(ns.NetNS) error { return f() })
}

func newFirewall() *firewall.Firewall {
	GinkgoHelper()
	fw, err := firewall.New()
	Expect(err).NotTo(HaveOccurred())
	return fw
}

// runIn runs a command in n and returns its standard output.
func runIn(n ns.NetNS, name string, args ...string) string {
	GinkgoHelper()
	var out []byte
	inNS(n, func() error {
		var err error
		out, err = exec.Command(name, args...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			GinkgoWriter.Printf("%s %v: %s\n", name, args, ee.Stderr)
		}
		return err
	})
	return string(out)
}

// saveRules returns the rules of n as bin (iptables-save or
// ip6tables-save) prints them, without the comment lines that carry the
// time of the dump.
func saveRules(n ns.NetNS, bin string) string {
	GinkgoHelper()
	var keep []string
	for _, l := range strings.Split(runIn(n, bin), "\n") {
		if !strings.HasPrefix(l, "#") && l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// chainRules returns the "-A" lines of chain in save output.
func chainRules(save, chain string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			out = append(out, l)
		}
	}
	return out
}

// linesContaining returns the lines of save that contain any of subs.
func linesContaining(save string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

func mustNet(s string) *net.IPNet {
	GinkgoHelper()
	_, n, err := net.ParseCIDR(s)
	Expect(err).NotTo(HaveOccurred())
	return n
}

func tcp(hostPort int, ctrIP string, ctrPort int) firewall.PortMapping {
	return firewall.PortMapping{Protocol: "tcp", HostPort: hostPort,
		ContainerIP: net.ParseIP(ctrIP), ContainerPort: ctrPort, Endpoint: "ep1"}
}
