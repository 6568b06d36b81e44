package cnm

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
)

// ClusterConf is the configuration's "cluster" section: the cluster
// store that keeps the networks of global-scope drivers, whose endpoints
// span hosts. Local-scope networks ignore it.
type ClusterConf struct {
	Etcd *EtcdConf `json:"etcd,omitempty"`
}

// EtcdConf says how to reach an etcd v3 cluster.
type EtcdConf struct {
	// Endpoints are client URLs: unix:///path, unixs:///path (TLS),
	// http://host:port, https://host:port.
	Endpoints []string `json:"endpoints,omitempty"`
	// Prefix is where every key of the store lives (DefaultEtcdPrefix).
	Prefix string `json:"prefix,omitempty"`
	// Timeout bounds every etcd call (DefaultEtcdTimeout): with etcd
	// unreachable or without quorum a verb answers 11 within about it.
	Timeout Duration `json:"timeout,omitempty"`
	// CertFile and KeyFile are the client's certificate and key, and
	// TrustedCAFile the CA that signed the servers' certificates.
	CertFile      string `json:"certFile,omitempty"`
	KeyFile       string `json:"keyFile,omitempty"`
	TrustedCAFile string `json:"trustedCAFile,omitempty"`
}

const (
	// DefaultEtcdPrefix is the etcd key prefix of the cluster store.
	DefaultEtcdPrefix = "/cnmnet"
	// DefaultEtcdTimeout bounds each etcd call.
	DefaultEtcdTimeout = 5 * time.Second
	// maxEtcdTimeout keeps a typo ("5m" for "5s") from holding a runtime
	// for minutes.
	maxEtcdTimeout = 2 * time.Minute
)

// decodeCluster decodes a cluster section key by key, so that a value of
// the wrong form is named by its whole path ("cluster.etcd.timeout"),
// and refuses keys it does not know: the section is cnmnet's own, and a
// misspelt key would otherwise leave a default in force.
func decodeCluster(raw json.RawMessage) (*ClusterConf, error) {
	if confcheck.Absent(raw) {
		return nil, nil
	}
	top, err := decodeSection("cluster", raw, []string{"etcd"})
	if err != nil {
		return nil, err
	}
	cc := &ClusterConf{}
	if confcheck.Absent(top["etcd"]) {
		return cc, nil
	}
	fields, err := decodeSection("cluster.etcd", top["etcd"], etcdKeys)
	if err != nil {
		return nil, err
	}
	e := &EtcdConf{}
	for _, f := range []struct {
		key string
		dst any
	}{
		{"endpoints", &e.Endpoints}, {"prefix", &e.Prefix}, {"timeout", &e.Timeout},
		{"certFile", &e.CertFile}, {"keyFile", &e.KeyFile}, {"trustedCAFile", &e.TrustedCAFile},
	} {
		if err := confcheck.Decode("cluster.etcd."+f.key, fields[f.key], f.dst); err != nil {
			return nil, invalidConfig("%v", err)
		}
	}
	cc.Etcd = e
	return cc, nil
}

// decodeClusterKeys decodes the cluster and host keys into c, without
// validating them (validateClusterKeys).
func (c *NetConf) decodeClusterKeys(cluster, host json.RawMessage) error {
	cc, err := decodeCluster(cluster)
	if err != nil {
		return err
	}
	c.Cluster = cc
	if err := confcheck.Decode("host", host, &c.Host); err != nil {
		return invalidConfig("%v", err)
	}
	return nil
}

// etcdKeys are the keys of cluster.etcd.
var etcdKeys = []string{"endpoints", "prefix", "timeout", "certFile", "keyFile", "trustedCAFile"}

// decodeSection decodes the object at path, refusing keys not in known.
func decodeSection(path string, raw json.RawMessage, known []string) (map[string]json.RawMessage, error) {
	obj, ok := confcheck.Object(raw)
	if !ok {
		return nil, invalidConfig("%s: %s is not an object", path, confcheck.Shorten(raw))
	}
	for k := range obj {
		if !slices.Contains(known, k) {
			hint := ""
			if s := confcheck.Suggest(k, known); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			return nil, invalidConfig("%s.%s: unknown key%s; %s takes %s", path, k, hint, path, strings.Join(known, ", "))
		}
	}
	return obj, nil
}

