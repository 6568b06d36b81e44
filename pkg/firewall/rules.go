package firewall

import (
	"net"
	"strconv"
	"strings"
)

// Shared chains: one of each per table and family, holding the rules of
// every network.
const (
	ChainForward     = "CNM-FORWARD"     // filter, jumped to from FORWARD
	ChainInput       = "CNM-INPUT"       // filter, jumped to from INPUT; IPv4 only
	ChainIsolation1  = "CNM-ISOLATION-1" // filter, first rule of CNM-FORWARD
	ChainIsolation2  = "CNM-ISOLATION-2" // filter, jumped to from CNM-ISOLATION-1
	ChainDNAT        = "CNM-DNAT"        // nat, jumped to from PREROUTING and OUTPUT
	ChainPostrouting = "CNM-POSTROUTING" // nat, jumped to from POSTROUTING
)

// sharedComment marks the rules that belong to no single network: the
// jumps from built-in chains and the jump to CNM-ISOLATION-1. It has no
// colon, so it can never be a network's comment.
const sharedComment = "cnm"

// maxComment is the longest comment the kernel's comment match keeps.
const maxComment = 255

// rule is one rule of a chain, as restore input tokens.
type rule struct {
	chain string
	spec  []string // the tokens after "-A <chain>"
	what  string   // how Check names it when it is missing
}

// line renders r as an append in restore input.
func (r rule) line() string {
	return "-A " + r.chain + " " + strings.Join(r.spec, " ")
}

// key is r's canonical form, comparable with the key of the same rule
// read back from iptables-save.
func (r rule) key() string {
	return specKey(tokenize(strings.Join(r.spec, " ")))
}

// builtinJump is a jump from a chain this project does not own.
type builtinJump struct {
	table, chain string
	spec         []string
}

// target is the chain a jump goes to.
func (j builtinJump) target() string { return j.spec[len(j.spec)-1] }

