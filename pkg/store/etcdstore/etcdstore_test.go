package etcdstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
	"github.com/cnmnet/cnmnet/pkg/store/storetest"
	"github.com/cnmnet/cnmnet/test/etcdtest"
)

// The contract of every store, on the shared one-member cluster: each
// spec under a fresh prefix, each Store it opens a client of its own.
var _ = storetest.Contract(func() func() store.Store {
	cfg := config(freshPrefix())
	return func() store.Store { return open(cfg) }
})

// ctx is a context for the specs' own etcd calls.
func ctx() context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	DeferCleanup(cancel)
	return c
}

// compact compacts the shared cluster's history up to its current
// revision.
func compact() error {
	resp, err := admin.Get(ctx(), "compaction-probe")
	if err != nil {
		return err
	}
	_, err = admin.Compact(ctx(), resp.Header.Revision)
	return err
}

func increment(tx store.Tx, key string) error {
	n := 0
	v, err := tx.Get(key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		if n, err = strconv.Atoi(string(v)); err != nil {
			return err
		}
	}
	return tx.Put(key, []byte(strconv.Itoa(n+1)))
}

var _ = Describe("the key layout", func() {
	It("keeps a value at Key(storeKey), byte for byte, and marks the prefix with the schema at the first commit", func() {
		p := freshPrefix()
		s := open(config(p))
		Expect(s.Key("networks/n1")).To(Equal(p + "/data/networks/n1"))
		put(s, "networks/n1", "value\x00\xff")
		resp, err := admin.Get(ctx(), s.Key("networks/n1"))
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		Expect(resp.Kvs[0].Value).To(Equal([]byte("value\x00\xff")))
		resp, err = admin.Get(ctx(), p+"/schema")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		Expect(string(resp.Kvs[0].Value)).To(Equal(store.SchemaVersion))
	})

	DescribeTable("puts every key under the prefix",
		func(prefix, want string) {
			s := open(etcdstore.Config{Endpoints: shared.Endpoints, Prefix: prefix})
			Expect(s.Key("k")).To(Equal(want))
		},
		Entry("as given", "/cnm/a", "/cnm/a/data/k"),
		Entry("without its trailing slash", "/cnm/a/", "/cnm/a/data/k"),
		Entry("DefaultPrefix when empty", "", etcdstore.DefaultPrefix+"/data/k"),
	)

	Describe("a prefix of another schema", func() {
		var p string

		BeforeEach(func() {
			p = freshPrefix()
			_, err := admin.Put(ctx(), p+"/schema", "999")
			Expect(err).NotTo(HaveOccurred())
		})

		expectNoData := func() {
			GinkgoHelper()
			resp, err := admin.Get(ctx(), p+"/data/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Count).To(BeZero())
		}

		It("is refused with ErrCorrupt by reads and writes, naming the version", func() {
			s := open(config(p))
			_, err := get(s, "k")
			Expect(err).To(MatchError(store.ErrCorrupt))
			Expect(err.Error()).To(ContainSubstring(`"999"`))
			err = s.Update(func(tx store.Tx) error { return increment(tx, "k") })
			Expect(err).To(MatchError(store.ErrCorrupt))
			expectNoData()
		})

		It("is refused by a first transaction that only writes", func() {
			s := open(config(p))
			err := s.Update(func(tx store.Tx) error { return tx.Put("k", []byte("v")) })
			Expect(err).To(MatchError(store.ErrCorrupt))
			Expect(err.Error()).To(ContainSubstring(`"999"`))
			expectNoData()
		})

		It("is refused by a Store that saw the right one before it changed", func() {
			q := freshPrefix()
			s := open(config(q))
			put(s, "k", "1")
			_, err := admin.Put(ctx(), q+"/schema", "999")
			Expect(err).NotTo(HaveOccurred())
			err = s.Update(func(tx store.Tx) error { return tx.Put("k", []byte("2")) })
			Expect(err).To(MatchError(store.ErrCorrupt))
			resp, err := admin.Get(ctx(), s.Key("k"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(resp.Kvs[0].Value)).To(Equal("1"))
		})
	})
})

var _ = Describe("Update", func() {
	var s, other *etcdstore.Store

	BeforeEach(func() {
		cfg := config(freshPrefix())
		s, other = open(cfg), open(cfg)
	})

	It("runs fn again when a key it read changed before its commit, and commits once", func() {
		put(s, "k", "0")
		runs := 0
		Expect(s.Update(func(tx store.Tx) error {
			runs++
			if runs == 1 {
				Expect(tx.Get("k")).To(Equal([]byte("0")))
				put(other, "k", "10")
			}
			return increment(tx, "k")
		})).To(Succeed())
		Expect(runs).To(Equal(2))
		Expect(get(s, "k")).To(Equal([]byte("11")))
	})

	It("runs fn again when a key it found absent appeared", func() {
		runs := 0
		Expect(s.Update(func(tx store.Tx) error {
			runs++
			_, err := tx.Get("k")
			if runs == 1 {
				Expect(err).To(MatchError(store.ErrNotFound))
				put(other, "k", "5")
			}
			return increment(tx, "k")
		})).To(Succeed())
		Expect(runs).To(Equal(2))
		Expect(get(s, "k")).To(Equal([]byte("6")))
	})

	DescribeTable("runs fn again exactly when another commit changed what its Scan read",
		func(prefix string, change func(other store.Store), wantRuns int) {
			for _, k := range []string{"dir/a", "dir/b", "dir/sub/y", "dirz", "other/y"} {
				put(s, k, "seed")
			}
			runs := 0
			Expect(s.Update(func(tx store.Tx) error {
				runs++
				n := 0
				if err := tx.Scan(prefix, func(string, []byte) error { n++; return nil }); err != nil {
					return err
				}
				if runs == 1 {
					change(other)
				}
				return tx.Put("result", []byte(strconv.Itoa(n)))
			})).To(Succeed())
			Expect(runs).To(Equal(wantRuns))
		},
		Entry("a key inserted", "dir/", func(o store.Store) { put(o, "dir/new", "x") }, 2),
		Entry("a key deleted", "dir/", func(o store.Store) { del(o, "dir/a") }, 2),
		Entry("a key changed", "dir/", func(o store.Store) { put(o, "dir/a", "changed") }, 2),
		Entry("a key inserted in a subdirectory", "dir/", func(o store.Store) { put(o, "dir/sub/new", "x") }, 2),
		Entry("a key deleted in a subdirectory", "dir/", func(o store.Store) { del(o, "dir/sub/y") }, 2),
		Entry("the whole store scanned, a key deleted anywhere", "", func(o store.Store) { del(o, "other/y") }, 2),
		Entry("a key inserted beside the prefix", "dir/", func(o store.Store) { put(o, "dirz2", "x") }, 1),
		Entry("a key inserted in another directory", "dir/", func(o store.Store) { put(o, "other/x", "x") }, 1),
		Entry("a key deleted in another directory", "dir/", func(o store.Store) { del(o, "other/y") }, 1),
		Entry("a key deleted beside the prefix", "dir/", func(o store.Store) { del(o, "dirz") }, 1),
		Entry("a missing key deleted in the directory", "dir/", func(o store.Store) {
			// It reads first, so knows there is nothing to delete.
			Expect(o.Update(func(tx store.Tx) error {
				if _, err := tx.Get("dir/never"); !errors.Is(err, store.ErrNotFound) {
					return err
				}
				return tx.Delete("dir/never")
			})).To(Succeed())
		}, 1),
		// Not a directory: the marker of the enclosing one stands for it,
		// so a delete beside it in that directory conflicts too.
		Entry("a prefix that is not a directory, a key deleted in its directory", "dir/a",
			func(o store.Store) { del(o, "dir/b") }, 2),
		Entry("a prefix that is not a directory, a key inserted under it", "dir/a",
			func(o store.Store) { put(o, "dir/ab", "x") }, 2),
	)

	It("gives up with ErrConflict after at least 10 attempts and about its timeout, committing nothing", func() {
		put(s, "k", "0")
		runs := 0
		start := time.Now()
		err := s.Update(func(tx store.Tx) error {
			runs++
			if _, err := tx.Get("k"); err != nil {
				return err
			}
			put(other, "k", strconv.Itoa(runs))
			return tx.Put("mine", []byte("x"))
		})
		took := time.Since(start)
		Expect(err).To(MatchError(store.ErrConflict))
		Expect(runs).To(BeNumerically(">=", 10))
		Expect(took).To(BeNumerically(">=", s.Timeout()))
		Expect(took).To(BeNumerically("<", s.Timeout()+time.Second))
		_, err = get(s, "mine")
		Expect(err).To(MatchError(store.ErrNotFound))
	})

	It("lets a panic in fn go on, committing nothing", func() {
		Expect(func() {
			_ = s.Update(func(tx store.Tx) error {
				Expect(tx.Put("k", []byte("v"))).To(Succeed())
				panic("fn bug")
			})
		}).To(PanicWith("fn bug"))
		_, err := get(s, "k")
		Expect(err).To(MatchError(store.ErrNotFound))
	})

	It("refuses an empty key", func() {
		Expect(s.Update(func(tx store.Tx) error { return tx.Put("", []byte("v")) })).To(MatchError(ContainSubstring("empty key")))
	})
})

func del(s store.Store, key string) {
	GinkgoHelper()
	Expect(s.Update(func(tx store.Tx) error { return tx.Delete(key) })).To(Succeed())
}

var _ = Describe("compaction", func() {
	var (
		p string
		s *etcdstore.Store
	)

	BeforeEach(func() {
		p = freshPrefix()
		s = open(config(p))
		put(s, "a", "1")
		put(s, "b", "2")
	})

	// readBoth reads a, compacts the history past the transaction's
	// revision on the first run, and reads b.
	readBoth := func(runs *int) func(tx store.Tx) error {
		return func(tx store.Tx) error {
			*runs++
			if _, err := tx.Get("a"); err != nil {
				return err
			}
			if *runs == 1 {
				put(open(config("/compaction-bystander")), "x", "y")
				Expect(compact()).To(Succeed())
			}
			_, err := tx.Get("b")
			return err
		}
	}

	It("runs an Update whose snapshot went, at a fresh revision", func() {
		runs := 0
		Expect(s.Update(readBoth(&runs))).To(Succeed())
		Expect(runs).To(Equal(2))
	})

	It("runs a View whose snapshot went, at a fresh revision", func() {
		runs := 0
		Expect(s.View(readBoth(&runs))).To(Succeed())
		Expect(runs).To(Equal(2))
	})

	It("keeps transactions whole while the history is compacted in a loop", func() {
		const workers, increments = 4, 15
		stop := make(chan struct{})
		var compactions atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				if compact() == nil {
					compactions.Add(1)
				}
			}
		})
		var workersWG sync.WaitGroup
		errs := make([]error, workers)
		for i := range workers {
			w := open(config(p))
			workersWG.Go(func() {
				for range increments {
					err := w.Update(func(tx store.Tx) error {
						// Two reads, apart: a compaction between them
						// takes the first one's revision away.
						if err := tx.Scan("pairs/", func(string, []byte) error { return nil }); err != nil {
							return err
						}
						time.Sleep(time.Millisecond)
						if err := increment(tx, "counter"); err != nil {
							return err
						}
						return tx.Put("pairs/"+strconv.Itoa(i), []byte("x"))
					})
					for errors.Is(err, store.ErrConflict) {
						err = w.Update(func(tx store.Tx) error { return increment(tx, "counter") })
					}
					if err != nil {
						errs[i] = err
						return
					}
				}
			})
		}
		workersWG.Wait()
		close(stop)
		wg.Wait()
		for i, err := range errs {
			Expect(err).NotTo(HaveOccurred(), "worker %d", i)
		}
		Expect(get(s, "counter")).To(Equal([]byte(strconv.Itoa(workers * increments))))
		GinkgoWriter.Printf("%d compactions\n", compactions.Load())
		Expect(compactions.Load()).To(BeNumerically(">", 10))
	})
})

