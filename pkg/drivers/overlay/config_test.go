package overlay

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
)

func TestParseConfNamesTheKey(t *testing.T) {
	for _, tc := range []struct{ conf, key string }{
		{`{"vni": 0}`, "vni"},
		{`{"vni": 16777216}`, "vni"},
		{`{"vni": -1}`, "vni"},
		{`{"vni": "5"}`, "vni"},
		{`{"vxlanPort": 0}`, "vxlanPort"},
		{`{"vxlanPort": 65536}`, "vxlanPort"},
		{`{"mtu": 67}`, "mtu"},
		{`{"underlayAddress": "10.0.0"}`, "underlayAddress"},
		{`{"ipMasq": "yes"}`, "ipMasq"},
	} {
		_, err := parseConf([]byte(tc.conf))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, tc.key) {
			t.Errorf("%s: got %v, want error 7 naming %s", tc.conf, err, tc.key)
		}
	}
	for _, ok := range []string{`{}`, `{"vni": 1}`, `{"vni": 16777215, "vxlanPort": 65535, "mtu": 1400}`} {
		if _, err := parseConf([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := parseConf([]byte(`[]`)); err == nil || err.(*types.Error).Code != types.ErrDecodingFailure {
		t.Errorf("a configuration that is not an object: got %v, want error 6", err)
	}
}

func TestMACForIsStableUnicastAndLocal(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.1.2.3/24")
	v4.IP = net.ParseIP("10.1.2.3")
	if got := endpointkit.MACFor([]*net.IPNet{v4}, 0, macSalt).String(); got != "02:42:0a:01:02:03" {
		t.Errorf("IPv4: got %s", got)
	}
	v6 := &net.IPNet{IP: net.ParseIP("fd00::5"), Mask: net.CIDRMask(64, 128)}
	a, b := endpointkit.MACFor([]*net.IPNet{v6}, 0, macSalt), endpointkit.MACFor([]*net.IPNet{v6}, 0, macSalt)
	if a.String() != b.String() || a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("IPv6: %s and %s: want the same locally administered unicast MAC", a, b)
	}
	if endpointkit.MACFor([]*net.IPNet{v6}, 1, macSalt).String() == a.String() {
		t.Errorf("another try gave the same MAC %s", a)
	}
}
