package confcheck_test

import (
	"encoding/json"
	"net"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
)

// conf is a configuration with keys of every form.
type conf struct {
	MTU     int             `json:"mtu,omitempty"`
	Small   uint8           `json:"small,omitempty"`
	Bridge  *string         `json:"bridge,omitempty"`
	Masq    *bool           `json:"ipMasq,omitempty"`
	Ratio   float64         `json:"ratio,omitempty"`
	IPs     []string        `json:"ips,omitempty"`
	Addr    net.IP          `json:"addr,omitempty"`
	Caps    map[string]bool `json:"capabilities,omitempty"`
	Runtime struct {
		Ports []struct {
			HostPort int `json:"hostPort"`
		} `json:"portMappings"`
	} `json:"runtimeConfig"`
	Wait duration `json:"wait"`
}

type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

var _ = Describe("Decode", func() {
	DescribeTable("names the key and the form it takes, never a Go type",
		func(raw, want string) {
			err := confcheck.Decode("", json.RawMessage(raw), &conf{})
			Expect(err).To(MatchError(want))
			var ve *confcheck.ValueError
			Expect(err).To(BeAssignableToTypeOf(ve))
		},
		Entry("a number in a string", `{"mtu": "1500"}`, `mtu: want a number, got "1500"`),
		Entry("a fraction", `{"mtu": 1.5}`, `mtu: want a whole number, got 1.5`),
		Entry("a number out of range", `{"small": 300}`, `small: want a whole number from 0 to 255, got 300`),
		Entry("a number with an exponent", `{"mtu": 1e3}`, `mtu: want a whole number in digits alone, got 1e3`),
		Entry("a whole number with a fraction of zero", `{"mtu": 1500.0}`, `mtu: want a whole number in digits alone, got 1500.0`),
		Entry("a number past int64", `{"mtu": 9223372036854775808}`,
			`mtu: want a whole number from -9223372036854775808 to 9223372036854775807, got 9223372036854775808`),
		Entry("a negative unsigned number", `{"small": -1}`, `small: want a whole number from 0 to 255, got -1`),
		Entry("true in a string", `{"ipMasq": "true"}`, `ipMasq: want true or false, got "true"`),
		Entry("a number for a string", `{"bridge": 5}`, `bridge: want a string, got 5`),
		Entry("a string for a number", `{"ratio": "half"}`, `ratio: want a number, got "half"`),
		Entry("a string for a list", `{"ips": "10.0.0.1"}`, `ips: want a list of strings, got "10.0.0.1"`),
		Entry("a number in a list of strings", `{"ips": ["10.0.0.1", 5]}`, `ips: want a list of strings, got ["10.0.0.1",5]`),
		Entry("a number for an address", `{"addr": 10}`, `addr: want a string, got 10`),
		Entry("a string in an object of true or false", `{"capabilities": {"ips": "yes"}}`,
			`capabilities: want an object of true or false values, got {"ips":"yes"}`),
		Entry("a list for an object", `{"runtimeConfig": [1]}`, `runtimeConfig: want an object, got [1]`),
		Entry("inside the elements of a list", `{"runtimeConfig": {"portMappings": [{"hostPort": "80"}]}}`,
			`runtimeConfig.portMappings.hostPort: want a number, got a string`),
		Entry("a key in another case", `{"MTU": "1500"}`, `mtu: want a number, got "1500"`),
		Entry("the whole value", `[1]`, `want an object, got [1]`),
		Entry("a long value, cut after 60 bytes", `{"bridge": ["`+strings.Repeat("a", 70)+`"]}`,
			`bridge: want a string, got ["`+strings.Repeat("a", 58)+`…`),
		Entry("a long value, cut between characters", `{"bridge": ["`+strings.Repeat("é", 40)+`"]}`,
			`bridge: want a string, got ["`+strings.Repeat("é", 29)+`…`),
	)

	It("prefixes the key to an error of the value's own decoding", func() {
		err := confcheck.Decode("", json.RawMessage(`{"wait": "soon"}`), &conf{})
		Expect(err).To(MatchError(ContainSubstring(`time: invalid duration "soon"`)))
		err = confcheck.Decode("x", json.RawMessage(`{"wait": "soon"}`), &conf{})
		Expect(err).To(MatchError(HavePrefix("x: ")))
	})

	It("puts the key it is given before the path inside the value", func() {
		err := confcheck.Decode("plugin", json.RawMessage(`{"mtu": "1500"}`), &conf{})
		Expect(err).To(MatchError(`plugin.mtu: want a number, got "1500"`))
	})

	It("leaves the value alone when the key is absent or null", func() {
		c := &conf{MTU: 9000}
		Expect(confcheck.Decode("mtu", nil, &c.MTU)).To(Succeed())
		Expect(confcheck.Decode("mtu", json.RawMessage(` null `), &c.MTU)).To(Succeed())
		Expect(c.MTU).To(Equal(9000))
	})
})