var _ = Describe("RoundTrips", func() {
	It("counts one RPC per read of something not read before, and one per commit", func() {
		p := freshPrefix()
		s := open(config(p))
		put(s, "seed/a", "1")
		put(s, "seed/b", "2")
		rt := func(fn func()) int64 {
			before := s.RoundTrips()
			fn()
			return s.RoundTrips() - before
		}
		Expect(rt(func() {
			Expect(s.View(func(tx store.Tx) error {
				_, _ = tx.Get("seed/a")
				_, _ = tx.Get("seed/a")    // read before
				_, _ = tx.Get("seed/none") // absent: one more
				if err := tx.Scan("seed/", func(string, []byte) error { return nil }); err != nil {
					return err
				}
				_, _ = tx.Get("seed/c") // under a scanned prefix
				return tx.Scan("seed/b", func(string, []byte) error { return nil })
			})).To(Succeed())
		})).To(BeEquivalentTo(3))
		Expect(rt(func() {
			// k reads and some writes: k+1.
			Expect(s.Update(func(tx store.Tx) error {
				if _, err := tx.Get("seed/a"); err != nil {
					return err
				}
				if err := tx.Scan("other/", func(string, []byte) error { return nil }); err != nil {
					return err
				}
				if err := tx.Put("seed/c", []byte("3")); err != nil {
					return err
				}
				return tx.Delete("seed/a")
			})).To(Succeed())
		})).To(BeEquivalentTo(3))
		Expect(rt(func() { put(s, "blind", "x") })).To(BeEquivalentTo(1))
		Expect(rt(func() {
			Expect(s.Update(func(tx store.Tx) error { _, err := tx.Get("blind"); return err })).To(Succeed())
		})).To(BeEquivalentTo(1), "an Update that only reads does not commit")
		Expect(rt(func() {
			Expect(s.Update(func(tx store.Tx) error { return errors.New("no") })).NotTo(Succeed())
		})).To(BeZero())

		// A new Store checks the schema in its first read's request.
		fresh := open(config(p))
		Expect(rt(func() { Expect(get(fresh, "blind")).To(Equal([]byte("x"))) })).To(BeZero())
		Expect(fresh.RoundTrips()).To(BeEquivalentTo(1))
	})
})

