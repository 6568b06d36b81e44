package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
)

// BuiltinType is the ipam.type of the built-in allocator. An empty type
// means the same.
const BuiltinType = "cnm"

// ErrInvalidConfig is matched (errors.Is) by every *ConfigError.
var ErrInvalidConfig = errors.New("invalid ipam config")

// ConfigError is a problem with one field of the network config.
type ConfigError struct {
	// Field is the JSON path of the field, e.g. "ipam.ranges[0][1].rangeStart";
	// empty when the config as a whole is unreadable.
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Is makes errors.Is(err, ErrInvalidConfig) hold.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Config is the ipam section of a network config, in host-local syntax.
// After ParseConfig the shorthand fields are empty and every Range is
// complete and canonical.
type Config struct {
	Type   string     `json:"type"`
	Ranges []RangeSet `json:"ranges,omitempty"`
	// Shorthand for a single range set of one range, placed before Ranges.
	Subnet     string         `json:"subnet,omitempty"`
	RangeStart string         `json:"rangeStart,omitempty"`
	RangeEnd   string         `json:"rangeEnd,omitempty"`
	Gateway    string         `json:"gateway,omitempty"`
	Routes     []*types.Route `json:"routes,omitempty"`
	// RemoteConf is the section of a remote type (see RemoteType).
	RemoteConf *RemoteConfig `json:"-"`
}

// RangeSet is a list of ranges of one IP family; an endpoint gets one
// address from each range set.
type RangeSet []Range

// Range is a subnet and the part of it addresses are handed out from.
type Range struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"` // first address, inclusive
	RangeEnd   string `json:"rangeEnd,omitempty"`   // last address, inclusive
	Gateway    string `json:"gateway,omitempty"`
}

// Delegated reports whether addresses come from another IPAM plugin: a
// CNI IPAM plugin, or a remote one (Remote).
func (c *Config) Delegated() bool {
	return c != nil && c.Type != "" && c.Type != BuiltinType
}

// rawIPAM holds the ipam section's fields undecoded, so that each one can
// be decoded on its own and a type error can name its path.
type rawIPAM struct {
	Type       json.RawMessage `json:"type"`
	Ranges     json.RawMessage `json:"ranges"`
	Subnet     json.RawMessage `json:"subnet"`
	RangeStart json.RawMessage `json:"rangeStart"`
	RangeEnd   json.RawMessage `json:"rangeEnd"`
	Gateway    json.RawMessage `json:"gateway"`
	Routes     json.RawMessage `json:"routes"`
}

type rawRange struct {
	Subnet     json.RawMessage `json:"subnet"`
	RangeStart json.RawMessage `json:"rangeStart"`
	RangeEnd   json.RawMessage `json:"rangeEnd"`
	Gateway    json.RawMessage `json:"gateway"`
}

// ParseConfig reads the ipam section of a whole network config and
// returns it canonicalised. It returns (nil, nil) when the network has no
// addresses: no ipam section, or a built-in one without ranges. For a
// delegated type only Type is returned; the plugin checks its own config.
// A remote type's section is read into RemoteConf.
func ParseConfig(raw []byte) (*Config, error) {
	var top struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, configErr("", "network config is not valid JSON: %v", err)
	}
	if isAbsent(top.IPAM) {
		return nil, nil
	}
	var r rawIPAM
	if _, ok := confcheck.Object(top.IPAM); !ok {
		return nil, valueErr(&confcheck.ValueError{Key: "ipam", Want: "an object", Got: confcheck.Shorten(top.IPAM)})
	}
	if err := decodeAt("ipam", top.IPAM, &r); err != nil {
		return nil, err
	}
	c := &Config{}
	if err := decodeAt("ipam.type", r.Type, &c.Type); err != nil {
		return nil, err
	}
	if c.Remote() {
		rc, err := parseRemote(top.IPAM)
		if err != nil {
			return nil, err
		}
		return &Config{Type: c.Type, RemoteConf: rc}, nil
	}
	if c.Delegated() {
		return &Config{Type: c.Type}, nil
	}
	if err := decodeShorthand(r, c); err != nil {
		return nil, err
	}
	if err := decodeRanges(r.Ranges, c); err != nil {
		return nil, err
	}
	if err := decodeRoutes(r.Routes, c); err != nil {
		return nil, err
	}
	if c.Subnet == "" && len(c.Ranges) == 0 {
		if f := firstShorthandField(c); f != "" {
			return nil, configErr("ipam.subnet", "missing, but ipam.%s is set", f)
		}
		// A misspelt subnet or ranges would leave the network without
		// addresses, and its first use would fail far from the typo.
		if u := UnknownKeys(top.IPAM); len(u) > 0 {
			return nil, configErr("ipam", "no subnet or ranges, but %s", u[0])
		}
		return nil, nil
	}
	if err := c.canonicalize(); err != nil {
		return nil, err
	}
	return c, nil
}

