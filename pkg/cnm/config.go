package cnm

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/ipam"
)

// DefaultDataDir is where the store lives unless dataDir says otherwise.
const DefaultDataDir = "/var/lib/cni/cnm"

// Endpoint identities (config key endpointIdentity).
const (
	IdentityContainer = "container"
	IdentityPod       = "pod"
)

// NetConf is the part of a network configuration the core reads; drivers
// read their own keys from the raw bytes.
type NetConf struct {
	types.NetConf

	// DataDir is the directory of the store.
	DataDir string `json:"dataDir,omitempty"`
	// EndpointIdentity is "container" (default: the endpoint is the
	// attachment and goes with DEL) or "pod" (the endpoint is named by the
	// pod's namespace and name and outlives its containers).
	EndpointIdentity string `json:"endpointIdentity,omitempty"`
	// PodNamespace is the namespace endpointIdentity "pod" assumes when
	// CNI_ARGS has no K8S_POD_NAMESPACE: runtimes such as Podman send
	// only K8S_POD_NAME. Empty refuses such an ADD.
	PodNamespace string `json:"podNamespace,omitempty"`
	// ReservationTTL is how long a persistent endpoint keeps its address
	// after its last DEL; zero keeps it until it is deleted explicitly.
	ReservationTTL Duration `json:"reservationTTL,omitempty"`
	// MaxPersistentEndpoints caps the endpoints of the network that keep
	// their reservation after DEL: whoever can set CNI_ARGS or
	// runtimeConfig can name one, and each holds addresses. Nil means
	// the default (persistentLimit); 0 allows none.
	MaxPersistentEndpoints *int `json:"maxPersistentEndpoints,omitempty"`
	// Cluster names the cluster store of a network whose driver is of
	// global scope; Host is this host's name there (default: the
	// machine's hostname).
	Cluster *ClusterConf `json:"cluster,omitempty"`
	Host    string       `json:"host,omitempty"`

	RuntimeConfig struct {
		IPs      []string `json:"ips,omitempty"`
		MAC      string   `json:"mac,omitempty"`
		Endpoint string   `json:"endpoint,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	Args *struct {
		CNI *struct {
			IPs []string `json:"ips,omitempty"`
			MAC string   `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
		CNM *struct {
			Endpoint string `json:"endpoint,omitempty"`
		} `json:"cnm,omitempty"`
	} `json:"args,omitempty"`

	// IPAMConf is the parsed ipam section; nil when the network has none.
	IPAMConf *ipam.Config `json:"-"`
	// Raw is the configuration as the runtime passed it.
	Raw []byte `json:"-"`
}

// Duration is a time span in JSON as a Go duration string ("72h") or a
// number of seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler. Its errors say what is
// wrong with the value; the decoder that knows the key prefixes it.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		if math.IsNaN(secs) || math.Abs(secs) > maxDurationSeconds {
			return fmt.Errorf("%s seconds is out of range", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) != nil {
		return fmt.Errorf("%s is not a duration such as \"24h\" or a number of seconds", confcheck.Shorten(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"24h\" or a number of seconds", s)
	}
	*d = Duration(v)
	return nil
}

// maxDurationSeconds is the longest span a time.Duration holds.
const maxDurationSeconds = float64(math.MaxInt64 / int64(time.Second))

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// rawNetConf holds the keys the core reads, undecoded, so that each is
// decoded on its own and a value of the wrong form is named by its key.
// encoding/json matches the keys, as it would for NetConf. Its tags are
// the core's keys (ConfigKeys).
type rawNetConf struct {
	CNIVersion       json.RawMessage `json:"cniVersion"`
	Name             json.RawMessage `json:"name"`
	Type             json.RawMessage `json:"type"`
	Capabilities     json.RawMessage `json:"capabilities"`
	IPAM             json.RawMessage `json:"ipam"`
	DNS              json.RawMessage `json:"dns"`
	PrevResult       json.RawMessage `json:"prevResult"`
	ValidAttachments json.RawMessage `json:"cni.dev/valid-attachments"`
	RuntimeConfig    json.RawMessage `json:"runtimeConfig"`
	Args             json.RawMessage `json:"args"`

	DataDir                json.RawMessage `json:"dataDir"`
	EndpointIdentity       json.RawMessage `json:"endpointIdentity"`
	PodNamespace           json.RawMessage `json:"podNamespace"`
	ReservationTTL         json.RawMessage `json:"reservationTTL"`
	MaxPersistentEndpoints json.RawMessage `json:"maxPersistentEndpoints"`
	Cluster                json.RawMessage `json:"cluster"`
	Host                   json.RawMessage `json:"host"`
}

