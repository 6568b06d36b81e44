package bridge

import (
	"encoding/json"
	"slices"
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
	// Values of the wrong form: named in the configuration's terms.
	for raw, msg := range map[string]string{
		`{"mtu": "1500"}`:                    `mtu: want a number, got "1500"`,
		`{"mtu": 1500.5}`:                    `mtu: want a whole number, got 1500.5`,
		`{"bridge": 5}`:                      `bridge: want a string, got 5`,
		`{"ipMasq": "false"}`:                `ipMasq: want true or false, got "false"`,
		`{"hairpinMode": 1}`:                 `hairpinMode: want true or false, got 1`,
		`{"hostBindingIPv4": ["127.0.0.1"]}`: `hostBindingIPv4: want a string, got ["127.0.0.1"]`,
		`{"runtimeConfig": {"portMappings": {"hostPort": 80}}}`:     `runtimeConfig.portMappings: want a list of objects, got {"hostPort":80}`,
		`{"runtimeConfig": {"portMappings": [{"hostPort": "80"}]}}`: `runtimeConfig.portMappings.hostPort: want a number, got a string`,
	} {
		te := checkCode(t, d.ValidateConfig([]byte(raw)), types.ErrInvalidNetworkConfig)
		if te.Msg != msg {
			t.Errorf("%s: %q, want %q", raw, te.Msg, msg)
		}
	}
	// JSON that does not parse at all is a decoding failure.
	te := checkCode(t, d.ValidateConfig([]byte(`{"mtu": 1500`)), types.ErrDecodingFailure)
	if !strings.Contains(te.Msg, "not valid JSON") {
		t.Errorf("broken JSON: %q", te.Msg)
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

func TestKnownKeys(t *testing.T) {
	keys := (&Driver{}).KnownKeys()
	for _, k := range []string{"bridge", "mtu", "isGateway", "ipMasq", "isolation", "enableICC", "hairpinMode",
		"promiscMode", "hostBindingIPv4", "runtimeConfig"} {
		if !slices.Contains(keys, k) {
			t.Errorf("KnownKeys %v lacks %q", keys, k)
		}
	}
}
