package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// NewSpace makes a fresh, empty key space for one spec and returns the
// function that opens a Store onto it. Every call of that function opens
// another Store (another client, as another process would) onto the same
// space; closing the Stores it opens, when the spec ends, is its job.
type NewSpace func() (open func() store.Store)

// Contract registers the specs every store.Store implementation must
// pass, each on a space of its own made by newSpace. It returns true, so
// that a suite can call it as `var _ = storetest.Contract(...)`.
func Contract(newSpace NewSpace) bool {
	Describe("the store contract", func() {
		transactionSpecs(newSpace)
		prefixedSpecs(newSpace)
		concurrencySpecs(newSpace)
	})
	return true
}

// Put commits key=value in one transaction.
func Put(s store.Store, key, value string) {
	GinkgoHelper()
	Expect(s.Update(func(tx store.Tx) error { return tx.Put(key, []byte(value)) })).To(Succeed())
}

// Get reads key in a transaction of its own.
func Get(s store.Store, key string) ([]byte, error) {
	var v []byte
	err := s.View(func(tx store.Tx) error {
		var err error
		v, err = tx.Get(key)
		return err
	})
	return v, err
}

// Scan returns the keys and values under prefix, in the order Scan gives
// them.
func Scan(s store.Store, prefix string) (keys []string, values []string) {
	GinkgoHelper()
	Expect(s.View(func(tx store.Tx) error {
		keys, values = nil, nil
		return tx.Scan(prefix, func(k string, v []byte) error {
			keys = append(keys, k)
			values = append(values, string(v))
			return nil
		})
	})).To(Succeed())
	return keys, values
}

