package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/storetest"
)

// volatileUpdates is a FileStore whose every Update is volatile, and
// mixedUpdates one whose Updates alternate between volatile and durable:
// the contract holds for them as it does for durable Updates alone.
type volatileUpdates struct{ *store.FileStore }

func (v volatileUpdates) Update(fn func(store.Tx) error) error { return v.UpdateVolatile(fn) }

type mixedUpdates struct {
	*store.FileStore
	n *atomic.Int64
}

func (m mixedUpdates) Update(fn func(store.Tx) error) error {
	if m.n.Add(1)%2 == 0 {
		return m.FileStore.Update(fn)
	}
	return m.UpdateVolatile(fn)
}

var _ = Describe("volatile Updates", func() {
	Context("all volatile", func() {
		storetest.Contract(func() func() store.Store {
			dir := GinkgoT().TempDir()
			return func() store.Store { return volatileUpdates{openStore(dir)} }
		})
	})
	Context("volatile and durable in turn", func() {
		storetest.Contract(func() func() store.Store {
			dir := GinkgoT().TempDir()
			n := &atomic.Int64{}
			return func() store.Store { return mixedUpdates{openStore(dir), n} }
		})
	})
})

var _ = Describe("a volatile Update", func() {
	var (
		dir  string
		s    *store.FileStore
		file string
	)
	BeforeEach(func() {
		dir = GinkgoT().TempDir()
		s = openStore(dir)
		file = filepath.Join(dir, store.VolatileName)
		put(s, "a", "1")
		put(s, "b", "2")
		put(s, "c", "3")
	})
	volatile := func(fn func(tx store.Tx) error) {
		GinkgoHelper()
		Expect(s.UpdateVolatile(fn)).To(Succeed())
	}
	// powerCut does to the volatile file what a power cut may: it is gone.
	powerCut := func() {
		GinkgoHelper()
		Expect(os.Remove(file)).To(Succeed())
	}
	expectValue := func(st store.Store, key, want string) {
		GinkgoHelper()
		v, err := get(st, key)
		Expect(err).NotTo(HaveOccurred(), key)
		Expect(string(v)).To(Equal(want), key)
	}
	expectGone := func(st store.Store, key string) {
		GinkgoHelper()
		_, err := get(st, key)
		Expect(err).To(MatchError(store.ErrNotFound), key)
	}

	It("is seen by the transactions of another store of the directory, Scan merging its writes in order", func() {
		volatile(func(tx store.Tx) error {
			Expect(tx.Put("b", []byte("20"))).To(Succeed())
			Expect(tx.Delete("c")).To(Succeed())
			Expect(tx.Put("aa", []byte("5"))).To(Succeed())
			Expect(tx.Put("d", []byte("4"))).To(Succeed())
			v, err := tx.Get("b")
			Expect(err).NotTo(HaveOccurred())
			Expect(string(v)).To(Equal("20"), "its own write, read back in it")
			return nil
		})
		other := openStore(dir)
		expectValue(other, "b", "20")
		expectGone(other, "c")
		keys, values := scan(other, "")
		Expect(keys).To(Equal([]string{"a", "aa", "b", "d", "meta/schema"}), "the store's own schema key too")
		Expect(values[:4]).To(Equal([]string{"1", "5", "20", "4"}))
		keys, _ = scan(other, "a")
		Expect(keys).To(Equal([]string{"a", "aa"}))
	})

	It("is taken back whole, to the last durable commit, when the volatile file is lost", func() {
		volatile(func(tx store.Tx) error {
			Expect(tx.Put("a", []byte("10"))).To(Succeed())
			return tx.Put("new", []byte("x"))
		})
		volatile(func(tx store.Tx) error { return tx.Delete("b") })
		powerCut()
		expectValue(s, "a", "1")
		expectValue(s, "b", "2")
		expectGone(s, "new")
	})

	It("is made durable by the next durable Update, its writes under it", func() {
		volatile(func(tx store.Tx) error {
			Expect(tx.Put("a", []byte("10"))).To(Succeed())
			return tx.Delete("b")
		})
		Expect(s.Update(func(tx store.Tx) error {
			v, err := tx.Get("a")
			Expect(err).NotTo(HaveOccurred())
			Expect(string(v)).To(Equal("10"), "the durable transaction reads the volatile write")
			return tx.Put("c", []byte("30"))
		})).To(Succeed())
		Expect(file).NotTo(BeAnExistingFile(), "taken in, and removed")
		expectValue(s, "a", "10")
		expectGone(s, "b")
		expectValue(s, "c", "30")
	})

	It("writes nothing when it fails", func() {
		volatile(func(tx store.Tx) error { return tx.Put("a", []byte("10")) })
		Expect(s.UpdateVolatile(func(tx store.Tx) error {
			Expect(tx.Put("a", []byte("11"))).To(Succeed())
			return errors.New("no")
		})).To(MatchError("no"))
		expectValue(s, "a", "10")
	})

	It("stays volatile, and in force, after a durable Update that fails", func() {
		volatile(func(tx store.Tx) error { return tx.Put("a", []byte("10")) })
		Expect(s.Update(func(tx store.Tx) error {
			Expect(tx.Put("x", []byte("1"))).To(Succeed())
			return errors.New("no")
		})).To(MatchError("no"))
		expectValue(s, "a", "10")
		expectGone(s, "x")
		powerCut()
		expectValue(s, "a", "1")
	})

	It("keeps an empty value, which is not a deletion", func() {
		volatile(func(tx store.Tx) error { return tx.Put("a", nil) })
		expectValue(s, "a", "")
		keys, _ := scan(s, "a")
		Expect(keys).To(Equal([]string{"a"}))
	})

	It("is nothing in force once its file does not read back whole", func() {
		volatile(func(tx store.Tx) error { return tx.Put("a", []byte("10")) })
		b, err := os.ReadFile(file)
		Expect(err).NotTo(HaveOccurred())
		for _, torn := range [][]byte{b[:len(b)-2], b[:len(b)/2], make([]byte, len(b)), {}} {
			Expect(os.WriteFile(file, torn, 0o600)).To(Succeed())
			expectValue(s, "a", "1")
		}
		volatile(func(tx store.Tx) error { return tx.Put("b", []byte("20")) })
		expectValue(s, "b", "20")
		expectValue(s, "a", "1")
	})

	It("is nothing in force once a durable commit has taken it in, even if its file comes back", func() {
		volatile(func(tx store.Tx) error { return tx.Put("a", []byte("10")) })
		old, err := os.ReadFile(file)
		Expect(err).NotTo(HaveOccurred())
		put(s, "x", "1")
		volatile(func(tx store.Tx) error { return tx.Put("a", []byte("11")) })
		put(s, "y", "1")
		// What a process killed between a durable commit and the
		// removal of the file it took in leaves, at its oldest.
		Expect(os.WriteFile(file, old, 0o600)).To(Succeed())
		expectValue(s, "a", "11")
	})
})
