package cnm_test

import (
	"bytes"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Fuzz targets of the core's parsers. `go test` runs their seeds (f.Add
// and testdata/fuzz/<name>/); `make fuzz` explores from them.

// cniError returns err as the *types.Error it must be, failing t if it is
// something else, has a code outside codes or an empty message.
func cniError(t *testing.T, err error, codes ...uint) *types.Error {
	t.Helper()
	te, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("error %T %q is not a *types.Error", err, err)
	}
	if !slices.Contains(codes, te.Code) {
		t.Fatalf("code %d, want one of %v: %q", te.Code, codes, te.Msg)
	}
	if strings.TrimSpace(te.Msg) == "" {
		t.Fatalf("code %d with an empty message", te.Code)
	}
	return te
}

func FuzzLoadNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"net1","type":"cnm-null"}`,
		`{"cniVersion":"1.1.0","name":"pods","type":"cnm-bridge","dataDir":"/run/cnm","endpointIdentity":"pod","reservationTTL":"24h",` +
			`"ipam":{"type":"cnm","ranges":[[{"subnet":"10.22.0.0/16","rangeStart":"10.22.1.10","rangeEnd":"10.22.9.250","gateway":"10.22.0.1"}],[{"subnet":"fd22::/64"}]],` +
			`"routes":[{"dst":"192.168.0.0/16"}]}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"cnm-null","reservationTTL":3600,"runtimeConfig":{"ips":["10.1.0.5/24"],"mac":"02:42:0a:01:00:05","endpoint":"db"}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"cnm-null","args":{"cni":{"ips":["::ffff:10.1.0.5"]},"cnm":{"endpoint":"db"}}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"cnm-null","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24"}]}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"cnm-null","ipam":{"type":"host-local","subnet":"10.9.0.0/24"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"cnm-null","reservationTTL":1e300}`,
		`{"cniVersion":"1.1.0","name":"n","type":"cnm-null","reservationTTL":"-5s"}`,
		`{"cniVersion":"1.1.0","name":"../etc","type":"cnm-null","dataDir":"/var/lib/../x"}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"0.0.0.0/0"}}`,
		`{"name":"n","ipam":{"ranges":[[{"subnet":"10.1.2.3/24"}]]}}`,
		`{not json`,
		``,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// DEL's lenient reading names only a sound network and store, and
		// accepts whatever ADD's does.
		delConf, delErr := cnm.LoadNetConfForDel(raw)
		if delErr != nil {
			cniError(t, delErr, types.ErrDecodingFailure, types.ErrInvalidNetworkConfig)
		} else if cnm.ValidateNetworkName(delConf.Name) != nil || cnm.ValidateDataDir(delConf.DataDir) != nil || delConf.ReservationTTL < 0 {
			t.Fatalf("DEL accepted name %q, dataDir %q, reservationTTL %d", delConf.Name, delConf.DataDir, delConf.ReservationTTL)
		}
		conf, err := cnm.LoadNetConf(raw)
		if err != nil {
			cniError(t, err, types.ErrIncompatibleCNIVersion, types.ErrUnsupportedField,
				types.ErrInvalidEnvironmentVariables, types.ErrDecodingFailure, types.ErrInvalidNetworkConfig)
			return
		}
		if delErr != nil || delConf.Name != conf.Name || delConf.DataDir != conf.DataDir {
			t.Fatalf("ADD accepted what DEL does not read the same: %v", delErr)
		}
		if err := cnm.ValidateNetworkName(conf.Name); err != nil {
			t.Fatalf("accepted network name %q: %v", conf.Name, err)
		}
		if !filepath.IsAbs(conf.DataDir) || filepath.Clean(conf.DataDir) != conf.DataDir {
			t.Fatalf("accepted dataDir %q", conf.DataDir)
		}
		if err := cnm.ValidateDataDir(conf.DataDir); err != nil {
			t.Fatalf("accepted dataDir %q: %v", conf.DataDir, err)
		}
		switch conf.EndpointIdentity {
		case "", cnm.IdentityContainer, cnm.IdentityPod:
		default:
			t.Fatalf("accepted endpointIdentity %q", conf.EndpointIdentity)
		}
		if conf.ReservationTTL < 0 {
			t.Fatalf("accepted a negative reservationTTL %s", time.Duration(conf.ReservationTTL))
		}
		if !bytes.Equal(conf.Raw, raw) {
			t.Fatalf("Raw is not the input")
		}
		ic := conf.IPAMConf
		if ic == nil || ic.Delegated() {
			return
		}
		if len(ic.Ranges) == 0 {
			t.Fatalf("built-in ipam without ranges")
		}
		for i, set := range ic.Ranges {
			for j, r := range set {
				p, err := netip.ParsePrefix(r.Subnet)
				if err != nil || p != p.Masked() {
					t.Fatalf("ranges[%d][%d]: subnet %q is not canonical", i, j, r.Subnet)
				}
				for _, a := range []string{r.RangeStart, r.RangeEnd, r.Gateway} {
					ip, err := netip.ParseAddr(a)
					if err != nil || !p.Contains(ip) {
						t.Fatalf("ranges[%d][%d]: %q is not an address of %s", i, j, a, p)
					}
				}
			}
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"",
		"IgnoreUnknown=1",
		"IP=10.1.0.5",
		"IP=10.1.0.5/24,fd00::5",
		"IP=::ffff:10.1.0.5",
		"MAC=02:42:0a:01:00:05",
		"MAC=01:00:5e:00:00:01",
		"MAC=00:00:00:00:00:00",
		"MAC=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
		"CNM_ENDPOINT=db",
		"CNM_ENDPOINT=../evil",
		"CNM_ENDPOINT=",
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
		"IgnoreUnknown=true;IP=10.0.0.999",
		"a=b;;c=d",
		"=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := cnm.ParseArgs(s)
		if err != nil {
			cniError(t, err, types.ErrInvalidEnvironmentVariables)
			return
		}
		if a == nil || a.All == nil {
			t.Fatalf("nil args without an error")
		}
		if v, ok := a.All["CNM_ENDPOINT"]; ok {
			if a.Endpoint != v {
				t.Fatalf("Endpoint %q, CNI_ARGS says %q", a.Endpoint, v)
			}
			if err := cnm.ValidateEndpointName(a.Endpoint); err != nil {
				t.Fatalf("accepted CNM_ENDPOINT %q: %v", a.Endpoint, err)
			}
		} else if a.Endpoint != "" {
			t.Fatalf("Endpoint %q without CNM_ENDPOINT", a.Endpoint)
		}
		if a.MAC != nil {
			if len(a.MAC) != 6 {
				t.Fatalf("accepted a %d-byte MAC %s", len(a.MAC), a.MAC)
			}
			if a.MAC[0]&1 != 0 {
				t.Fatalf("accepted a multicast MAC %s", a.MAC)
			}
			if bytes.Equal(a.MAC, make([]byte, 6)) {
				t.Fatalf("accepted the zero MAC")
			}
		}
		for _, ip := range a.IPs {
			if len(ip) != 4 && len(ip) != 16 {
				t.Fatalf("accepted an IP of %d bytes", len(ip))
			}
		}
		if a.All["IP"] != "" && len(a.IPs) != strings.Count(a.All["IP"], ",")+1 {
			t.Fatalf("IP=%q gave %d addresses", a.All["IP"], len(a.IPs))
		}
	})
}

// memTx is a Tx over a map, to feed stored values to the decoders.
type memTx map[string][]byte

func (m memTx) Get(key string) ([]byte, error) {
	v, ok := m[key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m memTx) Put(key string, value []byte) error {
	m[key] = bytes.Clone(value)
	return nil
}

func (m memTx) Delete(key string) error {
	delete(m, key)
	return nil
}

func (m memTx) Scan(prefix string, fn func(string, []byte) error) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k, bytes.Clone(m[k])); err != nil {
			return err
		}
	}
	return nil
}

func FuzzRecordDecode(f *testing.F) {
	for _, s := range []string{
		`{"network":"net1","name":"ctr/eth0","id":"7f7c87b7176638d2e6edeed5f8f859c8","persistent":false,` +
			`"created":"2026-11-25T17:17:45Z","state":"joined","mac":"02:42:0a:59:00:32",` +
			`"addresses":[{"address":"10.89.0.50/24","gateway":"10.89.0.1"}],"ipam":"cnm","driverCreated":true,` +
			`"sandbox":{"key":"/run/netns/c1","containerID":"ctr","ifName":"eth0","joined":"2026-11-25T17:17:45Z",` +
			`"srcName":"vethc1","dstName":"eth0","routes":[{"dst":"0.0.0.0/0","gw":"10.89.0.1"}],` +
			`"hostInterfaces":[{"name":"cnm0","mac":"02:42:00:00:00:01"}],"dns":{"nameservers":["10.89.0.1"]}}}`,
		`{"network":"net1","name":"db","id":"x","persistent":true,"created":"2026-11-25T17:17:45Z","state":"left",` +
			`"leftAt":"2026-11-25T17:17:45+01:00","expiresAt":"9999-12-31T23:59:59Z"}`,
		`{"name":"net1","id":"abc","driver":"cnm-bridge","created":"2026-11-25T17:17:45Z","ready":true,` +
			`"config":{"cniVersion":"1.1.0","name":"net1","type":"cnm-bridge"}}`,
		`{"key":"/run/netns/c1","endpoints":["net1/db","net2/ctr/eth0"]}`,
		`{"created":"not a time"}`,
		`{"addresses":[{"address":42}]}`,
		`{"name":"ep`,
		`[]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	const key = "endpoints/net1/ep"
	f.Fuzz(func(t *testing.T, value []byte) {
		for _, newRecord := range []func() any{
			func() any { return &cnm.Endpoint{} },
			func() any { return &cnm.Network{} },
			func() any { return &cnm.SandboxRecord{} },
		} {
			tx := memTx{key: value}
			rec := newRecord()
			if err := store.GetJSON(tx, key, rec); err != nil {
				if !errors.Is(err, store.ErrCorrupt) {
					t.Fatalf("GetJSON into %T: %v does not wrap ErrCorrupt", rec, err)
				}
				if !strings.Contains(err.Error(), key) {
					t.Fatalf("GetJSON into %T: %q does not name the key", rec, err)
				}
				continue
			}
			// What was read can be written back and read again, as every
			// update of a record does.
			if err := store.PutJSON(tx, key, rec); err != nil {
				t.Fatalf("re-encoding %T read from %q: %v", rec, value, err)
			}
			again := newRecord()
			if err := store.GetJSON(tx, key, again); err != nil {
				t.Fatalf("re-reading %T written as %q: %v", rec, tx[key], err)
			}
		}
	})
}