// decodeNetConf decodes a configuration key by key. One that is not a
// JSON object is a decoding failure (6); a value of the wrong form is a
// bad value (7) that names its key and the form it takes.
func decodeNetConf(raw []byte) (*NetConf, error) {
	if err := confcheck.ObjectError(raw); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode network configuration: %v", err)
	}
	var r rawNetConf
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode network configuration: %v", err)
	}
	conf := &NetConf{Raw: raw}
	var ipamType types.IPAM
	for _, f := range []struct {
		key string
		raw json.RawMessage
		dst any
	}{
		{"cniVersion", r.CNIVersion, &conf.CNIVersion},
		{"name", r.Name, &conf.Name},
		{"type", r.Type, &conf.Type},
		{"capabilities", r.Capabilities, &conf.Capabilities},
		{"ipam", r.IPAM, &ipamType},
		{"dns", r.DNS, &conf.DNS},
		{"prevResult", r.PrevResult, &conf.RawPrevResult},
		{"cni.dev/valid-attachments", r.ValidAttachments, &conf.ValidAttachments},
		{"runtimeConfig", r.RuntimeConfig, &conf.RuntimeConfig},
		{"args", r.Args, &conf.Args},
		{"dataDir", r.DataDir, &conf.DataDir},
		{"endpointIdentity", r.EndpointIdentity, &conf.EndpointIdentity},
		{"podNamespace", r.PodNamespace, &conf.PodNamespace},
		{"reservationTTL", r.ReservationTTL, &conf.ReservationTTL},
		{"maxPersistentEndpoints", r.MaxPersistentEndpoints, &conf.MaxPersistentEndpoints},
	} {
		if err := confcheck.Decode(f.key, f.raw, f.dst); err != nil {
			return nil, invalidConfig("%v", err)
		}
	}
	conf.IPAM = ipamType
	if err := conf.decodeClusterKeys(r.Cluster, r.Host); err != nil {
		return nil, err
	}
	return conf, nil
}

// LoadNetConf parses and validates a network configuration.
func LoadNetConf(raw []byte) (*NetConf, error) {
	conf, err := decodeNetConf(raw)
	if err != nil {
		return nil, err
	}
	if conf.DataDir == "" {
		conf.DataDir = DefaultDataDir
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	ic, err := ipam.ParseConfig(raw)
	if err != nil {
		return nil, invalidConfig("%v", err)
	}
	conf.IPAMConf = ic
	if conf.RawPrevResult != nil {
		prev, _ := json.Marshal(conf.RawPrevResult) // ParsePrevResult drops it
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, newError(types.ErrDecodingFailure, "%v", prevResultError(prev, err))
		}
	}
	return conf, nil
}

// prevResultError says why prevResult is not a result, in the result's
// own terms where it can: the CNI library's error speaks of Go types.
func prevResultError(prev []byte, err error) error {
	if derr := confcheck.Decode("prevResult", prev, &current.Result{}); derr != nil {
		return derr
	}
	if strings.Contains(err.Error(), "Go ") {
		return errors.New("prevResult: not a CNI result")
	}
	return fmt.Errorf("prevResult: %v", err)
}

func (c *NetConf) validate() error {
	if err := ValidateNetworkName(c.Name); err != nil {
		return invalidConfig("name: %v", err)
	}
	if err := validatePath(c.DataDir); err != nil {
		return invalidConfig("dataDir: %v", err)
	}
	switch c.EndpointIdentity {
	case "", IdentityContainer, IdentityPod:
	default:
		hint := ""
		if s := confcheck.Suggest(c.EndpointIdentity, []string{IdentityContainer, IdentityPod}); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		return invalidConfig("endpointIdentity: %q is not one of %q, %q%s", c.EndpointIdentity, IdentityContainer, IdentityPod, hint)
	}
	if c.PodNamespace != "" {
		if err := ValidateEndpointName(c.PodNamespace); err != nil {
			return invalidConfig("podNamespace: %v", err)
		}
	}
	if c.ReservationTTL < 0 {
		return invalidConfig("reservationTTL: %s is negative", time.Duration(c.ReservationTTL))
	}
	if m := c.MaxPersistentEndpoints; m != nil && *m < 0 {
		return invalidConfig("maxPersistentEndpoints: %d is negative", *m)
	}
	return c.validateClusterKeys()
}

// DefaultMaxPersistentEndpoints caps the persistent endpoints of a
// network without built-in address ranges, and of a large one.
const DefaultMaxPersistentEndpoints = 1024

