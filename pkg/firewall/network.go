package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
)

// Network is what the firewall needs to know of a cnm-bridge network.
type Network struct {
	// Name is the CNI network name: it goes into rule comments
	// ("cnm:<Name>") and the names of the network's chains derive from it.
	Name string
	// Bridge is the bridge device of the network.
	Bridge string
	// Subnets are the network's IPv4 and/or IPv6 subnets. Their address
	// families decide which of iptables and ip6tables get rules.
	Subnets []*net.IPNet
	// IPMasq masquerades traffic from the subnets that leaves through
	// another interface than the bridge.
	IPMasq bool
	// Isolation drops forwarded traffic between this bridge and the
	// bridges of the other networks that have Isolation set.
	Isolation bool
	// ICC lets the network's endpoints reach each other through the host
	// (a route via the gateway). Without it, traffic the host would
	// forward from the bridge back to it is dropped, but for replies and
	// published ports: bridge port isolation stops only the direct path.
	ICC bool
}

// PortMapping publishes a container port on the host.
type PortMapping struct {
	// Protocol is "tcp", "udp" or "sctp".
	Protocol string
	// HostIP limits the mapping to one local address; nil or an
	// unspecified address means every local address of the namespace.
	HostIP net.IP
	// HostPort is the published port.
	HostPort int
	// ContainerIP and ContainerPort are where the traffic goes. The
	// family of ContainerIP decides whether iptables or ip6tables
	// carries the mapping.
	ContainerIP   net.IP
	ContainerPort int
	// Endpoint names the endpoint in the rule's comment
	// ("cnm:<network>/<endpoint>").
	Endpoint string
}

// ChainNames are the chains of one network. The id in them is derived
// from the network name, so that names stay short (iptables allows 28
// characters) and the same network always gets the same chains.
type ChainNames struct {
	Forward     string // filter: what the network's bridge may forward
	DNAT        string // nat: the network's published ports
	Postrouting string // nat: masquerading of the network's subnets
}

// NetworkChains returns the names of the chains of the network called
// name.
func NetworkChains(name string) ChainNames {
	sum := sha256.Sum256([]byte(name))
	id := hex.EncodeToString(sum[:])[:10]
	return ChainNames{
		Forward:     "CNM-FWD-" + id,
		DNAT:        "CNM-DN-" + id,
		Postrouting: "CNM-PR-" + id,
	}
}

// family is an address family, with the tools that manage its rules.
type family int

const (
	ipv4 family = iota
	ipv6
)

func (fam family) String() string {
	if fam == ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

func (fam family) saveBin() string {
	if fam == ipv6 {
		return "ip6tables-save"
	}
	return "iptables-save"
}

func (fam family) restoreBin() string {
	if fam == ipv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

// familyOf returns the family of ip; ok is false for a nil or malformed
// address.
func familyOf(ip net.IP) (fam family, ok bool) {
	switch {
	case ip.To4() != nil:
		return ipv4, true
	case len(ip) == net.IPv6len:
		return ipv6, true
	}
	return ipv4, false
}

// families returns the address families of n's subnets, IPv4 first. A
// network without subnets still gets the IPv4 forwarding rules, the one
// thing that does not depend on addresses.
func (n Network) families() []family {
	var has [2]bool
	for _, s := range n.Subnets {
		if fam, ok := familyOf(s.IP); ok {
			has[fam] = true
		}
	}
	if !has[ipv4] && !has[ipv6] {
		return []family{ipv4}
	}
	var fams []family
	for _, fam := range []family{ipv4, ipv6} {
		if has[fam] {
			fams = append(fams, fam)
		}
	}
	return fams
}

// subnetsOf returns n's subnets of family fam as network addresses
// ("10.1.0.0/24" even when the caller passed "10.1.0.1/24").
func (n Network) subnetsOf(fam family) []string {
	var out []string
	for _, s := range n.Subnets {
		if f, ok := familyOf(s.IP); ok && f == fam {
			out = append(out, (&net.IPNet{IP: s.IP.Mask(s.Mask), Mask: s.Mask}).String())
		}
	}
	return out
}

// validate checks what reaches restore input as a bare token. The caller
// validates names already; this guards the restore syntax.
func (n Network) validate() error {
	if n.Name == "" {
		return fmt.Errorf("firewall: network has no name")
	}
	if err := validateIfName(n.Bridge); err != nil {
		return fmt.Errorf("network %s: bridge: %w", n.Name, err)
	}
	for i, s := range n.Subnets {
		if s == nil {
			return fmt.Errorf("network %s: subnet %d is nil", n.Name, i)
		}
		if _, ok := familyOf(s.IP); !ok {
			return fmt.Errorf("network %s: subnet %d has no valid address", n.Name, i)
		}
		if ones, bits := s.Mask.Size(); bits == 0 || (bits == 32) != (s.IP.To4() != nil) {
			return fmt.Errorf("network %s: subnet %s: bad mask (/%d of %d bits)", n.Name, s, ones, bits)
		}
	}
	return nil
}

// validateIfName accepts what the kernel accepts as a device name, less
// what iptables would read otherwise: a leading "-" (an option), a
// trailing "+" (a wildcard) and the characters of restore quoting.
func validateIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case strings.HasPrefix(name, "-") || strings.HasPrefix(name, "!"):
		return fmt.Errorf("interface name %q starts with %q", name, name[:1])
	case strings.HasSuffix(name, "+"):
		return fmt.Errorf("interface name %q ends with the iptables wildcard +", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`/:"\'`, r) {
			return fmt.Errorf("interface name %q contains %q", name, r)
		}
	}
	return nil
}

