package firewall

import (
	"slices"
	"strings"
)

// tables are the tables this project writes, in restore order.
var tables = []string{"filter", "nat"}

// plan is the restore input of one family, built from the current state
// and the desired one. Only chains whose content changes are declared,
// so that an operation that changes nothing runs no restore at all.
type plan struct {
	tables map[string]*tablePlan
}

// tablePlan is one table's part of a plan. Restore applies its parts in
// the order they are rendered: tests of rules that must be there ("-C",
// which fail the whole restore if one is missing, against the state
// before the input changes anything), declarations (which create a chain
// or, in a --noflush restore, flush it), then appends, then inserts into
// built-in chains, then deletions, which need the chain flushed and no
// longer referenced.
type tablePlan struct {
	checks  []string
	declare []string
	rules   []string
	inserts []string
	deletes []string
}

func newPlan() *plan {
	p := &plan{tables: map[string]*tablePlan{}}
	for _, t := range tables {
		p.tables[t] = &tablePlan{}
	}
	return p
}

func (p *plan) table(name string) *tablePlan { return p.tables[name] }

func (p *plan) empty() bool {
	for _, t := range p.tables {
		if !t.empty() {
			return false
		}
	}
	return true
}

func (t *tablePlan) empty() bool {
	return len(t.checks)+len(t.declare)+len(t.rules)+len(t.inserts)+len(t.deletes) == 0
}

// rewrite replaces the content of chain with lines (restore lines).
func (t *tablePlan) rewrite(chain string, lines []string) {
	t.declare = append(t.declare, chain)
	t.rules = append(t.rules, lines...)
}

// rewriteOnce is rewrite for a chain the plan may declare already: a
// chain is declared once.
func (t *tablePlan) rewriteOnce(chain string, lines []string) {
	if !slices.Contains(t.declare, chain) {
		t.declare = append(t.declare, chain)
	}
	t.rules = append(t.rules, lines...)
}

// check adds a test that rule is there.
func (t *tablePlan) check(r rule) {
	t.checks = append(t.checks, "-C "+r.chain+" "+strings.Join(r.spec, " "))
}

