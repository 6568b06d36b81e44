package ipam_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// benchAllocate measures one allocation and its release, each in its own
// committed transaction, with inUse addresses of a /16 reserved beforehand
// (in one transaction). The per-op cost should not depend on inUse.
func benchAllocate(b *testing.B, inUse int) {
	s, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cfg, err := ipam.ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"bench","ipam":{"type":"cnm","subnet":"10.0.0.0/16"}}`))
	if err != nil {
		b.Fatal(err)
	}
	err = s.Update(func(tx store.Tx) error {
		a := ipam.NewAllocator(tx, "bench", cfg)
		for i := range inUse {
			if _, err := a.Allocate(fmt.Sprint("fill", i), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	gets := 0
	for b.Loop() {
		var ip net.IP
		err := s.Update(func(tx store.Tx) error {
			counter := &countingTx{Tx: tx}
			defer func() { gets += counter.gets }()
			got, err := ipam.NewAllocator(counter, "bench", cfg).Allocate("bench-ep", nil)
			if err == nil {
				ip = got[0].Address.IP
			}
			return err
		})
		if err == nil {
			err = s.Update(func(tx store.Tx) error {
				return ipam.NewAllocator(tx, "bench", cfg).Release("bench-ep", []net.IP{ip})
			})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	// Store reads per allocation: the machine-independent sign of flat cost.
	b.ReportMetric(float64(gets)/float64(b.N), "gets/alloc")
}

func BenchmarkAllocateEmpty(b *testing.B) { benchAllocate(b, 0) }

func BenchmarkAllocate60k(b *testing.B) { benchAllocate(b, 60000) }
