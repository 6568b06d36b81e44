package etcdstore_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
	"github.com/cnmnet/cnmnet/pkg/store/storetest"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

// The contract's helpers: a put and a get, each a transaction.
var (
	put = storetest.Put
	get = storetest.Get
)

func TestEtcdStore(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "etcd store Suite")
}

// shared is the one-member cluster (real etcd, a child process) most specs
// use, each under a prefix of its own; admin is a plain client of it.
var (
	shared *etcdtest.Cluster
	admin  *clientv3.Client
)

var _ = BeforeSuite(func() {
	shared = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{})
	var err error
	admin, err = shared.Client()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(admin.Close)
})

// testTimeout is the Timeout of the specs' Stores: short, so that the
// specs of a cluster that cannot answer end soon.
const testTimeout = 2 * time.Second

var prefixes atomic.Int64

// freshPrefix is an etcd prefix no other spec uses.
func freshPrefix() string {
	return fmt.Sprintf("/t%d", prefixes.Add(1))
}

// config is a Config for the shared cluster under prefix.
func config(prefix string) etcdstore.Config {
	return etcdstore.Config{Endpoints: shared.Endpoints, Prefix: prefix, Timeout: testTimeout}
}

// open opens a Store, closed when the spec ends.
func open(cfg etcdstore.Config) *etcdstore.Store {
	GinkgoHelper()
	s, err := etcdstore.Open(cfg)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(s.Close)
	return s
}