// validate checks one mapping and returns its address family.
func (pm PortMapping) validate() (family, error) {
	switch strings.ToLower(pm.Protocol) {
	case "tcp", "udp", "sctp":
	default:
		return 0, fmt.Errorf("port mapping %s: protocol %q is not tcp, udp or sctp", pm, pm.Protocol)
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return 0, fmt.Errorf("port mapping %s: host port %d out of range", pm, pm.HostPort)
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return 0, fmt.Errorf("port mapping %s: container port %d out of range", pm, pm.ContainerPort)
	}
	fam, ok := familyOf(pm.ContainerIP)
	if !ok || pm.ContainerIP.IsUnspecified() {
		return 0, fmt.Errorf("port mapping %s: invalid container address", pm)
	}
	if pm.HostIP != nil {
		hf, ok := familyOf(pm.HostIP)
		if !ok {
			return 0, fmt.Errorf("port mapping %s: invalid host address", pm)
		}
		if hf != fam {
			return 0, fmt.Errorf("port mapping %s: host and container addresses are of different families", pm)
		}
	}
	return fam, nil
}

// hostIP returns the mapping's host address, nil when it is every local
// address.
func (pm PortMapping) hostIP() net.IP {
	if pm.HostIP == nil || pm.HostIP.IsUnspecified() {
		return nil
	}
	return pm.HostIP
}

// String describes the mapping as Check reports it:
// "tcp 8080 -> 10.1.0.5:80", "tcp [fd00::1]:8080 -> [fd00::5]:80".
func (pm PortMapping) String() string {
	host := fmt.Sprint(pm.HostPort)
	if ip := pm.hostIP(); ip != nil {
		host = net.JoinHostPort(ip.String(), host)
	}
	return fmt.Sprintf("%s %s -> %s", strings.ToLower(pm.Protocol), host,
		net.JoinHostPort(pm.ContainerIP.String(), fmt.Sprint(pm.ContainerPort)))
}

// portsByFamily validates ports against n and splits them by family, each
// list sorted so that the same set always gives the same chain: specific
// host addresses before the wildcard, so that the most specific mapping
// of a port wins.
func portsByFamily(n Network, ports []PortMapping) (map[family][]PortMapping, error) {
	allowed := map[family]bool{}
	for _, fam := range n.families() {
		allowed[fam] = true
	}
	out := map[family][]PortMapping{}
	for _, pm := range ports {
		fam, err := pm.validate()
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", n.Name, err)
		}
		if !allowed[fam] {
			return nil, fmt.Errorf("network %s: port mapping %s: the network has no %s subnet", n.Name, pm, fam)
		}
		out[fam] = append(out[fam], pm)
	}
	for _, list := range out {
		sort.SliceStable(list, func(i, j int) bool { return lessMapping(list[i], list[j]) })
	}
	return out, nil
}

func lessMapping(a, b PortMapping) bool {
	if pa, pb := strings.ToLower(a.Protocol), strings.ToLower(b.Protocol); pa != pb {
		return pa < pb
	}
	if a.HostPort != b.HostPort {
		return a.HostPort < b.HostPort
	}
	ha, hb := a.hostIP(), b.hostIP()
	if (ha == nil) != (hb == nil) {
		return ha != nil
	}
	if c := strings.Compare(ha.String(), hb.String()); c != 0 {
		return c < 0
	}
	if c := strings.Compare(a.ContainerIP.String(), b.ContainerIP.String()); c != 0 {
		return c < 0
	}
	return a.ContainerPort < b.ContainerPort
}
