package bridge

import (
	"encoding/json"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
)

// fuzzAddrs are an endpoint's addresses: one IPv4 /24 and one IPv6 /64.
func fuzzAddrs() []*net.IPNet {
	var addrs []*net.IPNet
	for _, s := range []string{"10.80.1.2/24", "fd80::2/64"} {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			panic(err)
		}
		n.IP = ip
		addrs = append(addrs, n)
	}
	return addrs
}

// FuzzPortMappings feeds a fuzzed runtimeConfig.portMappings (as JSON)
// and hostBindingIPv4 through the bridge driver's parsing, network
// validation and port resolution.
func FuzzPortMappings(f *testing.F) {
	for _, s := range []struct{ mappings, hostBinding string }{
		{`[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]`, ""},
		{`[{"hostPort":53,"containerPort":53,"protocol":"UDP","hostIP":"::ffff:10.80.1.5"}]`, "0.0.0.0"},
		{`[{"hostPort":1,"containerPort":65535,"protocol":"sctp","hostIP":"fd00::1"}]`, "127.0.0.1"},
		{`[{"hostPort":8080,"containerPort":80},{"hostPort":8443,"containerPort":443,"hostIP":"::"}]`, "::ffff:192.0.2.1"},
		{`[{"hostPort":-1,"containerPort":80}]`, ""},
		{`[{"hostPort":0,"containerPort":80}]`, ""},
		{`[{"hostPort":65536,"containerPort":80}]`, ""},
		{`[{"hostPort":99999999999,"containerPort":80}]`, ""},
		{`[{"hostPort":9223372036854775808,"containerPort":80}]`, ""},
		{`[{"hostPort":"80","containerPort":80}]`, ""},
		{`[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]`, ""},
		{`[{"hostPort":80,"containerPort":80,"hostIP":"garbage"}]`, ""},
		{`[{"hostPort":80,"containerPort":80}]`, "fd00::1"},
		{`null`, "not an address"},
		{`{}`, ""},
	} {
		f.Add(s.mappings, s.hostBinding)
	}
	addrs := fuzzAddrs()
	f.Fuzz(func(t *testing.T, mappings, hostBinding string) {
		hb, err := json.Marshal(hostBinding)
		if err != nil {
			t.Fatal(err)
		}
		raw := `{"cniVersion":"1.1.0","name":"fuzz","type":"cnm-bridge","hostBindingIPv4":` + string(hb) +
			`,"runtimeConfig":{"portMappings":` + mappings + `}}`
		c, err := parseConf([]byte(raw))
		if err != nil {
			// JSON that does not parse is a decoding failure; a value of
			// the wrong form a bad value that names its key, never a Go type.
			te, ok := err.(*types.Error)
			if !ok || te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("error %T %v: want a CNI error 6 or 7", err, err)
			}
			if te.Code == types.ErrInvalidNetworkConfig && !strings.HasPrefix(te.Msg, "runtimeConfig.portMappings") &&
				!strings.HasPrefix(te.Msg, "hostBindingIPv4: ") {
				t.Fatalf("%q does not name the field", te.Msg)
			}
			if strings.Contains(te.Msg, "Go ") {
				t.Fatalf("%q speaks of Go types", te.Msg)
			}
			return
		}
		if err := c.validateNetwork(); err != nil {
			// The mappings may smuggle in other keys of the network.
			te := checkCode(t, err, types.ErrInvalidNetworkConfig)
			if !strings.HasPrefix(te.Msg, "hostBindingIPv4: ") && !strings.HasPrefix(te.Msg, "mtu: ") &&
				!strings.HasPrefix(te.Msg, "bridge: ") {
				t.Fatalf("%q does not name the field", te.Msg)
			}
			return
		}
		req := c.RuntimeConfig.PortMappings
		out, err := hostports.Resolve(req, c.HostBindingIPv4, addrs)
		if err != nil {
			te := checkCode(t, err, types.ErrInvalidNetworkConfig)
			if !strings.Contains(te.Msg, "runtimeConfig.portMappings[") {
				t.Fatalf("%q does not name the mapping", te.Msg)
			}
		}
		// Mapping by mapping: each is refused or bound on its own, and
		// the whole request is the sum of its mappings.
		var sum []hostports.Port
		failed := false
		for _, m := range req {
			one, err := hostports.Resolve([]hostports.Mapping{m}, c.HostBindingIPv4, addrs)
			if err != nil {
				checkCode(t, err, types.ErrInvalidNetworkConfig)
				failed = true
				break
			}
			checkBound(t, m, c.HostBindingIPv4, one)
			sum = append(sum, one...)
		}
		if failed != (err != nil) {
			t.Fatalf("whole request: %v; mapping by mapping failed: %v", err, failed)
		}
		if err == nil && !reflect.DeepEqual(out, sum) {
			t.Fatalf("whole request gave %+v, mapping by mapping %+v", out, sum)
		}
	})
}

