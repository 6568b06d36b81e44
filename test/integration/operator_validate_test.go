package integration_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/test/testns"
)

// validateReport is what cnmctl validate -o json says of one file.
type validateReport struct {
	File     string `json:"file"`
	Problems []struct {
		Key        string `json:"key"`
		Problem    string `json:"problem"`
		Code       uint   `json:"code"`
		Suggestion string `json:"suggestion"`
	} `json:"problems"`
	Notes []struct {
		Key     string `json:"key"`
		Problem string `json:"problem"`
	} `json:"notes"`
}

// mistake is one configuration mistake of an operator, in the one
// plugin of a cnm-bridge conflist.
type mistake struct {
	// set are the plugin's keys that make the mistake.
	set map[string]any
	// key is the key it is named by, in the plugin; problem part of what
	// is said of it; suggestion the key an unknown one likely means.
	key, problem, suggestion string
	// code is what ADD answers; 0: ADD goes on (an unknown key) and says
	// so on stderr.
	code uint
}

// mistakePlugin is a good cnm-bridge plugin with m's keys set.
func mistakePlugin(m mistake) map[string]any {
	p := map[string]any{
		"type": "cnm-bridge",
		"ipam": map[string]any{"type": "cnm", "ranges": []any{[]any{map[string]any{"subnet": "10.85.0.0/24"}}}},
	}
	maps.Copy(p, m.set)
	return p
}

func ranges(r ...map[string]any) map[string]any {
	list := []any{}
	for _, x := range r {
		list = append(list, x)
	}
	return map[string]any{"type": "cnm", "ranges": []any{list}}
}

var mistakes = map[string]mistake{
	"ipMasq misspelt": {set: map[string]any{"ipMasg": false}, key: "ipMasg", problem: "unknown key", suggestion: "ipMasq"},
	"hairpinMode cut short": {set: map[string]any{"hairpin": true}, key: "hairpin", problem: "unknown key",
		suggestion: "hairpinMode"},
	"rangeStart misspelt": {set: map[string]any{"ipam": ranges(map[string]any{"subnet": "10.85.0.0/24", "rangeStrat": "10.85.0.10"})},
		key: "ipam.ranges[0][0].rangeStrat", problem: "unknown key", suggestion: "rangeStart"},
	"subnet misspelt in the shorthand": {set: map[string]any{"ipam": map[string]any{"type": "cnm", "subnett": "10.85.0.0/24"}},
		key: "ipam.subnett", problem: "unknown key", suggestion: "subnet", code: types.ErrInvalidNetworkConfig},
	"subnet misspelt in a range": {set: map[string]any{"ipam": ranges(map[string]any{"subnett": "10.85.0.0/24"})},
		key: "ipam.ranges[0][0].subnett", problem: "unknown key", suggestion: "subnet", code: types.ErrInvalidNetworkConfig},
	"ranges not nested": {set: map[string]any{"ipam": map[string]any{"type": "cnm", "ranges": []any{map[string]any{"subnet": "10.85.0.0/24"}}}},
		key: "ipam.ranges", problem: `want a list of range sets, each a list of ranges: [[{"subnet": "10.1.0.0/24"}]]`,
		code: types.ErrInvalidNetworkConfig},
	"reservationTTL in words": {set: map[string]any{"reservationTTL": "1 day"}, key: "reservationTTL",
		problem: `"1 day" is not a duration such as "24h" or a number of seconds`, code: types.ErrInvalidNetworkConfig},
	"mtu in a string": {set: map[string]any{"mtu": "1500"}, key: "mtu", problem: `want a number, got "1500"`,
		code: types.ErrInvalidNetworkConfig},
	"a bridge name with a #": {set: map[string]any{"bridge": "br#x"}, key: "bridge", problem: `"br#x": '#' is not allowed`,
		code: types.ErrInvalidNetworkConfig},
	"a subnet that is not one": {set: map[string]any{"ipam": ranges(map[string]any{"subnet": "10.85.0.0/33"})},
		key: "ipam.ranges[0][0].subnet", problem: `"10.85.0.0/33" is not a subnet in CIDR notation`, code: types.ErrInvalidNetworkConfig},
	"maxPersistentEndpoints negative": {set: map[string]any{"maxPersistentEndpoints": -1}, key: "maxPersistentEndpoints",
		problem: "-1 is negative", code: types.ErrInvalidNetworkConfig},
	"endpointIdentity misspelt": {set: map[string]any{"endpointIdentity": "pods"}, key: "endpointIdentity",
		problem: `"pods" is not one of "container", "pod" (did you mean "pod"?)`, code: types.ErrInvalidNetworkConfig},
	"isGateway in a string": {set: map[string]any{"isGateway": "yes"}, key: "isGateway", problem: `want true or false, got "yes"`,
		code: types.ErrInvalidNetworkConfig},
	"hostBindingIPv4 not an address": {set: map[string]any{"hostBindingIPv4": "0.0.0"}, key: "hostBindingIPv4",
		problem: `"0.0.0" is not an IPv4 address`, code: types.ErrInvalidNetworkConfig},
	"dataDir relative": {set: map[string]any{"dataDir": "var/lib/cni/cnm"}, key: "dataDir", problem: "is not an absolute path",
		code: types.ErrInvalidNetworkConfig},
}

