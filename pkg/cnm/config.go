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
	"github.com/containernetworking/cni/pkg/version"

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

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		if math.IsNaN(secs) || math.Abs(secs) > maxDurationSeconds {
			return &durationError{outOfRange: true, msg: fmt.Sprintf("%s seconds is out of range", b)}
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &durationError{msg: fmt.Sprintf("%s: want a duration such as \"24h\" or a number of seconds", b)}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &durationError{msg: err.Error()}
	}
	*d = Duration(v)
	return nil
}

// maxDurationSeconds is the longest span a time.Duration holds.
const maxDurationSeconds = float64(math.MaxInt64 / int64(time.Second))

// durationError is a Duration that could not be decoded; LoadNetConf
// names the field, which encoding/json does not.
type durationError struct {
	outOfRange bool
	msg        string
}

func (e *durationError) Error() string { return e.msg }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// LoadNetConf parses and validates a network configuration.
func LoadNetConf(raw []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(raw, conf); err != nil {
		var de *durationError
		switch {
		case errors.As(err, &de) && de.outOfRange:
			return nil, invalidConfig("reservationTTL: %v", de)
		case errors.As(err, &de):
			return nil, newError(types.ErrDecodingFailure, "decode network configuration: reservationTTL: %v", de)
		}
		return nil, newError(types.ErrDecodingFailure, "decode network configuration: %v", err)
	}
	conf.Raw = raw
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
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, newError(types.ErrDecodingFailure, "prevResult: %v", err)
		}
	}
	return conf, nil
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
		return invalidConfig("endpointIdentity: %q is not one of %q, %q", c.EndpointIdentity, IdentityContainer, IdentityPod)
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
	return nil
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