func transactionSpecs(newSpace NewSpace) {
	Describe("transactions", func() {
		var s store.Store

		BeforeEach(func() {
			s = newSpace()()
		})

		It("Prefetch reads what Get would: a Get then returns the stored value, ErrNotFound, or the transaction's own write", func() {
			Put(s, "a", "1")
			Put(s, "b", "2")
			Expect(s.Update(func(tx store.Tx) error {
				Expect(tx.Put("b", []byte("20"))).To(Succeed())
				Expect(store.Prefetch(tx, "a", "b", "missing", "a")).To(Succeed())
				Expect(tx.Get("a")).To(Equal([]byte("1")))
				Expect(tx.Get("b")).To(Equal([]byte("20")))
				_, err := tx.Get("missing")
				Expect(err).To(MatchError(store.ErrNotFound))
				return tx.Put("a", []byte("10"))
			})).To(Succeed())
			Expect(Get(s, "a")).To(Equal([]byte("10")))
			Expect(s.View(func(tx store.Tx) error {
				Expect(store.Prefetch(tx)).To(Succeed(), "no keys")
				Expect(store.Prefetch(tx, "a", "b")).To(Succeed())
				Expect(tx.Get("b")).To(Equal([]byte("20")))
				return nil
			})).To(Succeed())
		})

		It("returns ErrNotFound for a missing key, in View and in Update", func() {
			_, err := Get(s, "nope")
			Expect(err).To(MatchError(store.ErrNotFound))
			err = s.Update(func(tx store.Tx) error {
				_, err := tx.Get("nope")
				Expect(err).To(MatchError(store.ErrNotFound))
				return nil
			})
			Expect(err).NotTo(HaveOccurred())
		})

		It("puts, overwrites and deletes", func() {
			Put(s, "a", "1")
			Expect(Get(s, "a")).To(Equal([]byte("1")))
			Put(s, "a", "2")
			Expect(Get(s, "a")).To(Equal([]byte("2")))
			Expect(s.Update(func(tx store.Tx) error { return tx.Delete("a") })).To(Succeed())
			_, err := Get(s, "a")
			Expect(err).To(MatchError(store.ErrNotFound))
		})

		DescribeTable("stores an empty value as present",
			func(value []byte) {
				Expect(s.Update(func(tx store.Tx) error { return tx.Put("empty", value) })).To(Succeed())
				v, err := Get(s, "empty")
				Expect(err).NotTo(HaveOccurred())
				Expect(v).To(BeEmpty())
				keys, _ := Scan(s, "empty")
				Expect(keys).To(Equal([]string{"empty"}))
			},
			Entry("zero-length", []byte{}),
			Entry("nil", nil),
		)

		It("sees its own writes inside an Update", func() {
			Expect(s.Update(func(tx store.Tx) error {
				Expect(tx.Put("a", []byte("1"))).To(Succeed())
				Expect(tx.Get("a")).To(Equal([]byte("1")))
				Expect(tx.Delete("a")).To(Succeed())
				_, err := tx.Get("a")
				Expect(err).To(MatchError(store.ErrNotFound))
				return nil
			})).To(Succeed())
		})

		It("sees its own writes in a Scan, merged with the stored keys in byte order", func() {
			Put(s, "d/b", "old")
			Put(s, "d/d", "doomed")
			Put(s, "d/e", "kept")
			wantKeys := []string{"d/a", "d/b", "d/c", "d/e"}
			wantValues := []string{"new a", "changed b", "new c", "kept"}
			Expect(s.Update(func(tx store.Tx) error {
				// A Scan before the writes, so that one that remembers
				// what it read must still see what comes after.
				Expect(tx.Scan("d/", func(string, []byte) error { return nil })).To(Succeed())
				Expect(tx.Put("d/c", []byte("new c"))).To(Succeed())
				Expect(tx.Put("d/a", []byte("new a"))).To(Succeed())
				Expect(tx.Put("d/b", []byte("changed b"))).To(Succeed())
				Expect(tx.Delete("d/d")).To(Succeed())
				Expect(tx.Put("d", []byte("outside"))).To(Succeed())
				var keys, values []string
				Expect(tx.Scan("d/", func(k string, v []byte) error {
					keys = append(keys, k)
					values = append(values, string(v))
					return nil
				})).To(Succeed())
				Expect(keys).To(Equal(wantKeys))
				Expect(values).To(Equal(wantValues))
				Expect(tx.Get("d/d")).Error().To(MatchError(store.ErrNotFound))
				return nil
			})).To(Succeed())
			keys, values := Scan(s, "d/")
			Expect(keys).To(Equal(wantKeys))
			Expect(values).To(Equal(wantValues))
			keys, _ = Scan(s, "d")
			Expect(keys).To(Equal(append([]string{"d"}, wantKeys...)))
		})

		It("deletes a missing key without error", func() {
			Expect(s.Update(func(tx store.Tx) error { return tx.Delete("never-was") })).To(Succeed())
		})

		It("refuses writes in a View and keeps the store unchanged", func() {
			Put(s, "a", "1")
			err := s.View(func(tx store.Tx) error {
				Expect(tx.Put("b", []byte("2"))).NotTo(Succeed())
				Expect(tx.Delete("a")).NotTo(Succeed())
				return nil
			})
			Expect(err).NotTo(HaveOccurred())
			Expect(Get(s, "a")).To(Equal([]byte("1")))
			_, err = Get(s, "b")
			Expect(err).To(MatchError(store.ErrNotFound))
		})

		Describe("Scan", func() {
			BeforeEach(func() {
				// Inserted out of order, with neighbours on both sides of the prefix.
				for _, k := range []string{
					"net/b", "ne", "net", "net/a/x", "net0", "net/", "net/\xff", "net/B",
					"net/a", "net/0", "nez", "a", "net/a/", "z",
				} {
					Put(s, k, "v:"+k)
				}
			})

			DescribeTable("returns exactly the keys with the prefix, in byte order",
				func(prefix string, want []string) {
					keys, values := Scan(s, prefix)
					Expect(keys).To(Equal(want))
					Expect(sort.StringsAreSorted(keys)).To(BeTrue())
					for i, k := range keys {
						Expect(values[i]).To(Equal("v:" + k))
					}
				},
				Entry("a directory prefix", "net/",
					[]string{"net/", "net/0", "net/B", "net/a", "net/a/", "net/a/x", "net/b", "net/\xff"}),
				Entry("a nested prefix", "net/a/", []string{"net/a/", "net/a/x"}),
				Entry("a prefix that is not a directory", "net",
					[]string{"net", "net/", "net/0", "net/B", "net/a", "net/a/", "net/a/x", "net/b", "net/\xff", "net0"}),
				Entry("a whole key, which is its own prefix", "net/a/x", []string{"net/a/x"}),
				Entry("a prefix no key has", "nf", nil),
				Entry("a prefix after every key", "zz", nil),
				Entry("a prefix before every key", "0", nil),
			)

			It("stops at the first error of fn and returns it", func() {
				stop := errors.New("stop")
				var seen []string
				err := s.View(func(tx store.Tx) error {
					seen = nil
					return tx.Scan("net/", func(k string, _ []byte) error {
						seen = append(seen, k)
						if len(seen) == 2 {
							return stop
						}
						return nil
					})
				})
				Expect(err).To(MatchError(stop))
				Expect(seen).To(Equal([]string{"net/", "net/0"}))
			})
		})

		It("returns copies: changing a value read in a transaction does not change the store", func() {
			Put(s, "a", "original")
			Put(s, "p/b", "original")
			var got, scanned []byte
			Expect(s.View(func(tx store.Tx) error {
				var err error
				got, err = tx.Get("a")
				if err != nil {
					return err
				}
				return tx.Scan("p/", func(_ string, v []byte) error {
					scanned = v
					return nil
				})
			})).To(Succeed())
			copy(got, "XXXXXXXX")
			copy(scanned, "XXXXXXXX")
			Expect(Get(s, "a")).To(Equal([]byte("original")))
			Expect(Get(s, "p/b")).To(Equal([]byte("original")))

			// Also within an Update, where an embedded store's slices may
			// point into pages that are about to be written, and a store
			// that remembers what it read must not hand out its memory.
			Expect(s.Update(func(tx store.Tx) error {
				v, err := tx.Get("a")
				if err != nil {
					return err
				}
				copy(v, "YYYYYYYY")
				Expect(tx.Get("a")).To(Equal([]byte("original")))
				return tx.Put("c", []byte("new"))
			})).To(Succeed())
			Expect(Get(s, "a")).To(Equal([]byte("original")))

			// And a value the transaction wrote itself.
			Expect(s.Update(func(tx store.Tx) error {
				if err := tx.Put("w", []byte("written")); err != nil {
					return err
				}
				v, err := tx.Get("w")
				if err != nil {
					return err
				}
				copy(v, "ZZZZZZZ")
				return nil
			})).To(Succeed())
			Expect(Get(s, "w")).To(Equal([]byte("written")))
		})

		It("stores the value as it was at Put: the caller may reuse its buffer in the same transaction", func() {
			buf := []byte("first")
			Expect(s.Update(func(tx store.Tx) error {
				copy(buf, "first")
				if err := tx.Put("a", buf); err != nil {
					return err
				}
				copy(buf, "XXXXX")
				return nil
			})).To(Succeed())
			Expect(Get(s, "a")).To(Equal([]byte("first")))
		})

		It("commits nothing when fn returns an error, and returns that error", func() {
			Put(s, "keep", "1")
			boom := errors.New("boom")
			err := s.Update(func(tx store.Tx) error {
				Expect(tx.Get("keep")).To(Equal([]byte("1")))
				Expect(tx.Put("new", []byte("x"))).To(Succeed())
				Expect(tx.Put("keep", []byte("changed"))).To(Succeed())
				Expect(tx.Delete("keep")).To(Succeed())
				return fmt.Errorf("wrapped: %w", boom)
			})
			Expect(err).To(MatchError(boom))
			Expect(err.Error()).To(Equal("wrapped: boom"), "the error of fn is returned as it is")
			_, err = Get(s, "new")
			Expect(err).To(MatchError(store.ErrNotFound))
			Expect(Get(s, "keep")).To(Equal([]byte("1")))
		})

		It("commits nothing when fn panics, reports it (as an error or by panicking on), and stays usable", func() {
			Put(s, "keep", "1")
			var err error
			recovered := func() (r any) {
				defer func() { r = recover() }()
				err = s.Update(func(tx store.Tx) error {
					Expect(tx.Put("new", []byte("x"))).To(Succeed())
					Expect(tx.Put("keep", []byte("changed"))).To(Succeed())
					panic("fn bug")
				})
				return nil
			}()
			Expect(recovered != nil || err != nil).To(BeTrue(), "the panic went unreported")
			_, err = Get(s, "new")
			Expect(err).To(MatchError(store.ErrNotFound))
			Expect(Get(s, "keep")).To(Equal([]byte("1")))
			Put(s, "after", "2")
			Expect(Get(s, "after")).To(Equal([]byte("2")))
		})

		Describe("GetJSON and PutJSON", func() {
			type record struct {
				Name  string            `json:"name"`
				IPs   []string          `json:"ips"`
				Count int               `json:"count"`
				Tags  map[string]string `json:"tags,omitempty"`
			}

			It("round-trips a value", func() {
				in := record{Name: "ep1", IPs: []string{"10.0.0.2", "fd00::2"}, Count: 3, Tags: map[string]string{"a": "b"}}
				Expect(s.Update(func(tx store.Tx) error { return store.PutJSON(tx, "ep/ep1", in) })).To(Succeed())
				var out record
				Expect(s.View(func(tx store.Tx) error { return store.GetJSON(tx, "ep/ep1", &out) })).To(Succeed())
				Expect(out).To(Equal(in))
				raw, err := Get(s, "ep/ep1")
				Expect(err).NotTo(HaveOccurred())
				Expect(json.Valid(raw)).To(BeTrue())
			})

			It("returns ErrNotFound for a missing key", func() {
				var out record
				err := s.View(func(tx store.Tx) error { return store.GetJSON(tx, "ep/none", &out) })
				Expect(err).To(MatchError(store.ErrNotFound))
			})

			DescribeTable("reports a value that does not decode as ErrCorrupt, naming the key",
				func(raw string) {
					Put(s, "ep/bad", raw)
					var out record
					err := s.View(func(tx store.Tx) error { return store.GetJSON(tx, "ep/bad", &out) })
					Expect(err).To(MatchError(store.ErrCorrupt))
					Expect(err.Error()).To(ContainSubstring("ep/bad"))
				},
				Entry("not JSON", "not json"),
				Entry("truncated JSON", `{"name":"ep`),
				Entry("empty", ""),
				Entry("JSON of the wrong shape", `["a","b"]`),
				Entry("a field of the wrong type", `{"count":"three"}`),
			)

			It("fails to encode an unencodable value without writing it", func() {
				err := s.Update(func(tx store.Tx) error { return store.PutJSON(tx, "ep/chan", make(chan int)) })
				Expect(err).To(HaveOccurred())
				Expect(err).NotTo(MatchError(store.ErrCorrupt))
				Expect(err.Error()).To(ContainSubstring("ep/chan"))
				_, err = Get(s, "ep/chan")
				Expect(err).To(MatchError(store.ErrNotFound))
			})
		})
	})
}