// mistakeEntries are the mistakes keep keeps, in order of their names.
func mistakeEntries(keep func(mistake) bool) []TableEntry {
	var entries []TableEntry
	for _, name := range slices.Sorted(maps.Keys(mistakes)) {
		if m := mistakes[name]; keep(m) {
			entries = append(entries, Entry(name, m))
		}
	}
	return entries
}

func anyMistake(mistake) bool { return true }

// writeFile writes v (a string as it is, anything else as JSON) to name
// in a directory of the test's.
func writeFile(name string, v any) string {
	GinkgoHelper()
	raw, ok := v.(string)
	if !ok {
		b, err := json.MarshalIndent(v, "", "  ")
		Expect(err).NotTo(HaveOccurred())
		raw = string(b)
	}
	p := filepath.Join(GinkgoT().TempDir(), name)
	Expect(os.WriteFile(p, []byte(raw), 0o644)).To(Succeed())
	return p
}

func mistakeList(m mistake) map[string]any {
	return map[string]any{"cniVersion": "1.1.0", "name": "mistakes", "plugins": []any{mistakePlugin(m)}}
}

// validate runs cnmctl validate -o json on files.
func validate(files ...string) ([]validateReport, int) {
	GinkgoHelper()
	out, errOut, code := runCnmctl(append([]string{"validate", "-o", "json"}, files...)...)
	GinkgoWriter.Printf("cnmctl validate %s\n%s%s", strings.Join(files, " "), out, errOut)
	var reports []validateReport
	Expect(json.Unmarshal([]byte(out), &reports)).To(Succeed(), out)
	return reports, code
}