func isAbsent(raw json.RawMessage) bool { return confcheck.Absent(raw) }

// decodeAt decodes the value of field, naming the field and the form it
// takes when the value has another.
func decodeAt(field string, raw json.RawMessage, v any) error {
	err := confcheck.Decode(field, raw, v)
	var ve *confcheck.ValueError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		return valueErr(ve)
	}
	// An error of the value's own decoding, which Decode prefixed.
	return &ConfigError{Field: field, Msg: strings.TrimPrefix(err.Error(), field+": ")}
}

func valueErr(ve *confcheck.ValueError) error {
	return &ConfigError{Field: ve.Key, Msg: strings.TrimPrefix(ve.Error(), ve.Key+": ")}
}

// field is one key of a section, undecoded, and what it decodes into.
type field struct {
	name string
	raw  json.RawMessage
	dst  any
}

// decodeFields decodes each of fields, named path.name in an error,
// stopping at the first that fails.
func decodeFields(path string, fields ...field) error {
	for _, f := range fields {
		if err := decodeAt(path+"."+f.name, f.raw, f.dst); err != nil {
			return err
		}
	}
	return nil
}

func decodeShorthand(r rawIPAM, c *Config) error {
	return decodeFields("ipam",
		field{"subnet", r.Subnet, &c.Subnet},
		field{"rangeStart", r.RangeStart, &c.RangeStart},
		field{"rangeEnd", r.RangeEnd, &c.RangeEnd},
		field{"gateway", r.Gateway, &c.Gateway})
}

func firstShorthandField(c *Config) string {
	switch {
	case c.RangeStart != "":
		return "rangeStart"
	case c.RangeEnd != "":
		return "rangeEnd"
	case c.Gateway != "":
		return "gateway"
	}
	return ""
}

// rangesForm is the form of ipam.ranges, for a value of another: a
// single level of list ([{"subnet": …}]) is the usual mistake.
const rangesForm = `a list of range sets, each a list of ranges: [[{"subnet": "10.1.0.0/24"}]]`

func decodeRanges(raw json.RawMessage, c *Config) error {
	if isAbsent(raw) {
		return nil
	}
	var sets []json.RawMessage
	if json.Unmarshal(raw, &sets) != nil {
		return configErr("ipam.ranges", "want %s", rangesForm)
	}
	for i, rawSet := range sets {
		path := fmt.Sprintf("ipam.ranges[%d]", i)
		var items []json.RawMessage
		if json.Unmarshal(rawSet, &items) != nil || isAbsent(rawSet) {
			return configErr("ipam.ranges", "want %s", rangesForm)
		}
		if len(items) == 0 {
			return configErr(path, "empty range set")
		}
		set := make(RangeSet, len(items))
		for j, item := range items {
			rpath := fmt.Sprintf("%s[%d]", path, j)
			if err := decodeRange(rpath, item, &set[j]); err != nil {
				return err
			}
		}
		c.Ranges = append(c.Ranges, set)
	}
	return nil
}