func prefixedSpecs(newSpace NewSpace) {
	Describe("Prefixed", func() {
		var (
			s      store.Store
			one    store.Store
			two    store.Store
			nested store.Store
		)

		BeforeEach(func() {
			s = newSpace()()
			one = store.Prefixed(s, "drivers/one/")
			two = store.Prefixed(s, "drivers/two/")
			nested = store.Prefixed(one, "sub/")
		})

		It("stores keys under the prefix in the underlying store", func() {
			Put(one, "ep/a", "1")
			Expect(Get(s, "drivers/one/ep/a")).To(Equal([]byte("1")))
			_, err := Get(s, "ep/a")
			Expect(err).To(MatchError(store.ErrNotFound))

			Put(s, "drivers/one/ep/b", "2")
			Expect(Get(one, "ep/b")).To(Equal([]byte("2")))
		})

		It("strips the prefix from the keys Scan returns", func() {
			Put(one, "ep/b", "2")
			Put(one, "ep/a", "1")
			Put(one, "other", "3")
			Put(s, "drivers/one", "outside") // shares the bytes but not the prefix
			keys, values := Scan(one, "ep/")
			Expect(keys).To(Equal([]string{"ep/a", "ep/b"}))
			Expect(values).To(Equal([]string{"1", "2"}))
			keys, _ = Scan(one, "")
			Expect(keys).To(Equal([]string{"ep/a", "ep/b", "other"}))
		})

		It("keeps two prefixes apart", func() {
			Put(one, "k", "from one")
			Put(two, "k", "from two")
			Put(two, "only-two", "x")
			Expect(Get(one, "k")).To(Equal([]byte("from one")))
			Expect(Get(two, "k")).To(Equal([]byte("from two")))
			_, err := Get(one, "only-two")
			Expect(err).To(MatchError(store.ErrNotFound))
			keys, _ := Scan(one, "")
			Expect(keys).To(Equal([]string{"k"}))
			keys, _ = Scan(two, "")
			Expect(keys).To(Equal([]string{"k", "only-two"}))

			Expect(one.Update(func(tx store.Tx) error { return tx.Delete("k") })).To(Succeed())
			Expect(Get(two, "k")).To(Equal([]byte("from two")))
		})

		It("nests", func() {
			Put(nested, "k", "deep")
			Expect(Get(s, "drivers/one/sub/k")).To(Equal([]byte("deep")))
			keys, _ := Scan(one, "")
			Expect(keys).To(Equal([]string{"sub/k"}))
			keys, _ = Scan(nested, "")
			Expect(keys).To(Equal([]string{"k"}))
		})

		It("commits nothing when fn returns an error", func() {
			boom := errors.New("boom")
			Expect(one.Update(func(tx store.Tx) error {
				Expect(tx.Put("k", []byte("v"))).To(Succeed())
				return boom
			})).To(MatchError(boom))
			_, err := Get(s, "drivers/one/k")
			Expect(err).To(MatchError(store.ErrNotFound))
		})

		It("does not close the underlying store", func() {
			Expect(one.Close()).To(Succeed())
			Put(s, "still", "open")
			Put(one, "still", "open")
		})
	})
}

