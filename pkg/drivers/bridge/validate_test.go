package bridge

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestValidateConfigBridgeName(t *testing.T) {
	d := &Driver{}
	for _, name := range []string{"cnm0", "br-0", "br_0", "br.0", "Br0", "0br", "abcdefghijklmno"} {
		if err := d.ValidateConfig(bridgeConf(t, name)); err != nil {
			t.Errorf("bridge %q refused: %v", name, err)
		}
	}
	for _, name := range []string{
		`br'x`, `br"x`, `br#x`, `br;x`, "br x", "br\tx", "br\nx", "br\x00x", `br/x`, `br:x`, `br*x`, `br\x`,
		"-brx", "!brx", ".brx", ".", "..", "brx+", "brü", "br\xffx", "abcdefghijklmnop", "",
	} {
		err := d.ValidateConfig(bridgeConf(t, name))
		if err == nil {
			t.Errorf("bridge %q accepted", name)
			continue
		}
		te := checkCode(t, err, types.ErrInvalidNetworkConfig)
		if !strings.HasPrefix(te.Msg, "bridge: ") {
			t.Errorf("bridge %q: %q does not name the key", name, te.Msg)
		}
	}
}

func TestValidateConfigOtherKeys(t *testing.T) {
	d := &Driver{}
	for raw, key := range map[string]string{
		`{"mtu": 67}`:                    "mtu: ",
		`{"mtu": 65536}`:                 "mtu: ",
		`{"hostBindingIPv4": "fd00::1"}`: "hostBindingIPv4: ",
		`{"hostBindingIPv4": "x"}`:       "hostBindingIPv4: ",
	} {
		te := checkCode(t, d.ValidateConfig([]byte(raw)), types.ErrInvalidNetworkConfig)
		if !strings.HasPrefix(te.Msg, key) {
			t.Errorf("%s: %q does not name the key", raw, te.Msg)
		}
	}
	if err := d.ValidateConfig([]byte(`{"mtu": 1500, "hostBindingIPv4": "127.0.0.1"}`)); err != nil {
		t.Errorf("good keys refused: %v", err)
	}
	// No bridge key at all is the default name, not an empty one.
	if err := d.ValidateConfig([]byte(`{}`)); err != nil {
		t.Errorf("no bridge key refused: %v", err)
	}
}

func bridgeConf(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"type": NetworkType, "bridge": name})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