var _ = Describe("configuration mistakes are named: cnmctl validate", func() {
	examples := func() []string {
		files, _ := filepath.Glob("../../conf/*.conflist")
		more, _ := filepath.Glob("../../conf/*/*.conflist")
		return append(files, more...)
	}

	It("finds every example of conf/ clean, given as files or as the directory", func() {
		files := examples()
		Expect(len(files)).To(BeNumerically(">=", 10))
		reports, code := validate(files...)
		Expect(code).To(BeZero())
		Expect(reports).To(HaveLen(len(files)))
		for _, r := range reports {
			Expect(r.Problems).To(BeEmpty(), r.File)
		}
		reports, code = validate("../../conf")
		Expect(code).To(BeZero())
		Expect(reports).To(HaveLen(len(files)), "every conflist under conf/, recursively")
	})

	It("checks the overlay's examples as cnm-overlay, not as a plugin of another type", func() {
		files, _ := filepath.Glob("../../conf/4*-cnm-overlay*.conflist")
		Expect(files).NotTo(BeEmpty())
		reports, code := validate(files...)
		Expect(code).To(BeZero())
		for _, r := range reports {
			Expect(r.Problems).To(BeEmpty(), r.File)
			Expect(r.Notes).To(BeEmpty(), r.File)
		}
	})

	DescribeTable("names each mistake in the overlay's example, with its code",
		func(set map[string]any, key, problem string, code uint) {
			raw, err := os.ReadFile("../../conf/40-cnm-overlay.conflist")
			Expect(err).NotTo(HaveOccurred())
			var list map[string]any
			Expect(json.Unmarshal(raw, &list)).To(Succeed())
			maps.Copy(list["plugins"].([]any)[0].(map[string]any), set)
			reports, exit := validate(writeFile("overlay.conflist", list))
			Expect(exit).To(Equal(1))
			Expect(reports[0].Problems).To(ContainElement(And(
				HaveField("Key", "plugins[0]."+key), HaveField("Problem", ContainSubstring(problem)), HaveField("Code", code))))
		},
		Entry("vni out of range", map[string]any{"vni": 0}, "vni", "0 is outside 1..16777215", types.ErrInvalidNetworkConfig),
		Entry("vxlanPort out of range", map[string]any{"vxlanPort": 70000}, "vxlanPort", "70000 is outside 1..65535",
			types.ErrInvalidNetworkConfig),
		Entry("underlayAddress not an address", map[string]any{"underlayAddress": "eth0"}, "underlayAddress",
			`"eth0" is not an IP address`, types.ErrInvalidNetworkConfig),
		Entry("vni misspelt", map[string]any{"vnid": 4096}, "vnid", `unknown key (did you mean "vni"?)`, uint(0)),
		Entry("an endpoint that is not a URL etcd takes", map[string]any{"cluster": map[string]any{"etcd": map[string]any{
			"endpoints": []any{"127.0.0.1:2379"}}}}, "cluster.etcd.endpoints[0]", `"127.0.0.1:2379"`, types.ErrInvalidNetworkConfig),
		Entry("no cluster section, which ADD refuses as well", map[string]any{"cluster": nil}, "cluster",
			`network type "cnm-overlay" spans hosts`, types.ErrInvalidNetworkConfig),
		Entry("an IPAM plugin that keeps its reservations on one host", map[string]any{"ipam": map[string]any{
			"type": "host-local", "subnet": "10.90.0.0/16"}}, "ipam", `type "host-local" keeps its reservations on one host`,
			types.ErrInvalidNetworkConfig),
		Entry("a relative certificate file", map[string]any{"cluster": map[string]any{"etcd": map[string]any{
			"endpoints": []any{"https://127.0.0.1:2379"}, "certFile": "client.crt", "keyFile": "/etc/cnmnet/client.key"}}},
			"cluster.etcd.certFile", "is not an absolute path", types.ErrInvalidNetworkConfig),
	)

	It("notes the plugins of other types it does not check", func() {
		reports, code := validate("../../conf/31-cnm-bridge-chained.conflist")
		Expect(code).To(BeZero())
		Expect(reports[0].Notes).To(HaveLen(2))
		Expect(reports[0].Notes[0].Key).To(Equal("plugins[1]"))
		Expect(reports[0].Notes[0].Problem).To(ContainSubstring(`"portmap" is not a plugin of cnmnet: not checked`))
	})

	DescribeTable("names each mistake, with the key it likely means, and exits 1",
		func(m mistake) {
			reports, code := validate(writeFile("mistake.conflist", mistakeList(m)))
			Expect(code).To(Equal(1))
			Expect(reports).To(HaveLen(1))
			found := false
			for _, p := range reports[0].Problems {
				if p.Key == "plugins[0]."+m.key && strings.Contains(p.Problem, m.problem) && p.Suggestion == m.suggestion {
					found = true
				}
				Expect(p.Problem).NotTo(MatchRegexp(`Go (struct field|value)|json:|RawMessage`))
			}
			Expect(found).To(BeTrue(), "%+v", reports[0].Problems)
		},
		mistakeEntries(anyMistake),
	)

	It("names every mistake of a plugin, not only the first ADD stops at", func() {
		m := mistake{set: map[string]any{"mtu": "1500", "reservationTTL": "1 day", "bridge": "br#x", "ipMasg": false,
			"ipam": map[string]any{"type": "cnm", "ranges": []any{map[string]any{"subnet": "10.85.0.0/24"}}}}}
		reports, code := validate(writeFile("many.conflist", mistakeList(m)))
		Expect(code).To(Equal(1))
		var keys []string
		for _, p := range reports[0].Problems {
			keys = append(keys, p.Key)
		}
		Expect(keys).To(ConsistOf("plugins[0].mtu", "plugins[0].reservationTTL", "plugins[0].bridge", "plugins[0].ipMasg",
			"plugins[0].ipam.ranges"))
	})

	DescribeTable("checks a file's own mistakes",
		func(name string, content any, key, problem string, code uint) {
			path := filepath.Join(GinkgoT().TempDir(), "missing.conflist")
			if name != "" {
				path = writeFile(name, content)
			}
			reports, exit := validate(path)
			Expect(exit).To(Equal(1))
			Expect(reports[0].Problems).To(ContainElement(And(
				HaveField("Key", key), HaveField("Problem", ContainSubstring(problem)), HaveField("Code", code))))
		},
		Entry("JSON that does not parse", "broken.conflist", `{"cniVersion": "1.1.0", "name": "x", "plugins": [`,
			"", "not valid JSON", types.ErrDecodingFailure),
		Entry("a conflist key misspelt", "list.conflist", map[string]any{"cniVersion": "1.1.0", "name": "x",
			"plugin": []any{}, "plugins": []any{map[string]any{"type": "cnm-null"}}}, "plugin", `unknown key (did you mean "plugins"?)`, uint(0)),
		Entry("a conflist without plugins", "empty.conflist", map[string]any{"cniVersion": "1.1.0", "name": "x"},
			"plugins", "want a list of plugin configurations", types.ErrInvalidNetworkConfig),
		Entry("a cnmnet type misspelt", "type.conflist", map[string]any{"cniVersion": "1.1.0", "name": "x",
			"plugins": []any{map[string]any{"type": "cnm-brige"}}}, "plugins[0].type", `(did you mean "cnm-bridge"?)`, uint(0)),
		Entry("a network name that cannot be one", "name.conflist", map[string]any{"cniVersion": "1.1.0", "name": "a/b",
			"plugins": []any{map[string]any{"type": "cnm-null"}}}, "name", `"a/b"`, types.ErrInvalidNetworkConfig),
		Entry("a cniVersion cnmnet does not speak", "old.conflist", map[string]any{"cniVersion": "0.2.0", "name": "x",
			"plugins": []any{map[string]any{"type": "cnm-null"}}}, "cniVersion", `"0.2.0" is not a version cnmnet speaks`,
			types.ErrIncompatibleCNIVersion),
		Entry("a single plugin configuration (.conf)", "one.conf", map[string]any{"cniVersion": "1.0.0", "name": "x",
			"type": "cnm-bridge", "ipMasg": true}, "ipMasg", `unknown key (did you mean "ipMasq"?)`, uint(0)),
		Entry("a single plugin configuration (.json)", "one.json", map[string]any{"cniVersion": "1.0.0", "name": "x",
			"type": "cnm-null", "reservationTTL": "1 day"}, "reservationTTL", `"1 day" is not a duration`, types.ErrInvalidNetworkConfig),
		Entry("a file that is not there", "", "", "", "cannot read", uint(0)),
	)

	It("prints a table of FILE, KEY and PROBLEM, and says ok of a clean file", func() {
		bad := writeFile("bad.conflist", mistakeList(mistakes["ipMasq misspelt"]))
		out, errOut, code := runCnmctl("validate", bad, "../../conf/30-cnm-bridge.conflist")
		Expect(code).To(Equal(1))
		lines := strings.Split(strings.TrimSpace(out), "\n")
		Expect(lines[0]).To(MatchRegexp(`^FILE\s+KEY\s+PROBLEM$`))
		Expect(lines[1]).To(MatchRegexp(`^` + regexp.QuoteMeta(bad) + `\s+plugins\[0\]\.ipMasg\s+unknown key \(did you mean "ipMasq"\?\)$`))
		Expect(lines[2]).To(MatchRegexp(`^\.\./\.\./conf/30-cnm-bridge\.conflist\s+-\s+ok$`))
		Expect(errOut).To(Equal("cnmctl: 1 file has problems\n"))
	})

	It("wants a file (usage: 2) and opens no store", func() {
		_, _, code := runCnmctl("validate")
		Expect(code).To(Equal(2))
		dir := GinkgoT().TempDir()
		_, _, code = runCnmctl("--data-dir", dir, "validate", "../../conf/30-cnm-bridge.conflist")
		Expect(code).To(BeZero())
		entries, err := os.ReadDir(dir)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(BeEmpty())
	})
})

