package ipam

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnmnet/cnmnet/pkg/store"
)

var (
	// ErrAddressInUse: the address is held by another owner.
	ErrAddressInUse = errors.New("address in use")
	// ErrAddressReserved: a network, broadcast or gateway address.
	ErrAddressReserved = errors.New("address reserved")
	// ErrOutsideRange: the address is in no range set, or outside the
	// allocation range (rangeStart..rangeEnd) of its set.
	ErrOutsideRange = errors.New("address outside range")
	// ErrPoolExhausted: a range set has no free address.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrRequestConflict: two requested addresses fall in one range set.
	ErrRequestConflict = errors.New("conflicting address requests")
)

const keyRoot = "ipam/"

// Allocator is the built-in IPAM of one network, working inside one store
// transaction. It is cheap to make; make one per transaction.
type Allocator struct {
	tx      store.Tx
	network string
	sets    []poolSet
	nameErr error // bad network name: every method fails
	cfgErr  error // bad config: Allocate and Exhausted fail
}

// NewAllocator returns the allocator of network over tx. A nil cfg means
// the network has no addresses. Problems with network or cfg are reported
// by the methods that need them.
func NewAllocator(tx store.Tx, network string, cfg *Config) *Allocator {
	a := &Allocator{tx: tx, network: network}
	if a.nameErr = checkNetworkName(network); a.nameErr != nil {
		return a
	}
	switch {
	case cfg == nil:
	case cfg.Delegated():
		a.cfgErr = fmt.Errorf("network %s: ipam type %q is not the built-in allocator", network, cfg.Type)
	default:
		a.sets, a.cfgErr = compileSets(cfg.rangeSpecs())
		if a.cfgErr != nil {
			a.cfgErr = fmt.Errorf("network %s: %w", network, a.cfgErr)
		}
	}
	return a
}

// checkNetworkName keeps one network's keys from being a prefix of
// another's.
func checkNetworkName(network string) error {
	if network == "" || strings.Contains(network, "/") {
		return fmt.Errorf("ipam: invalid network name %q", network)
	}
	return nil
}

func networkPrefix(network string) string { return keyRoot + network + "/" }

func (a *Allocator) addrKey(ip netip.Addr) string {
	return networkPrefix(a.network) + "addr/" + ip.String()
}

// cursorKey is named after the set's first subnet, which stays put when
// ranges are appended to the set.
func (a *Allocator) cursorKey(s *poolSet) string {
	return networkPrefix(a.network) + "cursor/" + s.pools[0].subnet.String()
}

// Allocate reserves one address in each range set for owner, in the
// caller's transaction, and returns them in config order. A requested
// address is reserved exactly (or the call fails) and its set takes no
// other address; an address owner already holds may be requested again.
// On error nothing new stays reserved.
func (a *Allocator) Allocate(owner string, requested []net.IP) ([]*current.IPConfig, error) {
	if err := a.usable(owner); err != nil {
		return nil, err
	}
	if a.cfgErr != nil {
		return nil, a.cfgErr
	}
	wanted, err := a.assignRequested(requested)
	if err != nil {
		return nil, err
	}
	var taken []netip.Addr // new reservations, undone on failure
	out := make([]*current.IPConfig, len(a.sets))
	for i := range a.sets {
		s := &a.sets[i]
		ip, isNew, err := a.reserveIn(s, wanted[i], owner)
		if err != nil {
			return nil, a.undo(taken, err)
		}
		if isNew {
			taken = append(taken, ip)
		}
		out[i] = ipConfig(s.poolOf(ip), ip)
	}
	return out, nil
}

func (a *Allocator) usable(owner string) error {
	if a.nameErr != nil {
		return a.nameErr
	}
	if owner == "" {
		return fmt.Errorf("network %s: empty ipam owner", a.network)
	}
	return nil
}

// reserveIn reserves want in s, or the next free address when want is
// the zero Addr. isNew is false when owner already held want.
func (a *Allocator) reserveIn(s *poolSet, want netip.Addr, owner string) (ip netip.Addr, isNew bool, err error) {
	if want.IsValid() {
		isNew, err = a.reserveExact(want, owner)
		return want, isNew, err
	}
	ip, err = a.reserveNext(s, owner)
	return ip, err == nil, err
}

func (a *Allocator) undo(taken []netip.Addr, cause error) error {
	for _, ip := range taken {
		if err := a.tx.Delete(a.addrKey(ip)); err != nil {
			return fmt.Errorf("%w (and undoing reservation of %s: %v)", cause, ip, err)
		}
	}
	return cause
}