func decodeRange(path string, raw json.RawMessage, dst *Range) error {
	if isAbsent(raw) {
		return configErr(path, "missing range")
	}
	obj, ok := confcheck.Object(raw)
	if !ok {
		return configErr(path, `want a range, an object such as {"subnet": "10.1.0.0/24"}, got %s`, confcheck.Shorten(raw))
	}
	var r rawRange
	if err := decodeAt(path, raw, &r); err != nil {
		return err
	}
	if isAbsent(r.Subnet) {
		if u := rangeKeys.Unknown(path, obj); len(u) > 0 {
			return configErr(path+".subnet", "missing, but %s", u[0])
		}
	}
	return decodeFields(path,
		field{"subnet", r.Subnet, &dst.Subnet},
		field{"rangeStart", r.RangeStart, &dst.RangeStart},
		field{"rangeEnd", r.RangeEnd, &dst.RangeEnd},
		field{"gateway", r.Gateway, &dst.Gateway})
}

func decodeRoutes(raw json.RawMessage, c *Config) error {
	var items []json.RawMessage
	if !isAbsent(raw) && json.Unmarshal(raw, &items) != nil {
		return configErr("ipam.routes", `want a list of routes such as [{"dst": "0.0.0.0/0"}], got %s`, confcheck.Shorten(raw))
	}
	for i, item := range items {
		path := fmt.Sprintf("ipam.routes[%d]", i)
		rt := &types.Route{}
		if err := decodeAt(path, item, rt); err != nil {
			return err
		}
		if err := checkRoute(path, rt); err != nil {
			return err
		}
		c.Routes = append(c.Routes, rt)
	}
	return nil
}

func checkRoute(path string, rt *types.Route) error {
	if rt.Dst.IP == nil {
		return configErr(path+".dst", "missing")
	}
	if rt.GW != nil && (rt.GW.To4() == nil) != (rt.Dst.IP.To4() == nil) {
		return configErr(path+".gw", "%s is not of the family of dst %s", rt.GW, rt.Dst.String())
	}
	return nil
}

// canonicalize validates the ranges, moves the shorthand into Ranges and
// writes every range back in full canonical form.
func (c *Config) canonicalize() error {
	sets, err := compileSets(c.rangeSpecs())
	if err != nil {
		return err
	}
	c.Ranges = make([]RangeSet, len(sets))
	for i, s := range sets {
		c.Ranges[i] = s.rangeSet()
	}
	c.Subnet, c.RangeStart, c.RangeEnd, c.Gateway = "", "", "", ""
	return nil
}

// rangeSpec is a Range with the JSON path it came from, for messages.
type rangeSpec struct {
	path string
	r    Range
}

// rangeSpecs lists the range sets of c, the shorthand (if any) first as
// host-local does.
func (c *Config) rangeSpecs() [][]rangeSpec {
	var specs [][]rangeSpec
	if c.Subnet != "" {
		specs = append(specs, []rangeSpec{{path: "ipam", r: Range{
			Subnet: c.Subnet, RangeStart: c.RangeStart, RangeEnd: c.RangeEnd, Gateway: c.Gateway,
		}}})
	}
	for i, set := range c.Ranges {
		var s []rangeSpec
		for j, r := range set {
			s = append(s, rangeSpec{path: fmt.Sprintf("ipam.ranges[%d][%d]", i, j), r: r})
		}
		specs = append(specs, s)
	}
	return specs
}

// pool is a compiled Range.
type pool struct {
	path       string // JSON path of the range, for messages
	subnet     netip.Prefix
	start, end netip.Addr // inclusive
	gateway    netip.Addr
}

// reservation is an address of a subnet that is never handed out.
type reservation struct {
	addr netip.Addr
	why  string
}

// poolSet is a compiled RangeSet.
type poolSet struct {
	pools    []pool
	reserved []reservation // of every pool in the set
}