// Sizes of the concurrency specs: enough contention that a store without
// serializable transactions fails them nearly every run, small enough to
// keep the suite quick.
const (
	workers    = 8
	increments = 12
	rounds     = 3
	// think is how long a transaction works between reading and writing,
	// as a plugin does: it widens the window in which others commit.
	think = 2 * time.Millisecond
)

// updateRetrying runs s.Update(fn) until it returns something other than
// store.ErrConflict, which asks the caller to try again later (CNI's error
// 11: the runtime retries), and counts the conflicts.
func updateRetrying(s store.Store, fn func(store.Tx) error, conflicts *int) error {
	for {
		err := s.Update(fn)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		*conflicts++
		if *conflicts > 1000 {
			return fmt.Errorf("kept conflicting: %w", err)
		}
	}
}

// runWorkers opens a Store for each of n workers and runs them at once,
// each through its own Store, failing the spec with the first error.
// It returns the conflicts they reported, in all.
func runWorkers(open func() store.Store, n int, work func(i int, s store.Store, conflicts *int) error) int {
	GinkgoHelper()
	stores := make([]store.Store, n)
	for i := range stores {
		stores[i] = open()
	}
	start := make(chan struct{})
	errs := make([]error, n)
	conflicts := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer GinkgoRecover()
			<-start
			errs[i] = work(i, stores[i], &conflicts[i])
		})
	}
	close(start)
	wg.Wait()
	total := 0
	for i := range n {
		Expect(errs[i]).NotTo(HaveOccurred(), "worker %d", i)
		total += conflicts[i]
	}
	GinkgoWriter.Printf("%d ErrConflict answers retried by the workers\n", total)
	return total
}

