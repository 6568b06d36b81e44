package ipam_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var errRollback = errors.New("rollback")

// FuzzIPAMConfig feeds arbitrary bytes as a network configuration to
// ParseConfig and, when it is accepted, allocates one address per range
// set from an empty store.
func FuzzIPAMConfig(f *testing.F) {
	for _, s := range []string{
		`{"type":"cnm","subnet":"10.0.0.0/24"}`,
		`{"type":"cnm","subnet":"10.0.0.77/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.20","gateway":"10.0.0.254"}`,
		`{"subnet":"192.168.7.0/30"}`,
		`{"type":"cnm","ranges":[[{"subnet":"10.1.0.0/16","rangeEnd":"10.1.0.100"},{"subnet":"10.1.0.0/16","rangeStart":"10.1.1.0"}]]}`,
		`{"type":"cnm","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00:0:0:1::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00:0:0:1::1"}]}`,
		`{"type":"cnm","ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}`,
		`{"type":"cnm","ranges":[[{"subnet":"fd00::/127"}]]}`,
		`{"type":"cnm","subnet":"0.0.0.0/0"}`,
		`{"type":"cnm","subnet":"10.1.2.3/32"}`,
		`{"type":"cnm","subnet":"10.1.2.0/31"}`,
		`{"type":"cnm","subnet":"10.1.2.0/24","rangeStart":"10.1.2.200","rangeEnd":"10.1.2.100"}`,
		`{"type":"cnm","subnet":"10.1.2.0/24","gateway":"10.1.2.255"}`,
		`{"type":"cnm","subnet":"10.1.2.0/30","rangeStart":"10.1.2.1","rangeEnd":"10.1.2.1"}`,
		`{"type":"cnm","ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}`,
		`{"type":"cnm","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}`,
		`{"type":"cnm","ranges":[[]]}`,
		`{"type":"cnm","ranges":[[null]]}`,
		`{"type":"cnm","rangeStart":"10.0.0.5"}`,
		`{"type":"cnm","ranges":[[{"subnet":42}]]}`,
		`{"type":"host-local","subnet":"10.0.0.0/24"}`,
		`{"type":"cnm","subnet":"10.0.0.0/24","routes":[{"dst":"10.9.0.0/16","gw":"fd00::1"}]}`,
		// Each range's only address is the other's gateway.
		`{"type":"cnm","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.5","rangeEnd":"10.0.0.5","gateway":"10.0.0.6"},` +
			`{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.6","rangeEnd":"10.0.0.6","gateway":"10.0.0.5"}]]}`,
		`[]`,
		`null`,
	} {
		f.Add([]byte(`{"cniVersion":"1.1.0","name":"net1","type":"bridge","ipam":` + s + `}`))
	}
	f.Add([]byte(`{"name":"net1"}`))
	f.Add([]byte(`{"ipam":`))

	st, err := store.Open(f.TempDir(), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })

	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg, err := ipam.ParseConfig(raw)
		if err != nil {
			var ce *ipam.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ipam.ErrInvalidConfig) || ce.Msg == "" {
				t.Fatalf("error %T %q is not a *ConfigError", err, err)
			}
			return
		}
		if cfg == nil || cfg.Delegated() {
			return
		}
		checkCanonical(t, cfg)

		// The canonical form reads back as itself.
		again, err := ipam.ParseConfig(mustJSON(t, map[string]any{"ipam": map[string]any{"type": cfg.Type, "ranges": cfg.Ranges}}))
		if err != nil {
			t.Fatalf("canonical ranges %+v refused: %v", cfg.Ranges, err)
		}
		if !reflect.DeepEqual(again.Ranges, cfg.Ranges) {
			t.Fatalf("canonical ranges %+v read back as %+v", cfg.Ranges, again.Ranges)
		}

		err = st.Update(func(tx store.Tx) error {
			got, err := ipam.NewAllocator(tx, "net1", cfg).Allocate("owner", nil)
			if err != nil {
				if errors.Is(err, ipam.ErrPoolExhausted) && !anyFree(cfg) {
					// Accepted, yet nothing to hand out: see the report
					// of the fuzz targets.
					return errRollback
				}
				t.Errorf("allocating from an empty store, ranges %+v: %v", cfg.Ranges, err)
				return errRollback
			}
			if len(got) != len(cfg.Ranges) {
				t.Errorf("%d addresses for %d range sets", len(got), len(cfg.Ranges))
				return errRollback
			}
			for i, ipc := range got {
				ip, ok := netip.AddrFromSlice(ipc.Address.IP)
				if !ok {
					t.Errorf("allocated %v", ipc.Address.IP)
					continue
				}
				ip = ip.Unmap()
				r := rangeOf(cfg.Ranges[i], ip)
				if r == nil {
					t.Errorf("set %d: %s is in none of its ranges %+v", i, ip, cfg.Ranges[i])
					continue
				}
				if reserved(cfg.Ranges[i])[ip] {
					t.Errorf("set %d: allocated the reserved address %s", i, ip)
				}
				if ones, _ := ipc.Address.Mask.Size(); ones != netip.MustParsePrefix(r.Subnet).Bits() {
					t.Errorf("set %d: %s with mask /%d in %s", i, ip, ones, r.Subnet)
				}
				if ipc.Gateway.String() != r.Gateway {
					t.Errorf("set %d: gateway %s, range says %s", i, ipc.Gateway, r.Gateway)
				}
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("transaction: %v", err)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkCanonical checks what ParseConfig promises of an accepted config.
func checkCanonical(t *testing.T, cfg *ipam.Config) {
	t.Helper()
	if cfg.Subnet != "" || cfg.RangeStart != "" || cfg.RangeEnd != "" || cfg.Gateway != "" {
		t.Fatalf("shorthand left in %+v", cfg)
	}
	if len(cfg.Ranges) == 0 {
		t.Fatalf("accepted without ranges")
	}
	for i, set := range cfg.Ranges {
		if len(set) == 0 {
			t.Fatalf("set %d is empty", i)
		}
		for j, r := range set {
			p, err := netip.ParsePrefix(r.Subnet)
			if err != nil || p != p.Masked() || p.Addr().Is4In6() || p.Bits() == 0 || p.Addr().BitLen()-p.Bits() < 2 {
				t.Fatalf("ranges[%d][%d]: subnet %q", i, j, r.Subnet)
			}
			if p.Addr().Is4() != netip.MustParsePrefix(set[0].Subnet).Addr().Is4() {
				t.Fatalf("ranges[%d]: mixed families", i)
			}
			start, err1 := netip.ParseAddr(r.RangeStart)
			end, err2 := netip.ParseAddr(r.RangeEnd)
			gw, err3 := netip.ParseAddr(r.Gateway)
			if err := errors.Join(err1, err2, err3); err != nil {
				t.Fatalf("ranges[%d][%d]: %v", i, j, err)
			}
			if !p.Contains(start) || !p.Contains(end) || !p.Contains(gw) {
				t.Fatalf("ranges[%d][%d]: %s-%s gateway %s outside %s", i, j, start, end, gw, p)
			}
			if end.Less(start) {
				t.Fatalf("ranges[%d][%d]: start %s after end %s", i, j, start, end)
			}
			if gw == p.Addr() || (p.Addr().Is4() && gw == last(p)) {
				t.Fatalf("ranges[%d][%d]: gateway %s is the network or broadcast address", i, j, gw)
			}
		}
	}
}

// last is the highest address of p.
func last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// reserved lists the addresses of a range set no endpoint may get.
func reserved(set ipam.RangeSet) map[netip.Addr]bool {
	rs := map[netip.Addr]bool{}
	for _, r := range set {
		p := netip.MustParsePrefix(r.Subnet)
		rs[p.Addr()] = true
		if p.Addr().Is4() {
			rs[last(p)] = true
		}
		rs[netip.MustParseAddr(r.Gateway)] = true
	}
	return rs
}

func rangeOf(set ipam.RangeSet, ip netip.Addr) *ipam.Range {
	for i, r := range set {
		if netip.MustParseAddr(r.RangeStart).Compare(ip) <= 0 && ip.Compare(netip.MustParseAddr(r.RangeEnd)) <= 0 {
			return &set[i]
		}
	}
	return nil
}

// anyFree reports whether every range set has an address that is not
// reserved: only as many addresses as there are reservations are looked at.
func anyFree(cfg *ipam.Config) bool {
	for _, set := range cfg.Ranges {
		rs := reserved(set)
		free := false
		for _, r := range set {
			a, end := netip.MustParseAddr(r.RangeStart), netip.MustParseAddr(r.RangeEnd)
			for range len(rs) + 1 {
				if !rs[a] {
					free = true
					break
				}
				if a == end {
					break
				}
				a = a.Next()
			}
		}
		if !free {
			return false
		}
	}
	return true
}
