package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/spf13/pflag"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

// clusterFlags name the cluster store of global-scope networks: with
// any of them cnmctl works on that store, as host sees it, instead of
// the host's own.
type clusterFlags struct {
	config    string
	endpoints []string
	prefix    string
	timeout   time.Duration
	certFile  string
	keyFile   string
	caFile    string
	host      string
}

func (f *clusterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.config, "cluster-config", "", "a network configuration (or conflist) whose cluster and host keys name the cluster store")
	fs.StringSliceVar(&f.endpoints, "etcd-endpoints", nil, "the cluster store's etcd client URLs (unix:///path, https://host:port), comma-separated")
	fs.StringVar(&f.prefix, "etcd-prefix", cnm.DefaultEtcdPrefix, "the cluster store's etcd key prefix")
	fs.DurationVar(&f.timeout, "etcd-timeout", cnm.DefaultEtcdTimeout, "deadline of each etcd call")
	fs.StringVar(&f.certFile, "etcd-cert-file", "", "client certificate for etcd")
	fs.StringVar(&f.keyFile, "etcd-key-file", "", "client key for etcd")
	fs.StringVar(&f.caFile, "etcd-trusted-ca-file", "", "CA of etcd's server certificates")
	fs.StringVar(&f.host, "host", "", "this host's name in the cluster store (default: the cluster config's, else the hostname)")
}

// conf is the cluster section the flags give, validated as a plugin
// validates it, with the host; nil without cluster flags.
func (f *clusterFlags) conf() (*cnm.ClusterConf, string, error) {
	var raw []byte
	switch {
	case f.config != "" && len(f.endpoints) > 0:
		return nil, "", usageError{"--cluster-config and --etcd-endpoints: give one or the other"}
	case f.config != "":
		b, err := clusterSection(f.config)
		if err != nil {
			return nil, "", usageError{"--cluster-config: " + err.Error()}
		}
		raw = b
	case len(f.endpoints) > 0:
		b, err := json.Marshal(map[string]any{"cluster": map[string]any{"etcd": cnm.EtcdConf{
			Endpoints: f.endpoints, Prefix: f.prefix, Timeout: cnm.Duration(f.timeout),
			CertFile: f.certFile, KeyFile: f.keyFile, TrustedCAFile: f.caFile,
		}}})
		if err != nil {
			return nil, "", err
		}
		raw = b
	default:
		return nil, "", nil
	}
	conf, err := cnm.LoadClusterKeys(raw, f.host)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return nil, "", usageError{te.Msg}
		}
		return nil, "", err
	}
	return conf.Cluster, conf.Host, nil
}

// clusterSection reads the cluster and host keys of a network
// configuration file, or of the first plugin of a conflist that has them.
func clusterSection(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Cluster json.RawMessage   `json:"cluster"`
		Host    json.RawMessage   `json:"host"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(doc.Cluster) > 0 {
		return b, nil
	}
	for _, p := range doc.Plugins {
		var plugin struct {
			Cluster json.RawMessage `json:"cluster"`
		}
		if json.Unmarshal(p, &plugin) == nil && len(plugin.Cluster) > 0 {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%s has no cluster section", path)
}
