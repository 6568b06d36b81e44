package cluster

import (
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
)

// Open opens the cluster store conf names (validated by the core's
// configuration loading). It fails fast: once etcd has not answered
// within the configured timeout, every later call of the invocation
// fails at once, so that a plugin answers within about one timeout.
func Open(conf *cnm.ClusterConf) (store.Store, error) {
	if err := checkFiles(conf.Etcd); err != nil {
		return nil, err
	}
	return etcdstore.Open(StoreConfig(conf, true))
}

// checkFiles names the key of a TLS file that cannot be read: the etcd
// client would say only that no server answered.
func checkFiles(e *cnm.EtcdConf) error {
	for _, f := range []struct{ key, path string }{
		{"certFile", e.CertFile}, {"keyFile", e.KeyFile}, {"trustedCAFile", e.TrustedCAFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("cluster.etcd.%s: %v", f.key, err), "")
		}
	}
	return nil
}

// StoreConfig is the etcd store configuration of conf.
func StoreConfig(conf *cnm.ClusterConf, failFast bool) etcdstore.Config {
	e := conf.Etcd
	return etcdstore.Config{
		Endpoints:     e.Endpoints,
		Prefix:        e.Prefix,
		Timeout:       time.Duration(e.Timeout),
		CertFile:      e.CertFile,
		KeyFile:       e.KeyFile,
		TrustedCAFile: e.TrustedCAFile,
		FailFast:      failFast,
	}
}