// render returns the restore input: one section per table that changes.
func (p *plan) render() string {
	var b strings.Builder
	for _, name := range tables {
		t := p.tables[name]
		if t.empty() {
			continue
		}
		b.WriteString("*" + name + "\n")
		for _, l := range t.checks {
			b.WriteString(l + "\n")
		}
		for _, c := range t.declare {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, l := range t.rules {
			b.WriteString(l + "\n")
		}
		for _, l := range t.inserts {
			b.WriteString(l + "\n")
		}
		for _, c := range t.deletes {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// syncOwnChain makes a chain of the network hold exactly want, rewriting
// it when it is missing or differs.
func syncOwnChain(p *tablePlan, cur *table, chain string, want []rule) {
	if cur.chains[chain] && sameRules(cur.rules[chain], want) {
		return
	}
	p.rewrite(chain, lines(want))
}

// sameRules reports whether have and want are the same rules in the same
// order.
func sameRules(have []savedRule, want []rule) bool {
	keys := make([]string, len(want))
	for i, w := range want {
		keys[i] = w.key()
	}
	return sameKeys(have, keys)
}

func lines(rules []rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.line()
	}
	return out
}

// syncSharedChain makes a shared chain hold head, then the rules of the
// other networks as they are, with the network's own rules (those owned
// recognises) replaced by want. A missing chain is created only when
// create is set: RemoveNetwork has nothing to remove from a chain that
// does not exist.
func syncSharedChain(p *tablePlan, cur *table, chain string, head []rule, owned func(savedRule) bool, want []rule, create bool) {
	if !cur.chains[chain] {
		if create {
			p.rewrite(chain, lines(append(append([]rule{}, head...), want...)))
		}
		return
	}
	have := cur.rules[chain]
	out, keys := mergeShared(have, head, owned, want)
	if !sameKeys(have, keys) {
		p.rewrite(chain, out)
	}
}

// mergeShared returns the new content of a shared chain, as restore lines
// and their keys. The network's rules take the place of its old ones (or
// come last when it had none), so that re-applying a network never
// reorders its neighbours. A nil head keeps the shared rules as they are.
func mergeShared(have []savedRule, head []rule, owned func(savedRule) bool, want []rule) (out, keys []string) {
	add := func(line, key string) {
		out = append(out, line)
		keys = append(keys, key)
	}
	addWant := func() {
		for _, w := range want {
			add(w.line(), w.key())
		}
	}
	for _, r := range head {
		add(r.line(), r.key())
	}
	placed := false
	for _, r := range have {
		switch {
		case head != nil && r.comment() == sharedComment:
			// The old head, replaced by the one written above.
		case owned(r):
			if !placed {
				addWant()
				placed = true
			}
		default:
			add(r.line, r.key())
		}
	}
	if !placed {
		addWant()
	}
	return out, keys
}

// sameKeys reports whether have are the rules of keys, in that order.
func sameKeys(have []savedRule, keys []string) bool {
	if len(have) != len(keys) {
		return false
	}
	for i := range have {
		if have[i].key() != keys[i] {
			return false
		}
	}
	return true
}

// ownedBy returns the test that recognises n's rules in a shared chain:
// its comment, or a jump to one of its chains (which would keep the chain
// from being deleted whatever its comment says).
func ownedBy(n Network) func(savedRule) bool {
	own := sanitizeComment(networkComment(n.Name))
	c := NetworkChains(n.Name)
	return func(r savedRule) bool {
		cm := r.comment()
		if cm == own || strings.HasPrefix(cm, own+"/") {
			return true
		}
		switch r.target() {
		case c.Forward, c.DNAT, c.Postrouting:
			return true
		}
		return false
	}
}

// ensureBuiltinJumps inserts the jumps from built-in chains that are
// missing, recognised by their target whatever else they match, so that
// a jump is never inserted twice.
func ensureBuiltinJumps(p *plan, cur state, fam family) {
	for _, j := range builtinJumps {
		if !inFamily(j.target(), fam) || hasJump(cur.table(j.table), j) {
			continue
		}
		p.table(j.table).inserts = append(p.table(j.table).inserts,
			"-I "+j.chain+" 1 "+strings.Join(j.spec, " "))
	}
}

func hasJump(t *table, j builtinJump) bool {
	for _, r := range t.rules[j.chain] {
		if r.target() == j.target() {
			return true
		}
	}
	return false
}

// planEnsure computes what EnsureNetwork changes in one family.
func planEnsure(cur state, n Network, fam family) *plan {
	want := rulesFor(n, fam)
	p := newPlan()
	filter, nat := cur.table("filter"), cur.table("nat")

	syncOwnChain(p.table("filter"), filter, want.chains.Forward, want.forward)
	syncOwnChain(p.table("nat"), nat, want.chains.Postrouting, want.postrouting)
	if !nat.chains[want.chains.DNAT] {
		// SetPorts owns the content; an existing chain keeps its ports.
		p.table("nat").declare = append(p.table("nat").declare, want.chains.DNAT)
	}

	owned := ownedBy(n)
	for _, tname := range tables {
		for _, chain := range sharedChains[tname] {
			if !inFamily(chain, fam) {
				continue
			}
			var head []rule
			if chain == ChainForward {
				head = []rule{isolationHead}
			}
			syncSharedChain(p.table(tname), cur.table(tname), chain, head, owned, want.shared[chain], true)
		}
	}
	ensureBuiltinJumps(p, cur, fam)
	return p
}

// planPorts is the input of SetPorts' first restore in one family: the
// network's DNAT chain rewritten with ports, after a test of every other
// rule EnsureNetwork writes for the network (the jumps from built-in
// chains, the shared chains' rules, the network's own chains), so that
// the restore fails, changing nothing, when anything is missing. A test
// of a rule in a missing chain fails too.
func planPorts(n Network, fam family, ports []PortMapping) *plan {
	want := rulesFor(n, fam)
	p := newPlan()
	for _, j := range builtinJumps {
		if inFamily(j.target(), fam) {
			p.table(j.table).check(rule{chain: j.chain, spec: j.spec})
		}
	}
	p.table("filter").check(isolationHead)
	for _, tname := range tables {
		for _, chain := range sharedChains[tname] {
			for _, r := range want.shared[chain] {
				p.table(tname).check(r)
			}
		}
	}
	for _, r := range want.forward {
		p.table("filter").check(r)
	}
	for _, r := range want.postrouting {
		p.table("nat").check(r)
	}
	p.table("nat").rewrite(want.chains.DNAT, lines(dnatRules(n, ports)))
	return p
}

// planRemove computes what RemoveNetwork changes in one family: the
// network's rules leave the shared chains, and its own chains are flushed
// and deleted. Shared chains and built-in jumps stay.
func planRemove(cur state, n Network) *plan {
	p := newPlan()
	owned := ownedBy(n)
	if lastNetwork(cur, n, owned) {
		removeShared(p, cur)
	} else {
		for _, tname := range tables {
			for _, chain := range sharedChains[tname] {
				// No head: the shared rules stay as they are.
				syncSharedChain(p.table(tname), cur.table(tname), chain, nil, owned, nil, false)
			}
		}
	}
	c := NetworkChains(n.Name)
	removeChain(p.table("filter"), cur.table("filter"), c.Forward)
	removeChain(p.table("nat"), cur.table("nat"), c.DNAT)
	removeChain(p.table("nat"), cur.table("nat"), c.Postrouting)
	return p
}

// lastNetwork reports whether n is the only network with rules in this
// family: nothing but its rules and the shared heads in the shared
// chains, and no other network's chain.
func lastNetwork(cur state, n Network, owned func(savedRule) bool) bool {
	mine := NetworkChains(n.Name)
	for _, tname := range tables {
		t := cur.table(tname)
		for chain := range t.chains {
			if isNetworkChain(chain) && chain != mine.Forward && chain != mine.DNAT && chain != mine.Postrouting {
				return false
			}
		}
		for _, chain := range sharedChains[tname] {
			for _, r := range t.rules[chain] {
				if r.comment() != sharedComment && !owned(r) {
					return false
				}
			}
		}
	}
	return true
}

// isNetworkChain reports whether chain is one of some network's own
// chains (see NetworkChains).
func isNetworkChain(chain string) bool {
	for _, prefix := range []string{"CNM-FWD-", "CNM-DN-", "CNM-PR-"} {
		if strings.HasPrefix(chain, prefix) {
			return true
		}
	}
	return false
}

// removeShared deletes what networks share when the last one goes: the
// jumps from built-in chains (recognised by their target, as they were
// inserted) and the shared chains. A later network makes them again.
func removeShared(p *plan, cur state) {
	for _, j := range builtinJumps {
		for _, r := range cur.table(j.table).rules[j.chain] {
			if r.target() == j.target() {
				// The saved line, verbatim restore input, as a deletion.
				p.table(j.table).inserts = append(p.table(j.table).inserts, "-D"+strings.TrimPrefix(r.line, "-A"))
			}
		}
	}
	for _, tname := range tables {
		for _, chain := range sharedChains[tname] {
			removeChain(p.table(tname), cur.table(tname), chain)
		}
	}
}

// removeChain flushes (by declaring) and deletes chain if it exists.
func removeChain(p *tablePlan, cur *table, chain string) {
	if !cur.chains[chain] {
		return
	}
	p.declare = append(p.declare, chain)
	p.deletes = append(p.deletes, chain)
}