var _ = Describe("ObjectError", func() {
	DescribeTable("says why a configuration is not an object",
		func(raw, want string) {
			err := confcheck.ObjectError([]byte(raw))
			if want == "" {
				Expect(err).NotTo(HaveOccurred())
				return
			}
			Expect(err).To(MatchError(want))
		},
		Entry("an object", `{"name": "n"}`, ""),
		Entry("null", `null`, ""),
		Entry("empty", ``, "not valid JSON: empty"),
		Entry("truncated", `{"name": `, "not valid JSON: unexpected end of JSON input (at byte 9)"),
		Entry("not JSON", `name=n`, "not valid JSON: invalid character 'a' in literal null (expecting 'u') (at byte 2)"),
		Entry("a list", `[{"name": "n"}]`, "want a JSON object, got a list"),
		Entry("a string", `"n"`, "want a JSON object, got a string"),
	)
})

var _ = Describe("Keys", func() {
	keys := confcheck.Keys{Names: []string{"bridge", "ipMasq", "hairpinMode", "isolation", "mtu", "subnet"}, Prefixes: []string{"cni.dev/"}}

	It("knows its keys in any case, as encoding/json reads them, and those under a prefix", func() {
		Expect(keys.Known("ipMasq")).To(BeTrue())
		Expect(keys.Known("IPMASQ")).To(BeTrue())
		Expect(keys.Known("cni.dev/attachments")).To(BeTrue())
		Expect(keys.Known("ipMasg")).To(BeFalse())
	})

	It("knows its keys in their case only when they are to be matched exactly", func() {
		exact := confcheck.Keys{Names: []string{"name"}, Exact: true}
		Expect(exact.Known("name")).To(BeTrue())
		Expect(exact.Known("Name")).To(BeFalse())
		Expect(exact.Unknown("", map[string]json.RawMessage{"Name": nil})).To(Equal([]confcheck.Unknown{{Key: "Name", Suggestion: "name"}}))
	})

	It("lists the unknown keys of an object in order, with their path and the likely key", func() {
		obj := map[string]json.RawMessage{"ipMasg": nil, "mtu": nil, "hairpin": nil, "zzz": nil, "MTU": nil}
		Expect(keys.Unknown("plugin", obj)).To(Equal([]confcheck.Unknown{
			{Key: "plugin.hairpin", Suggestion: "hairpinMode"},
			{Key: "plugin.ipMasg", Suggestion: "ipMasq"},
			{Key: "plugin.zzz"},
		}))
		Expect(keys.Unknown("", map[string]json.RawMessage{"mtu": nil})).To(BeEmpty())
	})

	It("says an unknown key in a line and as a problem of a listed key", func() {
		u := confcheck.Unknown{Key: "ipMasg", Suggestion: "ipMasq"}
		Expect(u.String()).To(Equal(`unknown key "ipMasg" (did you mean "ipMasq"?)`))
		Expect(u.Problem()).To(Equal(`unknown key (did you mean "ipMasq"?)`))
		Expect(confcheck.Unknown{Key: "zzz"}.String()).To(Equal(`unknown key "zzz"`))
		Expect(confcheck.Unknown{Key: "a\nb"}.String()).To(Equal(`unknown key "a\nb"`), "quoted: a key can hold anything")
	})

	It("lists the JSON keys of a struct as encoding/json names them", func() {
		type inner struct {
			A string `json:"a"`
		}
		type Embedded struct {
			B string `json:"b"`
		}
		type v struct {
			Embedded
			Named  inner `json:"named"`
			Tagged inner
			Skip   string `json:"-"`
			Plain  string
			hidden string
		}
		Expect(confcheck.Tags(v{})).To(ConsistOf("b", "named", "Tagged", "Plain"))
		Expect(confcheck.Tags(&conf{})).To(ContainElements("mtu", "ipMasq", "runtimeConfig", "wait"))
	})
})

var _ = DescribeTable("Suggest finds the key a misspelt one means, and only a close one",
	func(key string, want string) {
		known := []string{"bridge", "mtu", "isGateway", "ipMasq", "isolation", "enableICC", "hairpinMode", "promiscMode",
			"hostBindingIPv4", "rangeStart", "rangeEnd", "ranges", "subnet", "gateway", "routes", "reservationTTL"}
		Expect(confcheck.Suggest(key, known)).To(Equal(want))
	},
	Entry("a wrong letter", "ipMasg", "ipMasq"),
	Entry("two letters swapped", "rangeStrat", "rangeStart"),
	Entry("a letter more", "subnett", "subnet"),
	Entry("a letter less", "brige", "bridge"),
	Entry("another case", "IPMASK", "ipMasq"),
	Entry("the start of a key", "hairpin", "hairpinMode"),
	Entry("a key with more after it", "isolationMode", "isolation"),
	Entry("the nearest of several", "range", "ranges"),
	Entry("two edits of a long key", "reservatonTL", "reservationTTL"),
	Entry("nothing close", "snat", ""),
	Entry("too short to tell", "mt", ""),
	Entry("a different word of the same length", "gatewax", "gateway"),
	Entry("unrelated", "dataDir", ""),
)