// assignRequested maps the requested addresses to range sets (zero Addr
// for none) and rejects those that can never be reserved.
func (a *Allocator) assignRequested(requested []net.IP) ([]netip.Addr, error) {
	wanted := make([]netip.Addr, len(a.sets))
	for _, raw := range requested {
		ip, ok := toAddr(raw)
		if !ok {
			return nil, fmt.Errorf("%w: requested address %q is not an IP address", ErrOutsideRange, raw)
		}
		i := a.setOf(ip)
		if i < 0 {
			return nil, fmt.Errorf("%w: requested address %s is in no subnet of network %s", ErrOutsideRange, ip, a.network)
		}
		s := &a.sets[i]
		if prev := wanted[i]; prev.IsValid() && prev != ip {
			return nil, fmt.Errorf("%w: %s and %s both fall in range set %s", ErrRequestConflict, prev, ip, s.name())
		}
		if err := s.checkRequestable(ip); err != nil {
			return nil, err
		}
		wanted[i] = ip
	}
	return wanted, nil
}

func (a *Allocator) setOf(ip netip.Addr) int {
	for i := range a.sets {
		for _, p := range a.sets[i].pools {
			if p.subnet.Contains(ip) {
				return i
			}
		}
	}
	return -1
}

func (a *Allocator) reserveExact(ip netip.Addr, owner string) (isNew bool, err error) {
	held, err := a.holder(ip)
	switch {
	case err != nil:
		return false, err
	case held == owner:
		return false, nil
	case held != "":
		return false, fmt.Errorf("%w: %s is held by %s", ErrAddressInUse, ip, held)
	}
	if err := a.tx.Put(a.addrKey(ip), []byte(owner)); err != nil {
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	return true, nil
}

func (a *Allocator) reserveNext(s *poolSet, owner string) (netip.Addr, error) {
	cur, err := a.cursor(s)
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := a.findFree(s, cur, nil)
	if err != nil {
		return ip, err
	}
	if err := a.tx.Put(a.addrKey(ip), []byte(owner)); err != nil {
		return ip, fmt.Errorf("reserve %s: %w", ip, err)
	}
	if err := a.tx.Put(a.cursorKey(s), []byte(ip.String())); err != nil {
		return ip, fmt.Errorf("save allocation cursor of %s: %w", s.name(), err)
	}
	return ip, nil
}

// cursor returns the last address handed out in s, or the zero Addr. An
// unreadable cursor is only a lost hint, so it is ignored.
func (a *Allocator) cursor(s *poolSet) (netip.Addr, error) {
	v, err := a.tx.Get(a.cursorKey(s))
	if errors.Is(err, store.ErrNotFound) {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read allocation cursor of %s: %w", s.name(), err)
	}
	ip, err := netip.ParseAddr(string(v))
	if err != nil {
		return netip.Addr{}, nil
	}
	return ip, nil
}

// findFree walks s once, starting after cursor and wrapping around, and
// returns the first address that is neither reserved nor held (or held
// by an owner reclaimable says could be freed). Addresses handed out in
// order lie behind the cursor, so the walk is short.
func (a *Allocator) findFree(s *poolSet, cursor netip.Addr, reclaimable func(owner string) bool) (netip.Addr, error) {
	startPool, startIP := s.after(cursor)
	i, ip := startPool, startIP
	for {
		if !isReserved(s.reserved, ip) {
			held, err := a.holder(ip)
			if err != nil {
				return netip.Addr{}, err
			}
			if held == "" || reclaimable != nil && reclaimable(held) {
				return ip, nil
			}
		}
		i, ip = s.next(i, ip)
		if i == startPool && ip == startIP {
			return netip.Addr{}, fmt.Errorf("%w: no free address in %s of network %s", ErrPoolExhausted, s.name(), a.network)
		}
	}
}

// Release frees those of addrs that owner holds; addresses that are free
// or held by someone else are left alone.
func (a *Allocator) Release(owner string, addrs []net.IP) error {
	if err := a.usable(owner); err != nil {
		return err
	}
	for _, raw := range addrs {
		ip, ok := toAddr(raw)
		if !ok {
			return fmt.Errorf("release: %q is not an IP address", raw)
		}
		held, err := a.holder(ip)
		if err != nil {
			return err
		}
		if held != owner {
			continue
		}
		if err := a.tx.Delete(a.addrKey(ip)); err != nil {
			return fmt.Errorf("release %s: %w", ip, err)
		}
	}
	return nil
}

// Holder returns the owner holding ip, or "" when it is free.
func (a *Allocator) Holder(ip net.IP) (string, error) {
	if a.nameErr != nil {
		return "", a.nameErr
	}
	addr, ok := toAddr(ip)
	if !ok {
		return "", fmt.Errorf("holder: %q is not an IP address", ip)
	}
	return a.holder(addr)
}

func (a *Allocator) holder(ip netip.Addr) (string, error) {
	v, err := a.tx.Get(a.addrKey(ip))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up holder of %s: %w", ip, err)
	}
	return string(v), nil
}

