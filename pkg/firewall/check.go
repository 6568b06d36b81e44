package firewall

// problem is one thing checkFamily found.
type problem struct {
	text string
	// missing is set for a missing rule or chain, clear for a rule the
	// network's chains should not have.
	missing bool
}

func missing(texts ...string) []problem {
	out := make([]problem, len(texts))
	for i, t := range texts {
		out[i] = problem{text: t, missing: true}
	}
	return out
}

// checkFamily lists what differs in one family between cur and the
// network's rules with ports: every missing rule, and every rule of the
// network's own chains that it should not have. Order within a chain is
// not checked.
func checkFamily(cur state, n Network, fam family, ports []PortMapping) []problem {
	var problems []problem
	prefix := familyPrefix(fam)
	for _, j := range builtinJumps {
		if inFamily(j.target(), fam) && !hasJump(cur.table(j.table), j) {
			problems = append(problems, missing(prefix+"jump from "+j.table+" "+j.chain+" to "+j.target()+" missing")...)
		}
	}

	want := rulesFor(n, fam)
	filter, nat := cur.table("filter"), cur.table("nat")
	head := isolationHead
	head.what = prefix + head.what
	problems = append(problems, missing(missingRules(filter, []rule{head})...)...)
	for _, tname := range tables {
		for _, chain := range sharedChains[tname] {
			problems = append(problems, missing(missingRules(cur.table(tname), want.shared[chain])...)...)
		}
	}
	problems = append(problems, ownChainProblems(filter, want.chains.Forward, want.forward, prefix)...)
	problems = append(problems, ownChainProblems(nat, want.chains.Postrouting, want.postrouting, prefix)...)
	problems = append(problems, ownChainProblems(nat, want.chains.DNAT, dnatRules(n, ports), prefix)...)
	return problems
}

// missingRules names the rules of want that t lacks.
func missingRules(t *table, want []rule) []string {
	var problems []string
	for _, w := range want {
		if !hasRule(t.rules[w.chain], w.key()) {
			problems = append(problems, w.what+" missing")
		}
	}
	return problems
}

func hasRule(have []savedRule, key string) bool {
	for _, r := range have {
		if r.key() == key {
			return true
		}
	}
	return false
}

// ownChainProblems compares a chain of the network with what it should
// hold exactly.
func ownChainProblems(t *table, chain string, want []rule, prefix string) []problem {
	if !t.chains[chain] {
		return missing(prefix + "chain " + chain + " missing")
	}
	problems := missing(missingRules(t, want)...)
	keys := map[string]bool{}
	for _, w := range want {
		keys[w.key()] = true
	}
	for _, r := range t.rules[chain] {
		if !keys[r.key()] {
			problems = append(problems, problem{text: prefix + "unexpected rule: " + r.line})
		}
	}
	return problems
}
