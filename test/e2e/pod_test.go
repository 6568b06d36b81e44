package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
)

// podSpec is what the suite asks CRI for.
type podSpec struct {
	Name, Namespace, UID string
	Attempt              int
	HostPort             int // with a port mapping hostPort -> containerPort (tcp)
}

// pod is a sandbox CRI created.
type pod struct {
	spec  podSpec
	ID    string
	PID   int    // the pause process
	IP    string // what CRI reports
	State string
	MAC   string // what podman reports (CRI reports none)
}

// podConfig is the PodSandboxConfig crictl reads (snake_case, enums as numbers).
func (n *node) podConfig(s podSpec) string {
	ports := []map[string]any{}
	if s.HostPort != 0 {
		ports = append(ports, map[string]any{"protocol": 0, "container_port": containerPort, "host_port": s.HostPort})
	}
	cfg := map[string]any{
		"metadata":      map[string]any{"name": s.Name, "namespace": s.Namespace, "uid": s.UID, "attempt": s.Attempt},
		"hostname":      s.Name,
		"labels":        map[string]string{"app": "cnm-e2e"},
		"port_mappings": ports,
		"linux": map[string]any{
			"cgroup_parent": cgroups.Parent,
			// network POD, pid CONTAINER, ipc POD
			"security_context": map[string]any{"namespace_options": map[string]int{"network": 0, "pid": 1, "ipc": 0}},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(n.dir, "pods", fmt.Sprintf("%s-%s-%s.json", s.Namespace, s.Name, s.UID))
	Expect(os.WriteFile(path, b, 0o600)).To(Succeed())
	return path
}

// tryRunPod asks CRI for a sandbox and returns crictl's error as it is.
func (n *node) tryRunPod(s podSpec) (*pod, error) {
	t := time.Now()
	out, err := n.crictl("runp", n.podConfig(s))
	if err != nil {
		fmt.Fprintf(GinkgoWriter, "node %s: runp %s/%s refused in %s\n", n.name, s.Namespace, s.Name, time.Since(t).Round(time.Millisecond))
		return nil, err
	}
	p := &pod{spec: s, ID: strings.TrimSpace(out)}
	fmt.Fprintf(GinkgoWriter, "node %s: runp %s/%s: %s in %s\n", n.name, s.Namespace, s.Name, short(p.ID), time.Since(t).Round(time.Millisecond))
	n.inspect(p)
	return p, nil
}

// runPod asks CRI for a sandbox, which must become ready.
func (n *node) runPod(s podSpec) *pod {
	GinkgoHelper()
	p, err := n.tryRunPod(s)
	Expect(err).NotTo(HaveOccurred())
	Expect(p.State).To(Equal("SANDBOX_READY"))
	Expect(p.PID).To(BeNumerically(">", 1))
	return p
}

// inspect reads the sandbox's state, IP and pause PID from CRI.
func (n *node) inspect(p *pod) {
	GinkgoHelper()
	out, err := n.crictl("inspectp", "-o", "json", p.ID)
	Expect(err).NotTo(HaveOccurred())
	var r struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	Expect(json.Unmarshal([]byte(out), &r)).To(Succeed(), out)
	p.State, p.IP, p.PID = r.Status.State, r.Status.Network.IP, r.Info.PID
}

// removePod stops and removes a sandbox, timing each.
func (n *node) removePod(p *pod) {
	GinkgoHelper()
	t := time.Now()
	_, err := n.crictl("stopp", p.ID)
	Expect(err).NotTo(HaveOccurred())
	stop := time.Since(t)
	t = time.Now()
	_, err = n.crictl("rmp", p.ID)
	Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(GinkgoWriter, "node %s: stopp %s in %s, rmp in %s\n", n.name, short(p.ID),
		stop.Round(time.Millisecond), time.Since(t).Round(time.Millisecond))
}

// in runs fn in the pod's network namespace.
func (p *pod) in(fn func() error) error {
	netns, err := ns.GetNS(fmt.Sprintf("/proc/%d/ns/net", p.PID))
	if err != nil {
		return err
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error { return fn() })
}

// iface is what the pod's namespace shows of one link.
type iface struct {
	Name  string
	Type  string // "veth", "bridge", ...
	MAC   string
	Up    bool
	Addrs []string // CIDR
}

// links returns the pod's links.
func (p *pod) links() []iface {
	GinkgoHelper()
	var out []iface
	Expect(p.in(func() (err error) {
		out, err = listLinks()
		return err
	})).To(Succeed())
	return out
}

// link returns the pod's link called name.
func (p *pod) link(name string) iface {
	GinkgoHelper()
	for _, l := range p.links() {
		if l.Name == name {
			return l
		}
	}
	Fail(fmt.Sprintf("pod %s has no %s", p.spec.Name, name))
	return iface{}
}

// gateway returns the pod's IPv4 default gateway.
func (p *pod) gateway() string {
	GinkgoHelper()
	var gw string
	Expect(p.in(func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw != nil {
				gw = r.Gw.String()
			}
		}
		return nil
	})).To(Succeed())
	Expect(gw).NotTo(BeEmpty(), "pod %s has no default route", p.spec.Name)
	return gw
}