func countKeys(tx store.Tx, prefix string) (int, error) {
	n := 0
	err := tx.Scan(prefix, func(string, []byte) error { n++; return nil })
	return n, err
}

func concurrencySpecs(newSpace NewSpace) {
	Describe("concurrent transactions, each through a Store of its own", func() {
		var open func() store.Store

		BeforeEach(func() {
			open = newSpace()
		})

		DescribeTable("lose no update: read-modify-write of one counter by many at once",
			func(prefetch []string) {
				runWorkers(open, workers, func(_ int, s store.Store, conflicts *int) error {
					for range increments {
						err := updateRetrying(s, func(tx store.Tx) error {
							if err := store.Prefetch(tx, prefetch...); err != nil {
								return err
							}
							n := 0
							v, err := tx.Get("counter")
							switch {
							case errors.Is(err, store.ErrNotFound):
							case err != nil:
								return err
							default:
								if n, err = strconv.Atoi(string(v)); err != nil {
									return err
								}
							}
							return tx.Put("counter", []byte(strconv.Itoa(n+1)))
						}, conflicts)
						if err != nil {
							return err
						}
					}
					return nil
				})
				Expect(Get(open(), "counter")).To(Equal([]byte(strconv.Itoa(workers * increments))))
			},
			Entry("reading with Get", nil),
			Entry("prefetching what they read, and more", []string{"counter", "other"}),
		)

		It("do not conflict on a key one prefetched but never got", func() {
			a, b := open(), open()
			Put(a, "x", "0")
			runs := 0
			wrote := make(chan error, 1)
			Expect(a.Update(func(tx store.Tx) error {
				runs++
				if err := store.Prefetch(tx, "x", "y"); err != nil {
					return err
				}
				if _, err := tx.Get("y"); !errors.Is(err, store.ErrNotFound) {
					return err
				}
				if runs == 1 {
					go func() { wrote <- b.Update(func(tx store.Tx) error { return tx.Put("x", []byte("1")) }) }()
					// A store that locks makes the other wait for this
					// commit; one that does not lets it commit now.
					select {
					case err := <-wrote:
						wrote <- err
					case <-time.After(200 * time.Millisecond):
					}
				}
				return tx.Put("y", []byte("1"))
			})).To(Succeed())
			Expect(runs).To(Equal(1))
			Eventually(wrote, 5*time.Second).Should(Receive(BeNil()))
			Expect(Get(a, "x")).To(Equal([]byte("1")))
			Expect(Get(a, "y")).To(Equal([]byte("1")))
		})

		It("never insert past a limit they check with a Scan (no phantoms)", func() {
			const limit = 3
			for round := range rounds {
				prefix := fmt.Sprintf("slots/%d/", round)
				runWorkers(open, workers, func(i int, s store.Store, conflicts *int) error {
					return updateRetrying(s, func(tx store.Tx) error {
						n, err := countKeys(tx, prefix)
						if err != nil || n >= limit {
							return err
						}
						time.Sleep(think)
						return tx.Put(prefix+strconv.Itoa(i), []byte("taken"))
					}, conflicts)
				})
				keys, _ := Scan(open(), prefix)
				Expect(keys).To(HaveLen(limit), "round %d: %v", round, keys)
			}
		})

		It("never delete below a minimum they check with a Scan (no write skew)", func() {
			for round := range rounds {
				prefix := fmt.Sprintf("members/%d/", round)
				seed := open()
				Expect(seed.Update(func(tx store.Tx) error {
					for i := range workers {
						if err := tx.Put(prefix+strconv.Itoa(i), []byte("member")); err != nil {
							return err
						}
					}
					return nil
				})).To(Succeed())
				runWorkers(open, workers, func(i int, s store.Store, conflicts *int) error {
					return updateRetrying(s, func(tx store.Tx) error {
						n, err := countKeys(tx, prefix)
						if err != nil || n <= 1 {
							return err
						}
						time.Sleep(think)
						return tx.Delete(prefix + strconv.Itoa(i))
					}, conflicts)
				})
				keys, _ := Scan(open(), prefix)
				Expect(keys).To(HaveLen(1), "round %d: %v", round, keys)
			}
		})

		It("read one consistent snapshot while others commit", func() {
			// The writer always sets both keys of the pair to the same
			// value in one transaction; the readers read them apart.
			writer := open()
			Put(writer, "pair/a", "0")
			Put(writer, "pair/b", "0")
			done := make(chan struct{})
			go func() {
				defer GinkgoRecover()
				defer close(done)
				conflicts := 0
				for i := 1; i <= 40; i++ {
					v := []byte(strconv.Itoa(i))
					Expect(updateRetrying(writer, func(tx store.Tx) error {
						if err := tx.Put("pair/a", v); err != nil {
							return err
						}
						return tx.Put("pair/b", v)
					}, &conflicts)).To(Succeed())
				}
			}()
			readPair := func(tx store.Tx) error {
				a, err := tx.Get("pair/a")
				if err != nil {
					return err
				}
				time.Sleep(think)
				b, err := tx.Get("pair/b")
				if err != nil {
					return err
				}
				_, values, err := scanAll(tx, "pair/")
				if err != nil {
					return err
				}
				if string(a) != string(b) || len(values) != 2 || values[0] != string(a) || values[1] != string(a) {
					return fmt.Errorf("torn read: a=%s b=%s scan=%v", a, b, values)
				}
				return nil
			}
			runWorkers(open, 2, func(i int, s store.Store, conflicts *int) error {
				reads := 0
				for {
					select {
					case <-done:
						if reads == 0 {
							return errors.New("no read while the writer ran")
						}
						return nil
					default:
					}
					var err error
					if i == 0 {
						err = s.View(readPair)
					} else {
						// An Update that only reads sees one snapshot too.
						err = updateRetrying(s, readPair, conflicts)
					}
					if err != nil {
						return err
					}
					reads++
				}
			})
		})
	})
}

func scanAll(tx store.Tx, prefix string) (keys, values []string, err error) {
	err = tx.Scan(prefix, func(k string, v []byte) error {
		keys = append(keys, k)
		values = append(values, string(v))
		return nil
	})
	return keys, values, err
}