var _ = Describe("the limits of a commit", func() {
	var s *etcdstore.Store

	BeforeEach(func() {
		s = open(config(freshPrefix()))
		put(s, "seed", "x")
	})

	putMany := func(n int) func(store.Tx) error {
		return func(tx store.Tx) error {
			for i := range n {
				if err := tx.Put("many/"+strconv.Itoa(i), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		}
	}

	It("commits up to MaxTxnOps writes", func() {
		Expect(s.Update(putMany(etcdstore.MaxTxnOps))).To(Succeed())
	})

	It("refuses more than MaxTxnOps writes with ErrTxnTooLarge, before sending anything", func() {
		before := s.RoundTrips()
		err := s.Update(putMany(etcdstore.MaxTxnOps + 1))
		Expect(err).To(MatchError(etcdstore.ErrTxnTooLarge))
		Expect(err.Error()).To(ContainSubstring("128"))
		Expect(s.RoundTrips()).To(Equal(before))
		_, err = get(s, "many/0")
		Expect(err).To(MatchError(store.ErrNotFound))
	})

	It("counts the directory markers of deletes among the writes", func() {
		Expect(s.Update(func(tx store.Tx) error {
			for i := range 70 {
				if err := tx.Put("del/"+strconv.Itoa(i)+"/k", nil); err != nil {
					return err
				}
			}
			return nil
		})).To(Succeed())
		err := s.Update(func(tx store.Tx) error {
			for i := range 70 {
				if err := tx.Delete("del/" + strconv.Itoa(i) + "/k"); err != nil {
					return err
				}
			}
			return nil
		})
		Expect(err).To(MatchError(etcdstore.ErrTxnTooLarge))
	})

	DescribeTable("refuses a commit larger than etcd takes with ErrTxnTooLarge",
		func(size int) {
			err := s.Update(func(tx store.Tx) error { return tx.Put("big", make([]byte, size)) })
			Expect(err).To(MatchError(etcdstore.ErrTxnTooLarge))
			_, err = get(s, "big")
			Expect(err).To(MatchError(store.ErrNotFound))
		},
		Entry("over the server's request limit", 1600<<10),
		Entry("over the client's message limit", 3<<20),
	)
})

var _ = Describe("Open", func() {
	DescribeTable("refuses an endpoint it cannot use, naming it",
		func(ep string, tlsFiles bool) {
			cfg := etcdstore.Config{Endpoints: []string{ep}}
			if tlsFiles {
				cfg.TrustedCAFile = "/nonexistent/ca.pem"
			}
			s, err := etcdstore.Open(cfg)
			Expect(err).To(HaveOccurred())
			Expect(s).To(BeNil())
			Expect(err.Error()).To(ContainSubstring(strconv.Quote(ep)))
		},
		Entry("no scheme", "localhost:2379", false),
		Entry("empty", "", false),
		Entry("a relative socket path", "unix://relative/etcd.sock", false),
		Entry("another scheme", "ftp://host:21", false),
		Entry("no port", "http://host", false),
		Entry("a path", "http://host:2379/v3", false),
		Entry("not a URL", "http://[::1", false),
		Entry("plain http with TLS files", "http://127.0.0.1:2379", true),
	)

	It("refuses endpoints of different schemes", func() {
		_, err := etcdstore.Open(etcdstore.Config{Endpoints: []string{"https://10.0.0.1:2379", "http://10.0.0.2:2379"}})
		Expect(err).To(MatchError(ContainSubstring(`"http://10.0.0.2:2379"`)))
	})

	It("refuses no endpoints", func() {
		_, err := etcdstore.Open(etcdstore.Config{})
		Expect(err).To(MatchError(ContainSubstring("no endpoints")))
	})

	It("refuses a certificate without its key", func() {
		_, err := etcdstore.Open(etcdstore.Config{Endpoints: shared.Endpoints, CertFile: "/x/cert.pem"})
		Expect(err).To(MatchError(ContainSubstring("key")))
	})

	Describe("with no member reachable", func() {
		const timeout = time.Second
		var ep string

		BeforeEach(func() {
			ep = "unix://" + filepath.Join(GinkgoT().TempDir(), "none.sock")
		})

		openDown := func(failFast bool) *etcdstore.Store {
			GinkgoHelper()
			start := time.Now()
			s := open(etcdstore.Config{Endpoints: []string{ep}, Timeout: timeout, FailFast: failFast})
			Expect(time.Since(start)).To(BeNumerically("<", 500*time.Millisecond), "Open waited for the cluster")
			return s
		}

		It("returns at once; the first call fails with ErrUnavailable after about Timeout, naming the endpoint", func() {
			s := openDown(false)
			for _, call := range []func() error{
				func() error { _, err := get(s, "k"); return err },
				func() error { return s.Update(func(tx store.Tx) error { return tx.Put("k", nil) }) },
			} {
				start := time.Now()
				err := call()
				elapsed := time.Since(start)
				Expect(err).To(MatchError(store.ErrUnavailable))
				Expect(err.Error()).To(ContainSubstring(ep))
				Expect(elapsed).To(BeNumerically(">=", timeout-100*time.Millisecond))
				Expect(elapsed).To(BeNumerically("<", timeout+2*time.Second))
			}
		})

		It("with FailFast, fails every later call at once", func() {
			s := openDown(true)
			start := time.Now()
			_, err := get(s, "k")
			Expect(err).To(MatchError(store.ErrUnavailable))
			Expect(time.Since(start)).To(BeNumerically("<", timeout+2*time.Second))
			for range 3 {
				start = time.Now()
				err = s.Update(func(tx store.Tx) error { return increment(tx, "k") })
				Expect(err).To(MatchError(store.ErrUnavailable))
				Expect(err.Error()).To(ContainSubstring(ep))
				Expect(time.Since(start)).To(BeNumerically("<", 50*time.Millisecond))
			}
		})

		It("commits nothing after a read failed, even when fn ignores the error", func() {
			s := openDown(true)
			err := s.Update(func(tx store.Tx) error {
				_, _ = tx.Get("k")
				return tx.Put("k", []byte("v"))
			})
			Expect(err).To(MatchError(store.ErrUnavailable))
			Expect(s.RoundTrips()).To(BeEquivalentTo(1), "no commit after the failed read")
		})
	})
})

var _ = Describe("a cluster of three", Ordered, func() {
	var (
		c     *etcdtest.Cluster
		cli   *clientv3.Client
		cfg   etcdstore.Config
		long  *etcdstore.Store // opened before any member went
		alive []int            // members running
	)

	BeforeAll(func() {
		c = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{Members: 3})
		var err error
		cli, err = c.Client()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		cfg = etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/three", Timeout: testTimeout}
		long = open(cfg)
		put(long, "counter", "0")
		alive = []int{0, 1, 2}
	})

	// leader is the index of the member that leads, among those alive.
	leader := func() int {
		GinkgoHelper()
		var found int
		Eventually(func() error {
			for _, i := range alive {
				st, err := cli.Status(ctx(), c.Endpoints[i])
				if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
					found = i
					return nil
				}
			}
			return errors.New("no leader")
		}).WithTimeout(10 * time.Second).Should(Succeed())
		return found
	}

	kill := func(i int) {
		GinkgoHelper()
		Expect(c.Kill(i)).To(Succeed())
		alive = slices.DeleteFunc(alive, func(m int) bool { return m == i })
	}

	It("keeps working with one member killed, its leader", func() {
		kill(leader())
		fresh := open(cfg)
		for _, s := range []*etcdstore.Store{long, fresh} {
			for range 5 {
				Expect(s.Update(func(tx store.Tx) error { return increment(tx, "counter") })).To(Succeed())
			}
		}
		Expect(get(fresh, "counter")).To(Equal([]byte("10")))
	})

	It("fails with ErrUnavailable within about Timeout with quorum lost, commits nothing, and works again after a restart", func() {
		kill(leader())
		killed := []int{}
		for i := range 3 {
			if !slices.Contains(alive, i) {
				killed = append(killed, i)
			}
		}
		short := cfg
		short.Timeout = time.Second
		s := open(short)
		calls := map[string]func(s store.Store) error{
			"an Update": func(s store.Store) error {
				return s.Update(func(tx store.Tx) error {
					if err := increment(tx, "counter"); err != nil {
						return err
					}
					return tx.Put("lost", []byte("x"))
				})
			},
			"a View": func(s store.Store) error { _, err := get(s, "counter"); return err },
		}
		for _, try := range []struct {
			call    string
			s       *etcdstore.Store
			timeout time.Duration
		}{
			{"an Update", long, cfg.Timeout},
			{"an Update", s, short.Timeout},
			{"a View", s, short.Timeout},
		} {
			start := time.Now()
			err := calls[try.call](try.s)
			elapsed := time.Since(start)
			Expect(err).To(MatchError(store.ErrUnavailable), try.call)
			Expect(err.Error()).To(ContainSubstring(c.Endpoints[0]), try.call)
			Expect(elapsed).To(BeNumerically("<", try.timeout+2*time.Second), try.call)
		}

		By("with FailFast, every call after the first unavailable one fails at once")
		ff := short
		ff.FailFast = true
		fs := open(ff)
		start := time.Now()
		Expect(calls["an Update"](fs)).To(MatchError(store.ErrUnavailable))
		Expect(time.Since(start)).To(BeNumerically("<", ff.Timeout+2*time.Second))
		start = time.Now()
		Expect(calls["a View"](fs)).To(MatchError(store.ErrUnavailable))
		Expect(time.Since(start)).To(BeNumerically("<", 50*time.Millisecond))

		By("restarting the killed members")
		Expect(c.Restart(killed...)).To(Succeed())
		alive = []int{0, 1, 2}
		Eventually(func() error { _, err := get(s, "counter"); return err }).
			WithTimeout(15 * time.Second).Should(Succeed())
		Expect(get(long, "counter")).To(Equal([]byte("10")), "nothing committed while quorum was lost")
		_, err := get(long, "lost")
		Expect(err).To(MatchError(store.ErrNotFound))
		for _, st := range []*etcdstore.Store{long, s} {
			Expect(st.Update(func(tx store.Tx) error { return increment(tx, "counter") })).To(Succeed())
		}
		Expect(get(s, "counter")).To(Equal([]byte("12")))
	})
})