// persistentLimit is the network's cap on persistent endpoints: the
// configured one, else half the addresses of its smallest built-in
// range set (so that containers without a reservation always find
// addresses), at most DefaultMaxPersistentEndpoints.
func (c *NetConf) persistentLimit() int {
	if c.MaxPersistentEndpoints != nil {
		return *c.MaxPersistentEndpoints
	}
	limit := int64(DefaultMaxPersistentEndpoints)
	if c.IPAMConf != nil && !c.IPAMConf.Delegated() {
		for _, n := range c.IPAMConf.SetCapacities() {
			if half := new(big.Int).Rsh(n, 1); half.IsInt64() && half.Int64() < limit {
				limit = half.Int64()
			}
		}
	}
	return int(limit)
}

const (
	maxNameLen = 128
	maxPathLen = 4096
)

// ValidateNetworkName accepts the CNI network name syntax, bounded.
func ValidateNetworkName(name string) error {
	return validateToken(name, maxNameLen)
}

// ValidateContainerID accepts the CNI container ID syntax, bounded.
func ValidateContainerID(id string) error {
	return validateToken(id, 1024)
}

// ValidateEndpointName accepts a name an operator gives an endpoint.
func ValidateEndpointName(name string) error {
	return validateToken(name, maxNameLen)
}

// validateToken accepts [A-Za-z0-9][A-Za-z0-9_.-]*: nothing that could
// climb out of a key or path, or hide a control character.
func validateToken(s string, max int) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > max {
		return fmt.Errorf("%d characters, longer than %d", len(s), max)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if i > 0 && (r == '_' || r == '.' || r == '-') {
			ok = true
		}
		if !ok {
			return fmt.Errorf("%q: character %q at %d not allowed (letters, digits, and _ . - after the first)", s, r, i)
		}
	}
	return nil
}

// ValidateIfName accepts a Linux interface name.
func ValidateIfName(name string) error {
	if name == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(name) > 15 {
		return fmt.Errorf("%q is longer than 15 characters", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f || r > 0x7e {
			return fmt.Errorf("%q: character %q not allowed", name, r)
		}
	}
	return nil
}

// validatePath accepts a clean absolute path without control characters.
func validatePath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("longer than %d characters", maxPathLen)
	}
	if filepath.Clean(p) != p {
		return fmt.Errorf("%q is not a clean path", p)
	}
	for _, r := range p {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("%q contains a control character", p)
		}
	}
	return nil
}

// Args are the CNI_ARGS the core understands.
type Args struct {
	IPs          []net.IP
	MAC          net.HardwareAddr
	Endpoint     string
	PodNamespace string
	PodName      string
	// All holds every key, for the drivers.
	All map[string]string
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are kept for
// drivers and otherwise ignored, as runtimes pass keys for many plugins.
func ParseArgs(s string) (*Args, error) {
	a := &Args{All: map[string]string{}}
	if s == "" {
		return a, nil
	}
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, invalidEnv("CNI_ARGS: %q is not KEY=VALUE", pair)
		}
		a.All[k] = v
	}
	var err error
	if v := a.All["IP"]; v != "" {
		if a.IPs, err = parseIPList(strings.Split(v, ",")); err != nil {
			return nil, invalidEnv("CNI_ARGS IP: %v", err)
		}
	}
	if v := a.All["MAC"]; v != "" {
		if a.MAC, err = parseMAC(v); err != nil {
			return nil, invalidEnv("CNI_ARGS MAC: %v", err)
		}
	}
	if v, ok := a.All["CNM_ENDPOINT"]; ok {
		if err := ValidateEndpointName(v); err != nil {
			return nil, invalidEnv("CNI_ARGS CNM_ENDPOINT: %v", err)
		}
		a.Endpoint = v
	}
	a.PodNamespace, a.PodName = a.All["K8S_POD_NAMESPACE"], a.All["K8S_POD_NAME"]
	return a, nil
}