// ping pings target once from the pod (within 5 s).
func (p *pod) ping(target string) error {
	_, err := command(time.Minute, nil, "nsenter", "-t", fmt.Sprint(p.PID), "-n", "--",
		"ping", "-n", "-q", "-c", "1", "-W", "1", "-w", "5", target)
	return err
}

// serve runs an HTTP server on port in the pod's network namespace, as the
// pod's application would; it answers with body. The socket is made in
// the namespace; the goroutines serving it may run anywhere.
func (p *pod) serve(port int, body string) (stop func()) {
	GinkgoHelper()
	var ln net.Listener
	Expect(p.in(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})).To(Succeed())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }
}

// httpGet fetches url with every connection made in the network namespace
// at nsPath.
func httpGet(nsPath, url string) (string, error) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
			var err error
			conn, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
	}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// hostLinks returns the links of the node's host namespace.
func (n *node) hostLinks() []iface {
	GinkgoHelper()
	var out []iface
	Expect(n.inHost(func() (err error) {
		out, err = listLinks()
		return err
	})).To(Succeed())
	return out
}

// listLinks lists the links of the current network namespace with their
// addresses.
func listLinks() ([]iface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []iface
	for _, l := range links {
		a := l.Attrs()
		i := iface{Name: a.Name, Type: l.Type(), MAC: a.HardwareAddr.String(), Up: a.Flags&net.FlagUp != 0}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, ad := range addrs {
			i.Addrs = append(i.Addrs, ad.IPNet.String())
		}
		out = append(out, i)
	}
	return out, nil
}

// names lists the names of links.
func names(links []iface) []string {
	var out []string
	for _, l := range links {
		out = append(out, l.Name)
	}
	return out
}

// hasAddr reports whether a link carries ip (any prefix length).
func (i iface) hasAddr(ip string) bool {
	for _, a := range i.Addrs {
		if strings.SplitN(a, "/", 2)[0] == ip {
			return true
		}
	}
	return false
}

// inSubnet reports whether ip is in the subnet cidr.
func inSubnet(ip, cidr string) bool {
	_, n, err := net.ParseCIDR(cidr)
	return err == nil && n.Contains(net.ParseIP(ip))
}

// macFor is the MAC cnm-bridge derives from an IPv4 address: 02:42 and the
// address's four bytes.
func macFor(ip string) string {
	v4 := net.ParseIP(ip).To4()
	if v4 == nil {
		return ""
	}
	return net.HardwareAddr{0x02, 0x42, v4[0], v4[1], v4[2], v4[3]}.String()
}
