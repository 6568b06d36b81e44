package hostports

import (
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestResolvePortsHostIPFamilies(t *testing.T) {
	dual := testAddrs()
	v4only := dual[:1]
	for _, tc := range []struct {
		name        string
		hostIP      string
		hostBinding string
		addrs       []*net.IPNet
		want        []string // hostIP@containerIP
	}{
		{"no host IP: every family", "", "", dual, []string{"@10.80.1.2", "@fd80::2"}},
		{"0.0.0.0: IPv4 only", "0.0.0.0", "", dual, []string{"@10.80.1.2"}},
		{"::ffff:0.0.0.0 is 0.0.0.0", "::ffff:0.0.0.0", "", dual, []string{"@10.80.1.2"}},
		{":: : IPv6 only", "::", "", dual, []string{"@fd80::2"}},
		{"an IPv4 address", "192.0.2.1", "", dual, []string{"192.0.2.1@10.80.1.2"}},
		{"an IPv6 address", "fd00::1", "", dual, []string{"fd00::1@fd80::2"}},
		{"hostBindingIPv4 applies to IPv4 only", "", "192.0.2.1", dual, []string{"192.0.2.1@10.80.1.2", "@fd80::2"}},
		{"hostBindingIPv4 0.0.0.0", "", "0.0.0.0", dual, []string{"@10.80.1.2", "@fd80::2"}},
		{"an explicit host IP beats hostBindingIPv4", "::", "192.0.2.1", dual, []string{"@fd80::2"}},
		{"no host IP on IPv4 only", "", "", v4only, []string{"@10.80.1.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Resolve([]Mapping{{HostPort: 8080, ContainerPort: 80, HostIP: tc.hostIP}}, tc.hostBinding, tc.addrs)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range out {
				got = append(got, p.HostIP+"@"+p.ContainerIP)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("published on %q, want %q", got, tc.want)
			}
		})
	}
}

func TestResolvePortsRefusesAFamilyTheEndpointLacks(t *testing.T) {
	v4only := testAddrs()[:1]
	for _, hostIP := range []string{"::", "fd00::1"} {
		_, err := Resolve([]Mapping{{HostPort: 1, ContainerPort: 1}, {HostPort: 8080, ContainerPort: 80, HostIP: hostIP}}, "", v4only)
		te, ok := err.(*types.Error)
		if !ok || te.Code != types.ErrInvalidNetworkConfig {
			t.Fatalf("%s: error %v, want a CNI error 7", hostIP, err)
		}
		if !strings.Contains(te.Msg, "runtimeConfig.portMappings[1].hostIP") {
			t.Fatalf("%s: %q does not name the field", hostIP, te.Msg)
		}
	}
}

func TestHostPortKeysFollowTheFamily(t *testing.T) {
	out, err := Resolve([]Mapping{
		{HostPort: 80, ContainerPort: 80, HostIP: "0.0.0.0"},
		{HostPort: 81, ContainerPort: 80, HostIP: "::"},
		{HostPort: 82, ContainerPort: 80},
	}, "", testAddrs())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range out {
		keys = append(keys, hostPortKey(p))
	}
	want := []string{"hostports/tcp/80/any4", "hostports/tcp/81/any6", "hostports/tcp/82/any4", "hostports/tcp/82/any6"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
}

func TestOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		hostIP, ctrIP string
		want          bool
	}{
		{"", "10.80.1.2", true},
		{"0.0.0.0", "10.80.1.2", true},
		{"127.0.0.1", "10.80.1.2", true},
		{"127.1.2.3", "10.80.1.2", true},
		{"192.0.2.1", "10.80.1.2", false},
		{"", "fd80::2", false},
		{"::1", "fd80::2", false},
	} {
		r := &Record{Endpoint: "ep", Ports: []Port{{Protocol: "tcp", HostIP: tc.hostIP, HostPort: 1,
			ContainerIP: tc.ctrIP, ContainerPort: 1}}}
		if got := OnLoopback(r.Mappings()); got != tc.want {
			t.Errorf("host IP %q, container %s: OnLoopback %v, want %v", tc.hostIP, tc.ctrIP, got, tc.want)
		}
	}
}

// testAddrs are an endpoint's addresses: one IPv4 /24 and one IPv6 /64.
func testAddrs() []*net.IPNet {
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
