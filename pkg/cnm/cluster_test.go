package cnm_test

import (
	"errors"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

// etcdSection is a valid cluster section with the etcd keys of fields
// set (or, for a nil value, removed).
func etcdSection(fields map[string]any) map[string]any {
	etcd := map[string]any{"endpoints": []string{"unix:///run/cnmnet/etcd.sock"}}
	for k, v := range fields {
		if v == nil {
			delete(etcd, k)
		} else {
			etcd[k] = v
		}
	}
	return map[string]any{"etcd": etcd}
}

var _ = Describe("the cluster section", func() {
	It("fills in the defaults: prefix, timeout, and the hostname as host", func() {
		conf, err := cnm.LoadNetConf(netConf(map[string]any{"cluster": etcdSection(nil)}))
		Expect(err).NotTo(HaveOccurred())
		Expect(conf.Cluster.Etcd.Prefix).To(Equal(cnm.DefaultEtcdPrefix))
		Expect(time.Duration(conf.Cluster.Etcd.Timeout)).To(Equal(cnm.DefaultEtcdTimeout))
		host, err := os.Hostname()
		Expect(err).NotTo(HaveOccurred())
		Expect(conf.Host).To(Equal(host))
	})

	It("keeps what it is given", func() {
		conf, err := cnm.LoadNetConf(netConf(map[string]any{
			"cluster": etcdSection(map[string]any{
				"endpoints": []string{"unixs:///run/etcd.sock", "https://10.0.0.1:2379", "http://[fd00::1]:2379"},
				"prefix":    "/lab/cnm", "timeout": "1500ms",
				"certFile": "/etc/cnm/client.crt", "keyFile": "/etc/cnm/client.key", "trustedCAFile": "/etc/cnm/ca.crt",
			}),
			"host": "node-1",
		}))
		Expect(err).NotTo(HaveOccurred())
		e := conf.Cluster.Etcd
		Expect(e.Endpoints).To(HaveLen(3))
		Expect(e.Prefix).To(Equal("/lab/cnm"))
		Expect(time.Duration(e.Timeout)).To(Equal(1500 * time.Millisecond))
		Expect(conf.Host).To(Equal("node-1"))
	})

	It("is needed by neither key alone: a configuration without one loads as before", func() {
		conf, err := cnm.LoadNetConf(netConf(nil))
		Expect(err).NotTo(HaveOccurred())
		Expect(conf.Cluster).To(BeNil())
		Expect(conf.Host).To(BeEmpty())
	})

	DescribeTable("refuses a bad value with error 7 naming the field, for ADD and DEL alike",
		func(fields map[string]any, field string) {
			raw := netConf(fields)
			for _, load := range []func([]byte) (*cnm.NetConf, error){cnm.LoadNetConf, cnm.LoadNetConfForDel} {
				_, err := load(raw)
				var te *types.Error
				Expect(errors.As(err, &te)).To(BeTrue(), "%v", err)
				Expect(te.Code).To(Equal(uint(types.ErrInvalidNetworkConfig)))
				Expect(te.Msg).To(ContainSubstring(field))
			}
		},
		Entry("no etcd", map[string]any{"cluster": map[string]any{}}, "cluster.etcd"),
		Entry("no endpoints", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": nil})}, "cluster.etcd.endpoints"),
		Entry("an empty endpoint list", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{}})}, "cluster.etcd.endpoints"),
		Entry("endpoints not a list", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": "unix:///x"})}, "cluster.etcd.endpoints"),
		Entry("a URL without a scheme", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{"10.0.0.1:2379"}})}, "cluster.etcd.endpoints[0]"),
		Entry("a bad scheme", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{"ftp://h:1"}})}, "cluster.etcd.endpoints[0]"),
		Entry("a relative unix socket", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{"unix://etcd.sock"}})}, "cluster.etcd.endpoints[0]"),
		Entry("http without a port", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{"unix:///ok", "http://10.0.0.1"}})}, "cluster.etcd.endpoints[1]"),
		Entry("a URL that does not parse", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": []string{"http://[::1"}})}, "cluster.etcd.endpoints[0]"),
		Entry("a prefix without a leading /", map[string]any{"cluster": etcdSection(map[string]any{"prefix": "cnmnet"})}, "cluster.etcd.prefix"),
		Entry("a prefix with a trailing /", map[string]any{"cluster": etcdSection(map[string]any{"prefix": "/cnmnet/"})}, "cluster.etcd.prefix"),
		Entry("the root as prefix", map[string]any{"cluster": etcdSection(map[string]any{"prefix": "/"})}, "cluster.etcd.prefix"),
		Entry("a timeout that is no duration", map[string]any{"cluster": etcdSection(map[string]any{"timeout": "soon"})}, "cluster.etcd.timeout"),
		Entry("a negative timeout", map[string]any{"cluster": etcdSection(map[string]any{"timeout": "-1s"})}, "cluster.etcd.timeout"),
		Entry("a timeout of an hour", map[string]any{"cluster": etcdSection(map[string]any{"timeout": "1h"})}, "cluster.etcd.timeout"),
		Entry("a relative certFile", map[string]any{"cluster": etcdSection(map[string]any{"certFile": "client.crt", "keyFile": "/k"})}, "cluster.etcd.certFile"),
		Entry("a relative keyFile", map[string]any{"cluster": etcdSection(map[string]any{"certFile": "/c", "keyFile": "client.key"})}, "cluster.etcd.keyFile"),
		Entry("a relative trustedCAFile", map[string]any{"cluster": etcdSection(map[string]any{"trustedCAFile": "ca.crt"})}, "cluster.etcd.trustedCAFile"),
		Entry("a certFile without its key", map[string]any{"cluster": etcdSection(map[string]any{"certFile": "/c"})}, "keyFile"),
		Entry("cluster not an object", map[string]any{"cluster": "etcd"}, "cluster"),
		Entry("etcd not an object", map[string]any{"cluster": map[string]any{"etcd": []string{"unix:///x"}}}, "cluster.etcd"),
		Entry("a misspelt etcd key", map[string]any{"cluster": etcdSection(map[string]any{"endpoints": nil, "endpoint": []string{"unix:///x"}})}, `cluster.etcd.endpoint: unknown key (did you mean "endpoints"?)`),
		Entry("a key cluster does not take", map[string]any{"cluster": map[string]any{"consul": map[string]any{}}}, "cluster.consul"),
		Entry("a host with a slash", map[string]any{"cluster": etcdSection(nil), "host": "a/b"}, "host"),
		Entry("an empty-looking host of spaces", map[string]any{"cluster": etcdSection(nil), "host": " "}, "host"),
		Entry("a host that is not a string", map[string]any{"cluster": etcdSection(nil), "host": 7}, "host"),
	)
})