var _ = Describe("TLS", Ordered, func() {
	const timeout = time.Second
	var c *etcdtest.Cluster

	BeforeAll(func() {
		c = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{TLS: true})
	})

	It("works with a client certificate", func() {
		s := open(etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/tls", Timeout: timeout,
			CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile})
		put(s, "k", "v")
		Expect(get(s, "k")).To(Equal([]byte("v")))
	})

	DescribeTable("fails, within about Timeout, with ErrUnavailable",
		func(configure func(cfg *etcdstore.Config)) {
			cfg := etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/tls", Timeout: timeout}
			configure(&cfg)
			s := open(cfg)
			start := time.Now()
			_, err := get(s, "k")
			Expect(err).To(MatchError(store.ErrUnavailable))
			Expect(time.Since(start)).To(BeNumerically("<", timeout+2*time.Second))
		},
		Entry("without TLS files", func(*etcdstore.Config) {}),
		Entry("with the CA but no client certificate", func(cfg *etcdstore.Config) {
			cfg.TrustedCAFile = c.TLS.CAFile
		}),
		Entry("with a client certificate but not the cluster's CA", func(cfg *etcdstore.Config) {
			cfg.CertFile, cfg.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
		}),
		Entry("speaking plain text to it", func(cfg *etcdstore.Config) {
			cfg.Endpoints = nil
			for _, ep := range c.Endpoints {
				cfg.Endpoints = append(cfg.Endpoints, "unix://"+strings.TrimPrefix(ep, "unixs://"))
			}
		}),
	)

	It("refuses a certificate file that is not there, naming it", func() {
		_, err := etcdstore.Open(etcdstore.Config{Endpoints: c.Endpoints,
			CertFile: "/nonexistent/client.pem", KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile})
		Expect(err).To(MatchError(ContainSubstring("/nonexistent/client.pem")))
	})
})
