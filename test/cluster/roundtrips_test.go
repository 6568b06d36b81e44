package cluster_test

import (
	"context"
	"fmt"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
	"github.com/cnmnet/cnmnet/test/etcdtest"
	"github.com/cnmnet/cnmnet/test/testdriver"
)

// The etcd round trips of a plugin's ADD and DEL, counted in-process
// over the same core and store a plugin binary uses.
var _ = Describe("the etcd round trips of an ADD and a DEL", func() {
	It("do not grow with the endpoints in use: the allocator reads no whole range", func() {
		c := newCluster(1, etcdtest.Options{})
		h := c.hosts[0]
		n := network{name: "rt", subnet: "10.212.0.0/22", more: map[string]any{"maxPersistentEndpoints": 2000}}
		conf, err := cnm.LoadNetConf(h.conf(n, nil))
		Expect(err).NotTo(HaveOccurred())
		s, err := etcdstore.Open(etcdstore.Config{Endpoints: c.etcd.Endpoints, Prefix: prefix, Timeout: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(s.Close)
		ctl := cnm.NewClustered(s, h.name)
		Expect(testdriver.RegisterGlobal(ctl)).To(Succeed())

		measure := func(id string) (add, del int64) {
			ctr := newContainer(id)
			req := &cnm.Request{Conf: conf, Args: &cnm.Args{All: map[string]string{}}, ContainerID: id, NetNS: ctr.ns.Path(), IfName: "eth0"}
			Expect(h.ns.Do(func(ns.NetNS) error {
				before := s.RoundTrips()
				if _, err := ctl.Add(context.Background(), req); err != nil {
					return err
				}
				mid := s.RoundTrips()
				if err := ctl.Del(context.Background(), req); err != nil {
					return err
				}
				add, del = mid-before, s.RoundTrips()-mid
				return nil
			})).To(Succeed())
			return add, del
		}
		// The first ADD makes the network: not what is measured.
		measure("warm")
		standIn := func(count int) {
			for i := range count {
				_, err := ctl.ReserveEndpoint(context.Background(), n.name, fmt.Sprintf("held-%d-%d", count, i), nil, nil)
				Expect(err).NotTo(HaveOccurred())
			}
		}
		results := map[int][2]int64{}
		held := 0
		for _, level := range []int{10, 300} {
			standIn(level - held)
			held = level
			add, del := measure(fmt.Sprintf("ctr-%d", level))
			results[level] = [2]int64{add, del}
			AddReportEntry(fmt.Sprintf("etcd round trips with %d endpoints in use", level), fmt.Sprintf("ADD %d, DEL %d", add, del))
			fmt.Fprintf(GinkgoWriter, "%d endpoints in use: ADD %d round trips, DEL %d\n", level, add, del)
		}
		Expect(results[300][0]).To(BeNumerically("<=", results[10][0]+1), "ADD round trips at 300 vs 10 endpoints: %v", results)
		Expect(results[300][1]).To(BeNumerically("<=", results[10][1]+1), "DEL round trips at 300 vs 10 endpoints: %v", results)
	})
})
