package ipam

import (
	"math/big"
	"net/netip"
	"strings"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// Capacity is the number of addresses the built-in allocator can hand
// out from all range sets, the reserved ones (network, broadcast,
// gateway) left out.
func (c *Config) Capacity() *big.Int {
	total := new(big.Int)
	for _, n := range c.SetCapacities() {
		total.Add(total, n)
	}
	return total
}

// FamilyCapacity is Capacity by address family ("IPv4", "IPv6"): the two
// added together mean nothing.
func (c *Config) FamilyCapacity() map[string]*big.Int {
	out := map[string]*big.Int{}
	if c == nil || c.Delegated() {
		return out
	}
	sets, err := compileSets(c.rangeSpecs())
	if err != nil {
		return out
	}
	caps := c.SetCapacities()
	for i, s := range sets {
		fam := family(s.pools[0].subnet.Addr())
		if out[fam] == nil {
			out[fam] = new(big.Int)
		}
		out[fam].Add(out[fam], caps[i])
	}
	return out
}

// Family is "IPv4" or "IPv6" for an address, "" for one that does not
// parse.
func Family(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	return family(a.Unmap())
}

// SetCapacities is Capacity for each range set; none for a delegated
// or absent configuration.
func (c *Config) SetCapacities() []*big.Int {
	if c == nil || c.Delegated() {
		return nil
	}
	sets, err := compileSets(c.rangeSpecs())
	if err != nil {
		return nil
	}
	out := make([]*big.Int, len(sets))
	for i, s := range sets {
		total := new(big.Int)
		for _, p := range s.pools {
			n := new(big.Int).Sub(addrInt(p.end), addrInt(p.start))
			total.Add(total, n.Add(n, big.NewInt(1)))
		}
		for _, r := range s.reserved {
			if inAnyPool(s.pools, r.addr) {
				total.Sub(total, big.NewInt(1))
			}
		}
		out[i] = total
	}
	return out
}

func addrInt(a netip.Addr) *big.Int {
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}

func inAnyPool(pools []pool, a netip.Addr) bool {
	for _, p := range pools {
		if p.start.Compare(a) <= 0 && a.Compare(p.end) <= 0 {
			return true
		}
	}
	return false
}

// Holders maps each reserved address of network to its owner.
func Holders(tx store.Tx, network string) (map[string]string, error) {
	if err := checkNetworkName(network); err != nil {
		return nil, err
	}
	prefix := networkPrefix(network) + "addr/"
	held := map[string]string{}
	err := tx.Scan(prefix, func(k string, v []byte) error {
		held[strings.TrimPrefix(k, prefix)] = string(v)
		return nil
	})
	return held, err
}

// InUse counts the reserved addresses of network.
func InUse(tx store.Tx, network string) (int, error) {
	held, err := Holders(tx, network)
	return len(held), err
}
