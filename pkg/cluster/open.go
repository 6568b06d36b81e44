package cluster

import (
	"time"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
)

// Open opens the cluster store conf names (validated by the core's
// configuration loading). It fails fast: once etcd has not answered
// within the configured timeout, every later call of the invocation
// fails at once, so that a plugin answers within about one timeout.
func Open(conf *cnm.ClusterConf) (store.Store, error) {
	return etcdstore.Open(StoreConfig(conf, true))
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