func compileSets(specs [][]rangeSpec) ([]poolSet, error) {
	var sets []poolSet
	var all []*pool
	for _, spec := range specs {
		var set poolSet
		for _, rs := range spec {
			p, err := compileRange(rs.path, rs.r)
			if err != nil {
				return nil, err
			}
			if err := sameFamily(set.pools, p); err != nil {
				return nil, err
			}
			set.pools = append(set.pools, p)
			set.reserved = append(set.reserved, p.reservations()...)
		}
		if err := set.checkAllocatable(spec); err != nil {
			return nil, err
		}
		sets = append(sets, set)
	}
	for i := range sets {
		for j := range sets[i].pools {
			p := &sets[i].pools[j]
			if err := checkOverlap(p, i, all, sets); err != nil {
				return nil, err
			}
			all = append(all, p)
		}
	}
	return sets, nil
}

func sameFamily(prev []pool, p pool) error {
	if len(prev) == 0 || prev[0].subnet.Addr().Is4() == p.subnet.Addr().Is4() {
		return nil
	}
	return configErr(p.path+".subnet", "%s is %s but %s.subnet is %s; a range set holds one IP family",
		p.subnet, family(p.subnet.Addr()), prev[0].path, family(prev[0].subnet.Addr()))
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// checkOverlap rejects p if its addresses overlap an earlier range, or if
// its subnet overlaps one of another set: a requested address must match
// exactly one set.
func checkOverlap(p *pool, set int, earlier []*pool, sets []poolSet) error {
	for _, q := range earlier {
		if p.start.Compare(q.end) <= 0 && q.start.Compare(p.end) <= 0 {
			return configErr(p.path, "range %s-%s overlaps %s (%s-%s)", p.start, p.end, q.path, q.start, q.end)
		}
		if !sets[set].has(q) && p.subnet.Overlaps(q.subnet) {
			return configErr(p.path+".subnet", "%s overlaps %s.subnet %s of another range set",
				p.subnet, q.path, q.subnet)
		}
	}
	return nil
}

func (s *poolSet) has(q *pool) bool {
	for i := range s.pools {
		if &s.pools[i] == q {
			return true
		}
	}
	return false
}

func compileRange(path string, r Range) (pool, error) {
	p := pool{path: path}
	var err error
	if p.subnet, err = parseSubnet(path+".subnet", r.Subnet); err != nil {
		return p, err
	}
	first := p.subnet.Addr().Next()
	if p.start, err = parseAddrIn(path+".rangeStart", r.RangeStart, p.subnet, first); err != nil {
		return p, err
	}
	if p.end, err = parseAddrIn(path+".rangeEnd", r.RangeEnd, p.subnet, defaultEnd(p.subnet)); err != nil {
		return p, err
	}
	if p.end.Less(p.start) {
		return p, configErr(path+".rangeEnd", "%s is before rangeStart %s", p.end, p.start)
	}
	if p.gateway, err = parseAddrIn(path+".gateway", r.Gateway, p.subnet, first); err != nil {
		return p, err
	}
	if err := p.checkGateway(); err != nil {
		return p, err
	}
	if !p.hasAllocatable() {
		return p, configErr(path, "range %s-%s has no allocatable address", p.start, p.end)
	}
	return p, nil
}

func parseSubnet(field, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, configErr(field, "missing")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, configErr(field, "%q is not a subnet in CIDR notation", s)
	}
	if p.Addr().Is4In6() {
		return p, configErr(field, "%s is an IPv4-mapped IPv6 subnet; write it as IPv4", s)
	}
	bits := p.Bits()
	switch {
	case bits == 0:
		return p, configErr(field, "%s: a /0 subnet is not allowed", s)
	case p.Addr().BitLen()-bits < 2:
		return p, configErr(field, "%s has no usable host address (the prefix is too long)", s)
	}
	return p.Masked(), nil
}

