package firewall

import (
	"net"
	"sort"
	"strconv"
	"strings"
)

// savedRule is one "-A" line of iptables-save output.
type savedRule struct {
	line string   // verbatim, valid restore input
	spec []string // tokens after "-A <chain>", unquoted
}

// comment returns the rule's comment, "" if it has none.
func (r savedRule) comment() string {
	for i := 0; i+1 < len(r.spec); i++ {
		if r.spec[i] == "--comment" {
			return r.spec[i+1]
		}
	}
	return ""
}

// target returns the rule's jump target, "" if it has none.
func (r savedRule) target() string {
	for i := 0; i+1 < len(r.spec); i++ {
		if r.spec[i] == "-j" || r.spec[i] == "--jump" {
			return r.spec[i+1]
		}
	}
	return ""
}

func (r savedRule) key() string { return specKey(r.spec) }

// table is one table of iptables-save output.
type table struct {
	chains map[string]bool
	rules  map[string][]savedRule // by chain, in order
}

// state is a parsed iptables-save output, by table name. Tables absent
// from the output read as empty.
type state map[string]*table

func (s state) table(name string) *table {
	if t, ok := s[name]; ok {
		return t
	}
	return &table{chains: map[string]bool{}, rules: map[string][]savedRule{}}
}

// parseSave reads iptables-save output. Counters, comments and COMMIT
// lines carry nothing the firewall needs.
func parseSave(out string) state {
	s := state{}
	var cur *table
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			cur = s.table(line[1:])
			s[line[1:]] = cur
		case cur == nil:
			// Comments and anything before the first table.
		case strings.HasPrefix(line, ":"):
			if name, _, _ := strings.Cut(line[1:], " "); name != "" {
				cur.chains[name] = true
			}
		case strings.HasPrefix(line, "-A "):
			toks := tokenize(line)
			if len(toks) < 2 {
				continue
			}
			chain := toks[1]
			cur.rules[chain] = append(cur.rules[chain], savedRule{line: line, spec: toks[2:]})
		}
	}
	return s
}

// tokenize splits a rule line the way iptables-restore does: on blanks,
// except inside double quotes, where \" and \\ stand for themselves.
func tokenize(line string) []string {
	var toks []string
	var cur strings.Builder
	inQuote, inToken := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\'):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			inToken = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inToken {
				toks = append(toks, cur.String())
				cur.Reset()
				inToken = false
			}
		default:
			cur.WriteByte(c)
			inToken = true
		}
	}
	if inToken {
		toks = append(toks, cur.String())
	}
	return toks
}

// specKey returns a canonical form of a rule's tokens, so that a rule
// written by this package and the same rule printed by iptables-save (in
// whatever order and spelling that version prints it) compare equal:
// "-m <module>" is dropped (every module used here is implied by its
// options), addresses get their prefix length, conntrack states are
// sorted, and the option/value pairs are sorted, which is safe because
// every match used here is a pure test.
func specKey(spec []string) string {
	var parts []string
	neg := false
	for i := 0; i < len(spec); {
		tok := spec[i]
		switch {
		case tok == "!":
			neg = true
			i++
			continue
		case tok == "-m" || tok == "--match":
			i += 2
			continue
		case !isOption(tok):
			parts = append(parts, tok)
			i++
			continue
		}
		i++
		var vals []string
		for i < len(spec) && !isOption(spec[i]) && spec[i] != "!" {
			vals = append(vals, spec[i])
			i++
		}
		opt := canonicalOption(tok)
		val := canonicalValue(opt, strings.Join(vals, " "))
		if neg {
			opt = "!" + opt
			neg = false
		}
		parts = append(parts, opt+"="+val)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

func isOption(tok string) bool { return len(tok) > 1 && tok[0] == '-' }

var longOptions = map[string]string{
	"--source": "-s", "--destination": "-d", "--in-interface": "-i",
	"--out-interface": "-o", "--protocol": "-p", "--jump": "-j",
	"--destination-port": "--dport",
}

func canonicalOption(opt string) string {
	if short, ok := longOptions[opt]; ok {
		return short
	}
	return opt
}

func canonicalValue(opt, val string) string {
	switch opt {
	case "-s", "-d":
		return canonicalPrefix(val)
	case "--ctstate", "--state":
		states := strings.Split(val, ",")
		sort.Strings(states)
		return strings.Join(states, ",")
	}
	return val
}

// canonicalPrefix turns "10.1.0.5" into "10.1.0.5/32" and normalizes the
// spelling of IPv6 addresses; anything else is left as it is.
func canonicalPrefix(val string) string {
	if !strings.Contains(val, "/") {
		if ip := net.ParseIP(val); ip != nil {
			return hostCIDR(ip)
		}
		return val
	}
	if ip, n, err := net.ParseCIDR(val); err == nil {
		ones, _ := n.Mask.Size()
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		return ip.String() + "/" + strconv.Itoa(ones)
	}
	return val
}