// Exhausted reports the first range set that has no free address, named
// by its subnet(s), for CNI STATUS. Addresses of owners reclaimable says
// an ADD would free first (nil: none) count as free.
func (a *Allocator) Exhausted(reclaimable func(owner string) bool) (exhausted bool, which string, err error) {
	if a.nameErr != nil {
		return false, "", a.nameErr
	}
	if a.cfgErr != nil {
		return false, "", a.cfgErr
	}
	for i := range a.sets {
		s := &a.sets[i]
		cur, err := a.cursor(s)
		if err != nil {
			return false, "", err
		}
		_, err = a.findFree(s, cur, reclaimable)
		switch {
		case errors.Is(err, ErrPoolExhausted):
			return true, s.name(), nil
		case err != nil:
			return false, "", err
		}
	}
	return false, "", nil
}

// ReleaseAll removes every reservation and cursor of network, for
// network deletion.
func ReleaseAll(tx store.Tx, network string) error {
	if err := checkNetworkName(network); err != nil {
		return err
	}
	return deleteWhere(tx, networkPrefix(network), func(string) bool { return true })
}

// toAddr converts ip, unmapping IPv4 in its 16-byte form as net.ParseIP
// returns it.
func toAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func ipConfig(p *pool, ip netip.Addr) *current.IPConfig {
	return &current.IPConfig{
		Address: net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(p.subnet.Bits(), ip.BitLen())},
		Gateway: net.IP(p.gateway.AsSlice()),
	}
}

// name identifies s in messages and STATUS: its subnets.
func (s *poolSet) name() string {
	names := make([]string, 0, len(s.pools))
	for _, p := range s.pools {
		if n := p.subnet.String(); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

// checkRequestable rejects an address of the set's subnets that no one
// may ever hold here.
func (s *poolSet) checkRequestable(ip netip.Addr) error {
	if why := reservedWhy(s.reserved, ip); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrAddressReserved, ip, why)
	}
	if s.poolOf(ip) == nil {
		return fmt.Errorf("%w: %s is outside the allocation range %s", ErrOutsideRange, ip, s.bounds())
	}
	return nil
}

func (s *poolSet) bounds() string {
	parts := make([]string, len(s.pools))
	for i, p := range s.pools {
		parts[i] = p.start.String() + "-" + p.end.String()
	}
	return strings.Join(parts, ",")
}

// poolOf returns the range whose rangeStart..rangeEnd holds ip, or nil.
func (s *poolSet) poolOf(ip netip.Addr) *pool {
	for i := range s.pools {
		if s.pools[i].contains(ip) {
			return &s.pools[i]
		}
	}
	return nil
}

// after is the position following cursor; the start of the set when the
// cursor is absent or no longer in it (the config changed).
func (s *poolSet) after(cursor netip.Addr) (int, netip.Addr) {
	for i := range s.pools {
		if s.pools[i].contains(cursor) {
			return s.next(i, cursor)
		}
	}
	return 0, s.pools[0].start
}

// next steps from ip in pool i, on to the next pool after a pool's end
// and back to the first after the last.
func (s *poolSet) next(i int, ip netip.Addr) (int, netip.Addr) {
	if ip == s.pools[i].end {
		i = (i + 1) % len(s.pools)
		return i, s.pools[i].start
	}
	return i, ip.Next()
}

// ReleaseOrphans frees the reservations of network whose owner live
// does not recognise: what a process killed between two writes, or a
// record lost by hand, leaves behind.
func ReleaseOrphans(tx store.Tx, network string, live func(owner string) bool) error {
	if err := checkNetworkName(network); err != nil {
		return err
	}
	return deleteWhere(tx, networkPrefix(network)+"addr/", func(owner string) bool { return !live(owner) })
}

// deleteWhere deletes the keys under prefix whose value doomed picks.
func deleteWhere(tx store.Tx, prefix string, doomed func(value string) bool) error {
	var keys []string
	err := tx.Scan(prefix, func(k string, v []byte) error {
		if doomed(string(v)) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return fmt.Errorf("release %s: %w", k, err)
		}
	}
	return nil
}

// Cursors returns where dynamic allocation resumes in each range set of
// network, so that a caller undoing an allocation can put them back.
func Cursors(tx store.Tx, network string) (map[string]string, error) {
	if err := checkNetworkName(network); err != nil {
		return nil, err
	}
	cursors := map[string]string{}
	err := tx.Scan(networkPrefix(network)+"cursor/", func(k string, v []byte) error {
		cursors[k] = string(v)
		return nil
	})
	return cursors, err
}

// RestoreCursors puts back the cursors Cursors returned: a failed ADD
// leaves the pool exactly as it found it.
func RestoreCursors(tx store.Tx, network string, saved map[string]string) error {
	current, err := Cursors(tx, network)
	if err != nil {
		return err
	}
	for k := range current {
		if _, ok := saved[k]; !ok {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
	}
	for k, v := range saved {
		if err := tx.Put(k, []byte(v)); err != nil {
			return err
		}
	}
	return nil
}