var _ = Describe("configuration mistakes are named: ADD", func() {
	var w *world
	BeforeEach(func() { w = newWorld() })

	// stdin is the configuration libcni would hand the plugin of list.
	stdin := func(list map[string]any, version string) []byte {
		GinkgoHelper()
		p := maps.Clone(list["plugins"].([]any)[0].(map[string]any))
		if _, ok := p["dataDir"]; !ok {
			p["dataDir"] = w.dataDir
		}
		p["name"], p["cniVersion"] = list["name"], version
		raw, err := json.Marshal(p)
		Expect(err).NotTo(HaveOccurred())
		return raw
	}

	// expectNothingCreated checks the ADD left no record and no link.
	expectNothingCreated := func() {
		GinkgoHelper()
		kv := w.dump()
		Expect(keysUnder(kv, "networks/")).To(BeEmpty())
		Expect(keysUnder(kv, "endpoints/")).To(BeEmpty())
		Expect(w.hostLinks("cnm-")).To(BeEmpty())
		Expect(w.hostLinks("veth")).To(BeEmpty())
	}

	DescribeTable("refuses a bad value with its code, naming the key, and creates nothing",
		func(m mistake) {
			for _, v := range allVersions {
				sb := newNS()
				_, errOut, err := w.execStderr("cnm-bridge", invocation{command: "ADD", containerID: "mistake", netns: sb.Path(),
					stdin: stdin(mistakeList(m), v)})
				Expect(cniCode(err)).To(Equal(m.code), "CNI %s: %v", v, err)
				Expect(err.Error()).To(ContainSubstring(m.key), "CNI %s", v)
				Expect(err.Error()).NotTo(MatchRegexp(`Go (struct field|value)|json:|RawMessage`))
				if m.suggestion != "" {
					Expect(errOut).To(ContainSubstring(`unknown key "%s" (did you mean "%s"?)`, m.key, m.suggestion))
				}
				expectNothingCreated()
				Expect(testns.LinkNames(sb)).To(ConsistOf("lo"))
			}
		},
		// An unknown key alone does not fail an ADD (below).
		mistakeEntries(func(m mistake) bool { return m.code != 0 }),
	)

	It("refuses JSON that does not parse as a decoding failure (6)", func() {
		sb := newNS()
		_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "broken", netns: sb.Path(),
			stdin: []byte(`{"cniVersion": "1.1.0", "name": "mistakes", "type": "cnm-bridge", "dataDir": "` + w.dataDir + `",`)})
		Expect(cniCode(err)).To(Equal(types.ErrDecodingFailure))
		// The CNI library reads cniVersion before the plugin sees it.
		Expect(err.Error()).To(ContainSubstring("network config"))
		expectNothingCreated()
	})

	DescribeTable("goes on past unknown keys, naming each on stderr only",
		func(version string) {
			m := mistake{set: map[string]any{"ipMasg": false, "hairpin": true,
				"ipam": ranges(map[string]any{"subnet": "10.85.0.0/24", "rangeStrat": "10.85.0.10"})}}
			sb := newNS()
			inv := invocation{command: "ADD", containerID: "unknown", netns: sb.Path(), stdin: stdin(mistakeList(m), version)}
			out, errOut, err := w.execStderr("cnm-bridge", inv)
			Expect(err).NotTo(HaveOccurred())
			var res map[string]any
			Expect(json.Unmarshal(out, &res)).To(Succeed(), "stdout is the result alone: %s", out)
			Expect(res["cniVersion"]).To(Equal(version))
			Expect(strings.Split(strings.TrimSpace(errOut), "\n")).To(Equal([]string{
				`cnm-bridge: network mistakes: unknown key "hairpin" (did you mean "hairpinMode"?)`,
				`cnm-bridge: network mistakes: unknown key "ipMasg" (did you mean "ipMasq"?)`,
				`cnm-bridge: network mistakes: unknown key "ipam.ranges[0][0].rangeStrat" (did you mean "rangeStart"?)`,
			}))
			Expect(testns.LinkNames(sb)).To(ContainElement("eth0"))
			inv.command = "DEL"
			_, err = w.exec("cnm-bridge", inv)
			Expect(err).NotTo(HaveOccurred())
		},
		versionEntries(),
	)

	It("says nothing on stderr of a configuration without unknown keys", func() {
		sb := newNS()
		_, errOut, err := w.execStderr("cnm-bridge", invocation{command: "ADD", containerID: "clean", netns: sb.Path(),
			stdin: stdin(mistakeList(mistake{set: map[string]any{"ipMasq": false, "IsGateway": true}}), "1.1.0")})
		Expect(err).NotTo(HaveOccurred())
		Expect(errOut).To(BeEmpty())
	})
})