func checkCode(t *testing.T, err error, code uint) *types.Error {
	t.Helper()
	te, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("error %T %q is not a *types.Error", err, err)
	}
	if te.Code != code || strings.TrimSpace(te.Msg) == "" {
		t.Fatalf("code %d (want %d), message %q", te.Code, code, te.Msg)
	}
	return te
}

// checkBound checks the ports one accepted mapping was bound to: a host
// IP binds its own family only, no host IP both (fuzzAddrs has one
// address of each), with hostBinding on the IPv4 side.
func checkBound(t *testing.T, m hostports.Mapping, hostBinding string, out []hostports.Port) {
	t.Helper()
	wantLen := 1
	if m.HostIP == "" {
		wantLen = 2
	}
	if len(out) != wantLen {
		t.Fatalf("%+v bound to %d addresses, want %d", m, len(out), wantLen)
	}
	for _, p := range out {
		if p.HostPort < 1 || p.HostPort > 65535 || p.ContainerPort < 1 || p.ContainerPort > 65535 {
			t.Fatalf("%+v accepted with ports %d->%d", m, p.HostPort, p.ContainerPort)
		}
		if p.HostPort != m.HostPort || p.ContainerPort != m.ContainerPort {
			t.Fatalf("%+v published as %+v", m, p)
		}
		if !slices.Contains([]string{"tcp", "udp", "sctp"}, p.Protocol) {
			t.Fatalf("%+v accepted with protocol %q", m, p.Protocol)
		}
		cip := net.ParseIP(p.ContainerIP)
		if p.ContainerIP != "10.80.1.2" && p.ContainerIP != "fd80::2" {
			t.Fatalf("%+v bound to container address %q", m, p.ContainerIP)
		}
		v4 := cip.To4() != nil
		hostIP := m.HostIP
		if hostIP == "" && v4 {
			hostIP = hostBinding
		}
		want := net.ParseIP(hostIP)
		if want != nil && (want.To4() != nil) != v4 {
			t.Fatalf("%+v: host IP %s published on container address %s", m, hostIP, p.ContainerIP)
		}
		if p.HostIP == "" {
			if want != nil && !want.IsUnspecified() {
				t.Fatalf("%+v: host IP %s dropped", m, want)
			}
			continue
		}
		hip := net.ParseIP(p.HostIP)
		if hip == nil || (hip.To4() != nil) != v4 {
			t.Fatalf("%+v: host IP %q for container address %s", m, p.HostIP, p.ContainerIP)
		}
		// An IPv4-mapped IPv6 host IP is honoured as that IPv4 address,
		// in its IPv4 spelling.
		if !hip.Equal(want) || (hip.To4() != nil && p.HostIP != hip.To4().String()) {
			t.Fatalf("%+v: host IP %q, asked for %q", m, p.HostIP, hostIP)
		}
	}
}
