package cnm

import (
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// errRollback discards a fuzz iteration's transaction, so that every
// input meets the same empty store.
var errRollback = errors.New("rollback")

// FuzzRuntimeConfig feeds fuzzed per-request values (static addresses,
// MAC, endpoint name, CNI_ARGS) through LoadNetConf, ParseArgs, the
// identity and static-request resolution of ADD and the built-in
// allocator of a dual-stack network.
//
// via picks where the values go: bit 0 set puts ips and mac in
// args.cni instead of runtimeConfig, bit 1 set puts endpoint in args.cnm,
// bit 2 sets endpointIdentity "pod".
func FuzzRuntimeConfig(f *testing.F) {
	type seed struct {
		ips, mac, endpoint, cniArgs string
		via                         byte
	}
	for _, s := range []seed{
		{"", "", "", "", 0},
		{"10.1.0.5/24", "02:42:0a:01:00:05", "db", "", 0},
		{"10.1.0.5,fd01::5", "", "", "", 1},
		{"::ffff:10.1.0.7", "", "web-0", "", 2},
		{"10.1.0.0", "", "", "", 0},          // the network address
		{"10.1.0.1", "", "", "", 0},          // the gateway
		{"10.1.0.255", "", "", "", 0},        // the broadcast address
		{"10.1.0.5,10.1.0.6", "", "", "", 0}, // two in one range set
		{"192.168.0.1", "", "", "", 0},       // in no range set
		{"", "01:00:5e:00:00:01", "../evil", "", 0},
		{"", "", "", "CNM_ENDPOINT=db;IP=10.1.0.9;MAC=02:00:00:00:00:09", 0},
		{"", "", "", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0", 4},
		{"", "", "", "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=web-0", 4},
		{"ten.0.0.1", "zz", "a\x00b", "IP=", 3},
	} {
		f.Add(s.ips, s.mac, s.endpoint, s.cniArgs, s.via)
	}
	st, err := store.Open(f.TempDir(), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })

	f.Fuzz(func(t *testing.T, ips, mac, endpoint, cniArgs string, via byte) {
		var ipList []string
		if ips != "" {
			ipList = strings.Split(ips, ",")
		}
		conf := map[string]any{
			"cniVersion": "1.1.0", "name": "fuzznet", "type": "cnm-null",
			"ipam": map[string]any{"type": "cnm", "ranges": []any{
				[]any{map[string]any{"subnet": "10.1.0.0/24"}},
				[]any{map[string]any{"subnet": "fd01::/64"}},
			}},
		}
		static := map[string]any{"ips": ipList, "mac": mac}
		rc, cniArgsSection := map[string]any{}, map[string]any{}
		if via&1 == 0 {
			rc = static
		} else {
			cniArgsSection["cni"] = static
		}
		if via&2 == 0 {
			rc["endpoint"] = endpoint
		} else {
			cniArgsSection["cnm"] = map[string]any{"endpoint": endpoint}
		}
		conf["runtimeConfig"] = rc
		conf["args"] = cniArgsSection
		if via&4 != 0 {
			conf["endpointIdentity"] = IdentityPod
		}
		raw, err := json.Marshal(conf)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := LoadNetConf(raw)
		if err != nil {
			t.Fatalf("LoadNetConf refused per-request values: %v\n%s", err, raw)
		}
		args, err := ParseArgs(cniArgs)
		if err != nil {
			checkCNIError(t, err, types.ErrInvalidEnvironmentVariables)
			return
		}

		id, err := nc.resolveIdentity(args, "ctr", "eth0")
		if err != nil {
			checkCNIError(t, err, types.ErrInvalidNetworkConfig, types.ErrInvalidEnvironmentVariables)
			return
		}
		checkIdentity(t, nc, args, id)

		req, err := nc.staticRequest(args)
		if err != nil {
			checkCNIError(t, err, types.ErrInvalidNetworkConfig)
			return
		}
		checkStatic(t, nc, args, req)

		// The allocation an ADD would make: the request is honoured
		// exactly, IPv4-mapped addresses as IPv4, or refused.
		err = st.Update(func(tx store.Tx) error {
			got, err := ipam.NewAllocator(tx, nc.Name, nc.IPAMConf).Allocate("fuzz-owner", req.IPs)
			if err != nil {
				// As the plugin would answer.
				ce := AsCNIError(err)
				switch {
				case errors.Is(err, ipam.ErrRequestConflict):
					// Two addresses in one range set: a request that cannot
					// be honoured, answered with code 999 instead of 7 (see
					// the report of the fuzz targets).
				case ce.Code != types.ErrInvalidNetworkConfig:
					t.Errorf("allocating %v: code %d: %v", req.IPs, ce.Code, err)
				}
				return errRollback
			}
			for _, want := range req.IPs {
				found := false
				for _, ipc := range got {
					found = found || ipc.Address.IP.Equal(want)
				}
				if !found {
					t.Errorf("requested %s, allocated %v", want, got)
				}
			}
			for _, ipc := range got {
				if v4 := ipc.Address.IP.To4(); v4 != nil && len(ipc.Address.IP) != 4 {
					t.Errorf("allocated IPv4 %s in its 16-byte form", ipc.Address.IP)
				}
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("transaction: %v", err)
		}
	})
}

func checkCNIError(t *testing.T, err error, codes ...uint) {
	t.Helper()
	te, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("error %T %q is not a *types.Error", err, err)
	}
	if !slices.Contains(codes, te.Code) || strings.TrimSpace(te.Msg) == "" {
		t.Fatalf("code %d (want one of %v), message %q", te.Code, codes, te.Msg)
	}
}

// checkIdentity checks that every part of an endpoint's name is a token
// that cannot climb out of a store key, and that an explicit name wins.
func checkIdentity(t *testing.T, nc *NetConf, args *Args, id identity) {
	t.Helper()
	parts := strings.Split(id.Name, "/")
	if id.Persistent && nc.EndpointIdentity == IdentityPod && len(parts) == 3 && parts[2] == "eth0" {
		parts = parts[:2] // namespace/pod/ifname
	} else if !id.Persistent {
		if id.Name != "ctr/eth0" {
			t.Fatalf("ephemeral endpoint %q, want ctr/eth0", id.Name)
		}
		return
	}
	for _, p := range parts {
		if err := validateToken(p, 253); err != nil {
			t.Fatalf("endpoint name %q: %v", id.Name, err)
		}
	}
	explicit := nc.RuntimeConfig.Endpoint
	if explicit == "" && nc.Args != nil && nc.Args.CNM != nil {
		explicit = nc.Args.CNM.Endpoint
	}
	if explicit == "" {
		explicit = args.Endpoint
	}
	if explicit != "" && id.Name != explicit {
		t.Fatalf("endpoint %q, but %q was asked for", id.Name, explicit)
	}
}

func checkStatic(t *testing.T, nc *NetConf, args *Args, req staticRequest) {
	t.Helper()
	for _, ip := range req.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			t.Fatalf("static IP of %d bytes", len(ip))
		}
	}
	if n := len(nc.RuntimeConfig.IPs); n > 0 && len(req.IPs) != n {
		t.Fatalf("%d runtimeConfig.ips gave %d addresses", n, len(req.IPs))
	}
	if req.MAC != nil && (len(req.MAC) != 6 || req.MAC[0]&1 != 0) {
		t.Fatalf("static MAC %s", req.MAC)
	}
	if nc.RuntimeConfig.MAC == "" && (nc.Args == nil || nc.Args.CNI == nil || nc.Args.CNI.MAC == "") &&
		req.MAC.String() != args.MAC.String() {
		t.Fatalf("MAC %s, CNI_ARGS says %s", req.MAC, args.MAC)
	}
}
