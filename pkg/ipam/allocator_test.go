package ipam_test

import (
	"fmt"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

const network = "net1"

// A /29: network .0, gateway .1, allocatable .2-.6, broadcast .7.
const small = `{"type":"cnm","subnet":"10.0.0.0/29"}`

func ips(ss ...string) []net.IP {
	out := make([]net.IP, len(ss))
	for i, s := range ss {
		out[i] = net.ParseIP(s)
		Expect(out[i]).NotTo(BeNil(), s)
	}
	return out
}

func addresses(cfgs []*current.IPConfig) []string {
	out := make([]string, len(cfgs))
	for i, c := range cfgs {
		out[i] = c.Address.String()
	}
	return out
}

// harness runs each allocator call in its own committed transaction.
type harness struct {
	s   store.Store
	cfg *ipam.Config
}

func newHarness(ipamJSON string) *harness {
	return &harness{s: openStore(), cfg: mustParse(ipamJSON)}
}

func (h *harness) allocate(owner string, requested ...string) ([]*current.IPConfig, error) {
	var out []*current.IPConfig
	err := h.s.Update(func(tx store.Tx) error {
		var err error
		out, err = ipam.NewAllocator(tx, network, h.cfg).Allocate(owner, ips(requested...))
		return err
	})
	return out, err
}

func (h *harness) mustAllocate(owner string, requested ...string) []string {
	cfgs, err := h.allocate(owner, requested...)
	Expect(err).NotTo(HaveOccurred())
	return addresses(cfgs)
}

func (h *harness) release(owner string, addrs ...string) {
	Expect(h.s.Update(func(tx store.Tx) error {
		return ipam.NewAllocator(tx, network, h.cfg).Release(owner, ips(addrs...))
	})).To(Succeed())
}

func (h *harness) holder(addr string) string {
	var owner string
	Expect(h.s.View(func(tx store.Tx) error {
		var err error
		owner, err = ipam.NewAllocator(tx, network, h.cfg).Holder(net.ParseIP(addr))
		return err
	})).To(Succeed())
	return owner
}

func (h *harness) exhausted() (bool, string) {
	var ex bool
	var which string
	Expect(h.s.View(func(tx store.Tx) error {
		var err error
		ex, which, err = ipam.NewAllocator(tx, network, h.cfg).Exhausted(nil)
		return err
	})).To(Succeed())
	return ex, which
}

// countingTx counts the reads an allocation makes.
type countingTx struct {
	store.Tx
	gets, scans int
}

func (c *countingTx) Get(key string) ([]byte, error) {
	c.gets++
	return c.Tx.Get(key)
}

func (c *countingTx) Scan(prefix string, fn func(string, []byte) error) error {
	c.scans++
	return c.Tx.Scan(prefix, fn)
}

var _ = Describe("Allocator", func() {
	Describe("dynamic allocation", func() {
		It("hands out addresses in order, skipping the gateway", func() {
			h := newHarness(small)
			Expect(h.mustAllocate("a")).To(Equal([]string{"10.0.0.2/29"}))
			Expect(h.mustAllocate("b")).To(Equal([]string{"10.0.0.3/29"}))
			Expect(h.holder("10.0.0.2")).To(Equal("a"))
			Expect(h.holder("10.0.0.3")).To(Equal("b"))
			Expect(h.holder("10.0.0.4")).To(BeEmpty())
		})

		It("returns the subnet's prefix length and the range's gateway", func() {
			h := newHarness(`{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.100","gateway":"10.0.0.254"}`)
			cfgs, err := h.allocate("a")
			Expect(err).NotTo(HaveOccurred())
			Expect(cfgs).To(HaveLen(1))
			Expect(cfgs[0].Address.String()).To(Equal("10.0.0.100/24"))
			Expect(cfgs[0].Address.IP).To(HaveLen(net.IPv4len))
			Expect(cfgs[0].Gateway.String()).To(Equal("10.0.0.254"))
		})

		It("rotates: a just-released address is not handed out again at once", func() {
			h := newHarness(small)
			Expect(h.mustAllocate("a")).To(Equal([]string{"10.0.0.2/29"}))
			h.release("a", "10.0.0.2")
			Expect(h.mustAllocate("b")).To(Equal([]string{"10.0.0.3/29"}))
		})

		It("exhausts a /29, reports it, and wraps around to a freed address", func() {
			h := newHarness(small)
			for i, want := range []string{"10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"} {
				Expect(h.mustAllocate(fmt.Sprint("ep", i))).To(Equal([]string{want}))
			}
			_, err := h.allocate("late")
			Expect(err).To(MatchError(ipam.ErrPoolExhausted))
			Expect(err.Error()).To(ContainSubstring("10.0.0.0/29"))
			ex, which := h.exhausted()
			Expect(ex).To(BeTrue())
			Expect(which).To(Equal("10.0.0.0/29"))

			h.release("ep1", "10.0.0.3")
			ex, _ = h.exhausted()
			Expect(ex).To(BeFalse())
			Expect(h.mustAllocate("late")).To(Equal([]string{"10.0.0.3/29"}))
		})

		It("walks the ranges of a set in order and wraps from the last to the first", func() {
			h := newHarness(`{"ranges":[[
				{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.11"},
				{"subnet":"10.0.1.0/24","rangeStart":"10.0.1.10","rangeEnd":"10.0.1.11"}]]}`)
			var got []string
			for i := range 4 {
				got = append(got, h.mustAllocate(fmt.Sprint("ep", i))...)
			}
			Expect(got).To(Equal([]string{"10.0.0.10/24", "10.0.0.11/24", "10.0.1.10/24", "10.0.1.11/24"}))
			_, err := h.allocate("late")
			Expect(err).To(MatchError(ipam.ErrPoolExhausted))
			Expect(err.Error()).To(ContainSubstring("10.0.0.0/24,10.0.1.0/24"))
			h.release("ep0", "10.0.0.10")
			Expect(h.mustAllocate("late")).To(Equal([]string{"10.0.0.10/24"}))
		})

		It("gives one address per range set in config order for dual stack", func() {
			h := newHarness(`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00:1::/64"}]]}`)
			cfgs, err := h.allocate("a")
			Expect(err).NotTo(HaveOccurred())
			Expect(addresses(cfgs)).To(Equal([]string{"10.0.0.2/24", "fd00:1::2/64"}))
			Expect(cfgs[0].Gateway.String()).To(Equal("10.0.0.1"))
			Expect(cfgs[1].Gateway.String()).To(Equal("fd00:1::1"))
			Expect(cfgs[1].Address.IP).To(HaveLen(net.IPv6len))
			Expect(h.mustAllocate("b")).To(Equal([]string{"10.0.0.3/24", "fd00:1::3/64"}))
		})

		It("allocates nothing for a network without addresses", func() {
			s := openStore()
			Expect(s.Update(func(tx store.Tx) error {
				a := ipam.NewAllocator(tx, network, nil)
				cfgs, err := a.Allocate("a", nil)
				Expect(err).NotTo(HaveOccurred())
				Expect(cfgs).To(BeEmpty())
				_, err = a.Allocate("a", ips("10.0.0.2"))
				Expect(err).To(MatchError(ipam.ErrOutsideRange))
				return nil
			})).To(Succeed())
		})

		It("stays cheap with 60,000 addresses of a /16 in use", func() {
			h := newHarness(`{"subnet":"10.0.0.0/16"}`)
			Expect(h.s.Update(func(tx store.Tx) error {
				a := ipam.NewAllocator(tx, network, h.cfg)
				for i := range 60000 {
					if _, err := a.Allocate(fmt.Sprint("ep", i), nil); err != nil {
						return err
					}
				}
				return nil
			})).To(Succeed())
			// 60,000 after 10.0.0.2 (the gateway is 10.0.0.1) is 10.0.234.98.
			Expect(h.holder("10.0.234.97")).To(Equal("ep59999"))

			var counter *countingTx
			var cfgs []*current.IPConfig
			Expect(h.s.Update(func(tx store.Tx) error {
				counter = &countingTx{Tx: tx}
				var err error
				cfgs, err = ipam.NewAllocator(counter, network, h.cfg).Allocate("one-more", nil)
				return err
			})).To(Succeed())
			Expect(addresses(cfgs)).To(Equal([]string{"10.0.234.98/16"}))
			Expect(counter.scans).To(BeZero())
			Expect(counter.gets).To(BeNumerically("<=", 2), "the cursor and the candidate address")
		})
	})

	Describe("static requests", func() {
		It("reserves the requested address exactly without moving the cursor", func() {
			h := newHarness(small)
			Expect(h.mustAllocate("a", "10.0.0.5")).To(Equal([]string{"10.0.0.5/29"}))
			Expect(h.holder("10.0.0.5")).To(Equal("a"))
			Expect(h.mustAllocate("b")).To(Equal([]string{"10.0.0.2/29"}))
		})

		It("skips a statically held address when allocating dynamically", func() {
			h := newHarness(small)
			Expect(h.mustAllocate("a", "10.0.0.2")).To(Equal([]string{"10.0.0.2/29"}))
			Expect(h.mustAllocate("b")).To(Equal([]string{"10.0.0.3/29"}))
		})

		It("is idempotent for the owner that holds the address", func() {
			h := newHarness(small)
			Expect(h.mustAllocate("a", "10.0.0.5")).To(Equal([]string{"10.0.0.5/29"}))
			Expect(h.mustAllocate("a", "10.0.0.5")).To(Equal([]string{"10.0.0.5/29"}))
		})

		It("accepts an IPv4 address in its 16-byte form", func() {
			h := newHarness(small)
			cfgs, err := h.allocate("a", "::ffff:10.0.0.4")
			Expect(err).NotTo(HaveOccurred())
			Expect(addresses(cfgs)).To(Equal([]string{"10.0.0.4/29"}))
		})

		It("honours a request in one set and allocates in the other", func() {
			h := newHarness(`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00:1::/64"}]]}`)
			Expect(h.mustAllocate("a", "fd00:1::abcd")).To(Equal([]string{"10.0.0.2/24", "fd00:1::abcd/64"}))
		})

		DescribeTable("rejections",
			func(requested []string, sentinel error, message string) {
				h := newHarness(`{"ranges":[
					[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.200"}],
					[{"subnet":"fd00:1::/64"}]]}`)
				h.mustAllocate("other", "10.0.0.50")
				_, err := h.allocate("me", requested...)
				Expect(err).To(MatchError(sentinel))
				Expect(err.Error()).To(ContainSubstring(message))
			},
			Entry("in use by another owner", []string{"10.0.0.50"}, ipam.ErrAddressInUse, "10.0.0.50 is held by other"),
			Entry("the gateway", []string{"10.0.0.1"}, ipam.ErrAddressReserved, "10.0.0.1 is the gateway of 10.0.0.0/24"),
			Entry("the network address", []string{"10.0.0.0"}, ipam.ErrAddressReserved, "10.0.0.0 is the network address of 10.0.0.0/24"),
			Entry("the broadcast address", []string{"10.0.0.255"}, ipam.ErrAddressReserved, "10.0.0.255 is the broadcast address of 10.0.0.0/24"),
			Entry("the IPv6 gateway", []string{"fd00:1::1"}, ipam.ErrAddressReserved, "fd00:1::1 is the gateway of fd00:1::/64"),
			Entry("outside every subnet", []string{"192.168.1.1"}, ipam.ErrOutsideRange, "192.168.1.1 is in no subnet of network net1"),
			Entry("below rangeStart", []string{"10.0.0.9"}, ipam.ErrOutsideRange, "10.0.0.9 is outside the allocation range 10.0.0.10-10.0.0.200"),
			Entry("above rangeEnd", []string{"10.0.0.201"}, ipam.ErrOutsideRange, "10.0.0.201 is outside the allocation range"),
			Entry("two addresses in one set", []string{"10.0.0.11", "10.0.0.12"}, ipam.ErrRequestConflict, "10.0.0.11 and 10.0.0.12 both fall in range set 10.0.0.0/24"),
		)

		It("leaves nothing reserved when a later set fails", func() {
			h := newHarness(`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00:1::/64"}]]}`)
			Expect(h.mustAllocate("other", "fd00:1::9")).To(Equal([]string{"10.0.0.2/24", "fd00:1::9/64"}))
			Expect(h.s.Update(func(tx store.Tx) error {
				a := ipam.NewAllocator(tx, network, h.cfg)
				_, err := a.Allocate("me", ips("fd00:1::9"))
				Expect(err).To(MatchError(ipam.ErrAddressInUse))
				// The caller may still commit: the IPv4 address it took
				// on the way must be free again.
				Expect(a.Holder(net.ParseIP("10.0.0.3"))).To(BeEmpty())
				return nil
			})).To(Succeed())
			Expect(h.holder("10.0.0.3")).To(BeEmpty())
		})
	})

	Describe("release", func() {
		It("frees only the owner's addresses", func() {
			h := newHarness(small)
			h.mustAllocate("a")                       // .2
			h.mustAllocate("b")                       // .3
			h.release("b", "10.0.0.2")                // not b's
			h.release("a", "10.0.0.2", "10.0.0.6")    // .6 is free: no error
			h.release("a", "10.0.0.3", "192.168.9.9") // b's, and unknown
			Expect(h.holder("10.0.0.2")).To(BeEmpty())
			Expect(h.holder("10.0.0.3")).To(Equal("b"))
		})

		It("releases every reservation of one network only", func() {
			s := openStore()
			cfg := mustParse(small)
			Expect(s.Update(func(tx store.Tx) error {
				for _, n := range []string{"n", "n2"} {
					if _, err := ipam.NewAllocator(tx, n, cfg).Allocate("a", nil); err != nil {
						return err
					}
				}
				return ipam.ReleaseAll(tx, "n")
			})).To(Succeed())
			var keys []string
			Expect(s.View(func(tx store.Tx) error {
				return tx.Scan("ipam/", func(k string, _ []byte) error {
					keys = append(keys, k)
					return nil
				})
			})).To(Succeed())
			Expect(keys).To(ConsistOf("ipam/n2/addr/10.0.0.2", "ipam/n2/cursor/10.0.0.0/29"))
		})
	})

	It("stores addresses and cursors under the documented keys", func() {
		h := newHarness(`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"FD00:1::/64"}]]}`)
		h.mustAllocate("ep-a")
		h.mustAllocate("ep-b", "fd00:1::00ff")
		kv := map[string]string{}
		Expect(h.s.View(func(tx store.Tx) error {
			return tx.Scan("ipam/", func(k string, v []byte) error {
				kv[k] = string(v)
				return nil
			})
		})).To(Succeed())
		Expect(kv).To(Equal(map[string]string{
			"ipam/net1/addr/10.0.0.2":      "ep-a",
			"ipam/net1/addr/fd00:1::2":     "ep-a",
			"ipam/net1/addr/10.0.0.3":      "ep-b",
			"ipam/net1/addr/fd00:1::ff":    "ep-b",
			"ipam/net1/cursor/10.0.0.0/24": "10.0.0.3",
			"ipam/net1/cursor/fd00:1::/64": "fd00:1::2",
		}))
	})

	It("rejects a network name that could collide with another's keys", func() {
		s := openStore()
		Expect(s.Update(func(tx store.Tx) error {
			_, err := ipam.NewAllocator(tx, "a/addr", mustParse(small)).Allocate("x", nil)
			Expect(err).To(MatchError(ContainSubstring("invalid network name")))
			Expect(ipam.ReleaseAll(tx, "")).NotTo(Succeed())
			return nil
		})).To(Succeed())
	})

	It("refuses to allocate for a delegated config", func() {
		s := openStore()
		Expect(s.Update(func(tx store.Tx) error {
			_, err := ipam.NewAllocator(tx, network, &ipam.Config{Type: "host-local"}).Allocate("x", nil)
			Expect(err).To(MatchError(ContainSubstring(`ipam type "host-local" is not the built-in allocator`)))
			return nil
		})).To(Succeed())
	})

	It("rejects an empty owner", func() {
		h := newHarness(small)
		_, err := h.allocate("")
		Expect(err).To(MatchError(ContainSubstring("empty ipam owner")))
	})

	It("works from a hand-made, uncanonicalised config", func() {
		s := openStore()
		cfg := &ipam.Config{Type: ipam.BuiltinType, Subnet: "10.3.0.0/24", RangeStart: "10.3.0.7"}
		Expect(s.Update(func(tx store.Tx) error {
			cfgs, err := ipam.NewAllocator(tx, network, cfg).Allocate("x", nil)
			Expect(strings.Join(addresses(cfgs), ",")).To(Equal("10.3.0.7/24"))
			return err
		})).To(Succeed())
	})
})