// parseIPList parses addresses given as "ip" or "ip/prefix".
func parseIPList(list []string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range list {
		s = strings.TrimSpace(s)
		if ip, _, err := net.ParseCIDR(s); err == nil {
			ips = append(ips, ip)
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// parseMAC accepts a unicast Ethernet MAC address.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a MAC address", s)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("%q is not a 48-bit Ethernet MAC address", s)
	}
	if mac[0]&1 == 1 {
		return nil, fmt.Errorf("%q is a multicast address", s)
	}
	if net.HardwareAddr(make([]byte, 6)).String() == mac.String() {
		return nil, fmt.Errorf("%q is the zero address", s)
	}
	return mac, nil
}

// staticRequest is what the request pins: addresses and MAC.
type staticRequest struct {
	IPs []net.IP
	MAC net.HardwareAddr
}

// staticRequest gathers the pinned addresses and MAC, preferring
// runtimeConfig, then args, then CNI_ARGS, as CONVENTIONS.md orders them.
func (c *NetConf) staticRequest(args *Args) (staticRequest, error) {
	var req staticRequest
	var err error
	switch {
	case len(c.RuntimeConfig.IPs) > 0:
		if req.IPs, err = parseIPList(c.RuntimeConfig.IPs); err != nil {
			return req, invalidConfig("runtimeConfig.ips: %v", err)
		}
	case c.Args != nil && c.Args.CNI != nil && len(c.Args.CNI.IPs) > 0:
		if req.IPs, err = parseIPList(c.Args.CNI.IPs); err != nil {
			return req, invalidConfig("args.cni.ips: %v", err)
		}
	default:
		req.IPs = args.IPs
	}
	switch {
	case c.RuntimeConfig.MAC != "":
		if req.MAC, err = parseMAC(c.RuntimeConfig.MAC); err != nil {
			return req, invalidConfig("runtimeConfig.mac: %v", err)
		}
	case c.Args != nil && c.Args.CNI != nil && c.Args.CNI.MAC != "":
		if req.MAC, err = parseMAC(c.Args.CNI.MAC); err != nil {
			return req, invalidConfig("args.cni.mac: %v", err)
		}
	default:
		req.MAC = args.MAC
	}
	if len(req.IPs) > 0 && c.IPAMConf == nil {
		return req, invalidConfig("ips: static addresses requested but network %s has no ipam ranges", c.Name)
	}
	return req, nil
}

// identity is the endpoint an attachment joins.
type identity struct {
	Name       string
	Persistent bool
}

// resolveIdentity names the endpoint of an attachment: an explicit name
// (runtimeConfig.endpoint, args.cnm.endpoint, CNI_ARGS CNM_ENDPOINT), the
// pod (endpointIdentity "pod"), or else the attachment itself.
func (c *NetConf) resolveIdentity(args *Args, containerID, ifName string) (identity, error) {
	switch {
	case c.RuntimeConfig.Endpoint != "":
		if err := ValidateEndpointName(c.RuntimeConfig.Endpoint); err != nil {
			return identity{}, invalidConfig("runtimeConfig.endpoint: %v", err)
		}
		return identity{Name: c.RuntimeConfig.Endpoint, Persistent: true}, nil
	case c.Args != nil && c.Args.CNM != nil && c.Args.CNM.Endpoint != "":
		if err := ValidateEndpointName(c.Args.CNM.Endpoint); err != nil {
			return identity{}, invalidConfig("args.cnm.endpoint: %v", err)
		}
		return identity{Name: c.Args.CNM.Endpoint, Persistent: true}, nil
	case args.Endpoint != "":
		return identity{Name: args.Endpoint, Persistent: true}, nil
	case c.EndpointIdentity == IdentityPod:
		namespace := args.PodNamespace
		if namespace == "" {
			namespace = c.PodNamespace // validated with the configuration
		}
		if err := ValidateEndpointName(namespace); err != nil {
			hint := ""
			if namespace == "" {
				hint = " (a runtime that sends none needs podNamespace in the configuration)"
			}
			return identity{}, invalidEnv("CNI_ARGS K8S_POD_NAMESPACE (endpointIdentity pod): %v%s", err, hint)
		}
		if err := validateToken(args.PodName, 253); err != nil {
			return identity{}, invalidEnv("CNI_ARGS K8S_POD_NAME (endpointIdentity pod): %v", err)
		}
		return identity{Name: namespace + "/" + args.PodName + "/" + ifName, Persistent: true}, nil
	default:
		return identity{Name: containerID + "/" + ifName}, nil
	}
}

// perRequestKeys are the parts of a configuration that belong to one
// request, not to the network.
var perRequestKeys = []string{"runtimeConfig", "prevResult", "args", "cni.dev/valid-attachments", "cni.dev/attachments"}

// networkConfig is the configuration without its per-request parts.
func (c *NetConf) networkConfig() json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c.Raw, &m); err != nil {
		return nil // LoadNetConf decoded it already
	}
	for _, k := range perRequestKeys {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}

// ValidateDataDir accepts a store directory: a clean absolute path.
func ValidateDataDir(dir string) error { return validatePath(dir) }