// parseAddrIn parses an address that must lie in subnet; empty means def.
func parseAddrIn(field, s string, subnet netip.Prefix, def netip.Addr) (netip.Addr, error) {
	if s == "" {
		return def, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return a, configErr(field, "%q is not an IP address", s)
	}
	a = a.Unmap()
	if !subnet.Contains(a) {
		return a, configErr(field, "%s is outside subnet %s", a, subnet)
	}
	return a, nil
}

// defaultEnd is the last usable address: IPv4 keeps its broadcast address.
func defaultEnd(subnet netip.Prefix) netip.Addr {
	last := lastAddr(subnet)
	if subnet.Addr().Is4() {
		return last.Prev()
	}
	return last
}

// lastAddr is the highest address of subnet (the IPv4 broadcast address).
func lastAddr(subnet netip.Prefix) netip.Addr {
	b := subnet.Masked().Addr().AsSlice()
	for i := range b {
		hostBits := (i+1)*8 - subnet.Bits() // host bits in this byte, if < 8
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(0xff) >> (8 - hostBits)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (p *pool) checkGateway() error {
	for _, r := range p.addressReservations() {
		if p.gateway == r.addr {
			return configErr(p.path+".gateway", "%s is %s", p.gateway, r.why)
		}
	}
	return nil
}

// addressReservations are the addresses of the subnet no host may have:
// the network address (the IPv6 subnet-router anycast address) and the
// IPv4 broadcast address.
func (p *pool) addressReservations() []reservation {
	rs := []reservation{{p.subnet.Addr(), "the network address of " + p.subnet.String()}}
	if p.subnet.Addr().Is4() {
		rs = append(rs, reservation{lastAddr(p.subnet), "the broadcast address of " + p.subnet.String()})
	}
	return rs
}

func (p *pool) reservations() []reservation {
	return append(p.addressReservations(),
		reservation{p.gateway, "the gateway of " + p.subnet.String()})
}

// hasAllocatable looks at no more addresses than there are reservations,
// so it is cheap for any range size.
func (p *pool) hasAllocatable() bool {
	return p.allocatableAmong(p.reservations())
}

// allocatableAmong reports whether the pool has an address none of rs
// reserves: the set-wide check, since allocation skips the gateway of
// every range of its set.
func (p *pool) allocatableAmong(rs []reservation) bool {
	a := p.start
	for range len(rs) + 1 {
		if !isReserved(rs, a) {
			return true
		}
		if a == p.end {
			return false
		}
		a = a.Next()
	}
	return true
}

func isReserved(rs []reservation, a netip.Addr) bool {
	return reservedWhy(rs, a) != ""
}

func reservedWhy(rs []reservation, a netip.Addr) string {
	for _, r := range rs {
		if r.addr == a {
			return r.why
		}
	}
	return ""
}

func (p *pool) contains(a netip.Addr) bool {
	return p.start.Compare(a) <= 0 && a.Compare(p.end) <= 0
}

func (p *pool) toRange() Range {
	return Range{
		Subnet:     p.subnet.String(),
		RangeStart: p.start.String(),
		RangeEnd:   p.end.String(),
		Gateway:    p.gateway.String(),
	}
}

func (s *poolSet) rangeSet() RangeSet {
	rs := make(RangeSet, len(s.pools))
	for i := range s.pools {
		rs[i] = s.pools[i].toRange()
	}
	return rs
}

// checkAllocatable refuses a range set in which the reservations of all
// its ranges together leave no address to hand out.
func (s *poolSet) checkAllocatable(spec []rangeSpec) error {
	for i := range s.pools {
		if s.pools[i].allocatableAmong(s.reserved) {
			return nil
		}
	}
	path := "ipam"
	if len(spec) > 0 {
		path = spec[0].path
	}
	return configErr(path, "the range set has no address left to allocate once its gateways and reserved addresses are taken out")
}