// builtinJumps are the only rules this project puts into chains it does
// not own, each inserted once at the top. OUTPUT matches local
// destinations including 127.0.0.1, so that published ports answer on
// localhost (the bridge driver enables route_localnet for that while such
// a port is published); INPUT guards the loopback addresses that this
// opens to the bridges.
var builtinJumps = []builtinJump{
	{"filter", "FORWARD", withComment(sharedComment, "-j", ChainForward)},
	{"filter", "INPUT", withComment(sharedComment, "-j", ChainInput)},
	{"nat", "PREROUTING", withComment(sharedComment, "-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainDNAT)},
	{"nat", "OUTPUT", withComment(sharedComment, "-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainDNAT)},
	{"nat", "POSTROUTING", withComment(sharedComment, "-j", ChainPostrouting)},
}

// inFamily reports whether a shared chain, and the jump to it, exist in
// family fam. CNM-INPUT guards 127.0.0.0/8: IPv6 never routes ::1 from
// another interface than lo, whatever the sysctls say.
func inFamily(chain string, fam family) bool { return chain != ChainInput || fam == ipv4 }

// isolationHead is the first rule of CNM-FORWARD: isolation is decided
// before any network's chain can accept the packet.
var isolationHead = rule{
	chain: ChainForward,
	spec:  withComment(sharedComment, "-j", ChainIsolation1),
	what:  "jump from " + ChainForward + " to " + ChainIsolation1,
}

// withComment returns the match spec followed by the comment, then the
// target: the order iptables-save prints, which keeps restore input
// readable next to its output.
func withComment(text string, spec ...string) []string {
	i := len(spec)
	for j, tok := range spec {
		if tok == "-j" {
			i = j
			break
		}
	}
	out := append([]string{}, spec[:i]...)
	out = append(out, "-m", "comment", "--comment", quoteComment(text))
	return append(out, spec[i:]...)
}

// sanitizeComment makes text safe inside a double-quoted restore token:
// quotes, backslashes and control characters become "_", and the text is
// cut to what the kernel keeps. Names are validated by the caller; this is
// the last line of defence of the restore syntax.
func sanitizeComment(text string) string {
	b := []byte(text)
	for i, c := range b {
		if c < ' ' || c == 0x7f || c == '"' || c == '\\' {
			b[i] = '_'
		}
	}
	if len(b) > maxComment {
		b = b[:maxComment]
	}
	return string(b)
}

func quoteComment(text string) string {
	return `"` + sanitizeComment(text) + `"`
}

// networkComment is the comment of a network's rules.
func networkComment(name string) string { return "cnm:" + name }

// endpointComment is the comment of an endpoint's rules.
func endpointComment(network, endpoint string) string {
	if endpoint == "" {
		return networkComment(network)
	}
	return "cnm:" + network + "/" + endpoint
}

// networkRules are the rules EnsureNetwork writes for one network and
// family, chain by chain.
type networkRules struct {
	chains ChainNames
	// Rules of the network's own chains, rewritten wholesale.
	forward, postrouting []rule
	// The network's rules in shared chains, by shared chain.
	shared map[string][]rule
}

// rulesFor computes the rules of n in family fam.
func rulesFor(n Network, fam family) networkRules {
	c := NetworkChains(n.Name)
	cm := networkComment(n.Name)
	br := n.Bridge
	r := networkRules{chains: c, shared: map[string][]rule{}}
	prefix := familyPrefix(fam)

	r.forward = []rule{
		{c.Forward, withComment(cm, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
			prefix + "accept of replies forwarded to " + br},
		{c.Forward, withComment(cm, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"),
			prefix + "accept of published-port traffic forwarded to " + br},
	}
	if !n.ICC {
		// After the accepts above, so that replies and routed traffic to
		// published ports (a container's own included) still pass.
		r.forward = append(r.forward, rule{c.Forward, withComment(cm, "-i", br, "-o", br, "-j", "DROP"),
			prefix + "drop of traffic between the endpoints of " + br + " (enableICC false)"})
	}
	r.forward = append(r.forward, rule{c.Forward, withComment(cm, "-i", br, "-j", "ACCEPT"),
		prefix + "accept of traffic forwarded from " + br})

	for _, s := range n.subnetsOf(fam) {
		if n.IPMasq {
			r.postrouting = append(r.postrouting, rule{c.Postrouting,
				withComment(cm, "-s", s, "!", "-o", br, "-j", "MASQUERADE"),
				"masquerade of " + s + " leaving through other interfaces than " + br})
		}
		// A container reaching a published port through a host address:
		// without this the reply would bypass the host's DNAT.
		r.postrouting = append(r.postrouting, rule{c.Postrouting,
			withComment(cm, "-s", s, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"),
			"hairpin masquerade of " + s})
	}
	if fam == ipv4 {
		// A published port reached on 127.0.0.1: a container cannot
		// answer a loopback source.
		r.postrouting = append(r.postrouting, rule{c.Postrouting,
			withComment(cm, "-s", "127.0.0.0/8", "-o", br, "-j", "MASQUERADE"),
			"masquerade of localhost traffic to " + br})
		// With route_localnet on the bridge, a container that sends to
		// 127.0.0.1 through the gateway reaches the host's loopback
		// services (CVE-2020-8558). Only the replies to the host's own
		// connections to a published port may come in that way.
		r.shared[ChainInput] = []rule{{ChainInput,
			withComment(cm, "-i", br, "-d", "127.0.0.0/8",
				"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"),
			"drop of traffic from " + br + " to 127.0.0.0/8"}}
	}

	r.shared[ChainForward] = []rule{{ChainForward, withComment(cm, "-j", c.Forward),
		prefix + "jump from " + ChainForward + " to " + c.Forward}}
	r.shared[ChainDNAT] = []rule{{ChainDNAT, withComment(cm, "-j", c.DNAT),
		prefix + "jump from " + ChainDNAT + " to " + c.DNAT}}
	r.shared[ChainPostrouting] = []rule{{ChainPostrouting, withComment(cm, "-j", c.Postrouting),
		prefix + "jump from " + ChainPostrouting + " to " + c.Postrouting}}
	r.shared[ChainIsolation1] = nil
	r.shared[ChainIsolation2] = nil
	if n.Isolation {
		r.shared[ChainIsolation1] = []rule{{ChainIsolation1,
			withComment(cm, "-i", br, "!", "-o", br, "-j", ChainIsolation2),
			prefix + "isolation of " + br + " (stage 1)"}}
		r.shared[ChainIsolation2] = []rule{{ChainIsolation2,
			withComment(cm, "-o", br, "-j", "DROP"),
			prefix + "isolation of " + br + " (stage 2)"}}
	}
	return r
}

// sharedChains lists the shared chains of each table, in the order they
// are written.
var sharedChains = map[string][]string{
	"filter": {ChainForward, ChainIsolation1, ChainIsolation2, ChainInput},
	"nat":    {ChainDNAT, ChainPostrouting},
}

// dnatRules are the rules of n's DNAT chain for ports, all of one family.
func dnatRules(n Network, ports []PortMapping) []rule {
	chain := NetworkChains(n.Name).DNAT
	rules := make([]rule, 0, len(ports))
	for _, pm := range ports {
		proto := strings.ToLower(pm.Protocol)
		var spec []string
		if ip := pm.hostIP(); ip != nil {
			spec = append(spec, "-d", hostCIDR(ip))
		}
		spec = append(spec, "-p", proto, "-m", proto, "--dport", strconv.Itoa(pm.HostPort))
		spec = append(spec, "-j", "DNAT", "--to-destination",
			net.JoinHostPort(pm.ContainerIP.String(), strconv.Itoa(pm.ContainerPort)))
		fam, _ := familyOf(pm.ContainerIP)
		rules = append(rules, rule{chain, withComment(endpointComment(n.Name, pm.Endpoint), spec...),
			familyPrefix(fam) + "DNAT " + pm.String()})
	}
	return rules
}

// hostCIDR is ip as a one-address prefix, the way iptables-save prints a
// destination.
func hostCIDR(ip net.IP) string {
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String() + "/32"
	}
	return ip.String() + "/128"
}

// familyPrefix starts the description of an IPv6 rule, so that Check's
// messages say which of the two tools lacks a rule that looks the same in
// both.
func familyPrefix(fam family) string {
	if fam == ipv6 {
		return "IPv6 "
	}
	return ""
}