// validate checks the section, naming the field at fault, and fills in
// the defaults.
func (cc *ClusterConf) validate() error {
	e := cc.Etcd
	if e == nil {
		return invalidConfig("cluster.etcd: missing: the cluster store is etcd v3 (cluster.etcd.endpoints)")
	}
	if len(e.Endpoints) == 0 {
		return invalidConfig("cluster.etcd.endpoints: none given (e.g. [\"unix:///run/cnmnet/etcd.sock\"])")
	}
	for i, ep := range e.Endpoints {
		if err := validateEtcdEndpoint(ep); err != nil {
			return invalidConfig("cluster.etcd.endpoints[%d]: %v", i, err)
		}
	}
	if e.Prefix == "" {
		e.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(e.Prefix, "/") || strings.HasSuffix(e.Prefix, "/") && e.Prefix != "/" || strings.ContainsAny(e.Prefix, "\x00\n") {
		return invalidConfig("cluster.etcd.prefix: %q must start with / and not end with one (e.g. %q)", e.Prefix, DefaultEtcdPrefix)
	}
	if e.Prefix == "/" {
		return invalidConfig("cluster.etcd.prefix: \"/\" would spread the store over the whole key space; use a prefix such as %q", DefaultEtcdPrefix)
	}
	switch t := time.Duration(e.Timeout); {
	case t == 0:
		e.Timeout = Duration(DefaultEtcdTimeout)
	case t < 0:
		return invalidConfig("cluster.etcd.timeout: %s is negative", t)
	case t < 10*time.Millisecond || t > maxEtcdTimeout:
		return invalidConfig("cluster.etcd.timeout: %s is outside 10ms to %s", t, maxEtcdTimeout)
	}
	for _, f := range []struct{ key, path string }{
		{"certFile", e.CertFile}, {"keyFile", e.KeyFile}, {"trustedCAFile", e.TrustedCAFile},
	} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			return invalidConfig("cluster.etcd.%s: %q is not an absolute path", f.key, f.path)
		}
		if f.path != "" {
			if err := validatePath(f.path); err != nil {
				return invalidConfig("cluster.etcd.%s: %v", f.key, err)
			}
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return invalidConfig("cluster.etcd.certFile, keyFile: give both (the client's certificate and its key) or neither")
	}
	return nil
}

// validateEtcdEndpoint accepts a client URL etcd's client can dial.
func validateEtcdEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Errorf("%q is not a URL", ep)
	}
	switch u.Scheme {
	case "unix", "unixs":
		p := u.Host + u.Path
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%q: a unix socket is named by an absolute path, as in unix:///run/cnmnet/etcd.sock", ep)
		}
	case "http", "https":
		if u.Hostname() == "" || u.Port() == "" || u.Path != "" && u.Path != "/" {
			return fmt.Errorf("%q: want %s://host:port", ep, u.Scheme)
		}
	default:
		return fmt.Errorf("%q: scheme must be unix, unixs, http or https", ep)
	}
	return nil
}

// defaultHost is the host name of a cluster configuration without one.
func defaultHost() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", invalidConfig("host: not given, and the machine's hostname cannot be read: %v", err)
	}
	return h, nil
}

// validateClusterKeys checks cluster and host, filling in the defaults;
// a configuration without a cluster section needs neither.
func (c *NetConf) validateClusterKeys() error {
	if c.Cluster == nil {
		if c.Host != "" {
			if err := validateToken(c.Host, 253); err != nil {
				return invalidConfig("host: %v", err)
			}
		}
		return nil
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	if c.Host == "" {
		h, err := defaultHost()
		if err != nil {
			return err
		}
		c.Host = h
	}
	if err := validateToken(c.Host, 253); err != nil {
		return invalidConfig("host: %v", err)
	}
	return nil
}

// LoadClusterKeys reads the cluster and host keys of a configuration,
// validated and with their defaults, for tools that reach a cluster
// store without a CNI request (cnmctl). host, when not empty, overrides
// the configuration's.
func LoadClusterKeys(raw []byte, host string) (*NetConf, error) {
	var r struct {
		Cluster json.RawMessage `json:"cluster"`
		Host    json.RawMessage `json:"host"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode configuration: %v", err)
	}
	conf := &NetConf{}
	if err := conf.decodeClusterKeys(r.Cluster, r.Host); err != nil {
		return nil, err
	}
	if host != "" {
		conf.Host = host
	}
	if conf.Cluster == nil {
		return nil, invalidConfig("cluster: missing")
	}
	if err := conf.validateClusterKeys(); err != nil {
		return nil, err
	}
	return conf, nil
}
