package firewall

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Firewall manages the iptables state of cnm-bridge networks in the
// network namespace of the calling thread. Its methods may be called
// from several goroutines; operations that change rules are serialised
// with other processes through a lock file.
type Firewall struct {
	v4 tools
	// v6 is looked up at New too, but only networks with IPv6 subnets
	// need it: v6Err says why it is missing.
	v6       tools
	v6Err    error
	lockFile string
	execs    atomic.Int64
}

// New finds iptables-restore and iptables-save through PATH, and
// ip6tables-restore and ip6tables-save if they are there. It runs nothing.
func New() (*Firewall, error) {
	v4, err := lookTools(ipv4)
	if err != nil {
		return nil, err
	}
	f := &Firewall{v4: v4, lockFile: DefaultLockFile}
	f.v6, f.v6Err = lookTools(ipv6)
	return f, nil
}

// Execs returns the number of processes this Firewall has run, to measure
// the cost of an operation: process execs dominate plugin latency.
func (f *Firewall) Execs() int { return int(f.execs.Load()) }

// tools returns the binaries of fam, or why they are missing.
func (f *Firewall) tools(fam family) (tools, error) {
	if fam == ipv6 {
		return f.v6, f.v6Err
	}
	return f.v4, nil
}

// toolsFor returns the binaries of every family in fams, failing before
// anything runs when one is missing.
func (f *Firewall) toolsFor(n Network, fams []family) (map[family]tools, error) {
	out := map[family]tools{}
	for _, fam := range fams {
		t, err := f.tools(fam)
		if err != nil {
			return nil, fmt.Errorf("network %s has %s subnets: %w", n.Name, fam, err)
		}
		out[fam] = t
	}
	return out, nil
}

// EnsureNetwork creates the shared chains and the jumps from built-in
// chains where they are missing, and (re)writes the network's own chains
// and its rules in the shared chains. The network's published ports are
// kept. It is idempotent: per family it reads the rules once and runs a
// restore only if something differs.
func (f *Firewall) EnsureNetwork(n Network) error {
	if err := n.validate(); err != nil {
		return err
	}
	fams := n.families()
	ts, err := f.toolsFor(n, fams)
	if err != nil {
		return err
	}
	unlock, err := f.lock()
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	defer unlock()
	for _, fam := range fams {
		if err := f.sync(ts[fam], func(cur state) *plan { return planEnsure(cur, n, fam) }); err != nil {
			return fmt.Errorf("network %s: %s rules: %w", n.Name, fam, err)
		}
	}
	return nil
}

// RemoveNetwork removes the network's chains and its rules in the shared
// chains. It succeeds when they are gone already. When it was the last
// network of a family, the shared chains and the jumps from built-in
// chains go too, leaving the host's firewall as it was before cnmnet;
// the lock makes that safe against a network being made at the same
// time, whose EnsureNetwork makes them again. An IPv6 family whose tools
// are missing is skipped: nothing can have written rules there.
func (f *Firewall) RemoveNetwork(n Network) error {
	if err := n.validate(); err != nil {
		return err
	}
	unlock, err := f.lock()
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	defer unlock()
	for _, fam := range n.families() {
		t, err := f.tools(fam)
		if err != nil {
			continue
		}
		if err := f.sync(t, func(cur state) *plan { return planRemove(cur, n) }); err != nil {
			return fmt.Errorf("network %s: removing %s rules: %w", n.Name, fam, err)
		}
	}
	return nil
}

// sync reads the family's rules, plans the change and applies it: one
// save, and one restore if the plan changes anything.
func (f *Firewall) sync(t tools, planFor func(state) *plan) error {
	cur, err := f.save(t)
	if err != nil {
		return err
	}
	p := planFor(cur)
	if p.empty() {
		return nil
	}
	return f.restore(t, p.render())
}

// SetPorts makes the network's published ports exactly ports, by
// rewriting its DNAT chain in every family of its subnets, and puts back
// whatever else of the network is missing: its chains and rules, the
// shared chains and the jumps from built-in chains, as after a firewall
// reload (firewalld, "iptables -F", another tool's iptables-restore).
// The caller guarantees that no two mappings, of this network or
// another, publish the same host port.
//
// Per family it costs one restore when everything is in place, as a
// port change did before it checked anything: the restore that rewrites
// the DNAT chain also tests ("-C") every other rule of the network, and
// fails as a whole, changing nothing, if one is missing. Only then does
// it read the rules and write everything that is missing with the ports
// (a save and a second restore, as EnsureNetwork). Reading first every
// time would double the cost of every port change for a case that is
// rare; the "-C" lines cost nothing but a lookup in the restore process.
func (f *Firewall) SetPorts(n Network, ports []PortMapping) error {
	if err := n.validate(); err != nil {
		return err
	}
	byFam, err := portsByFamily(n, ports)
	if err != nil {
		return err
	}
	fams := n.families()
	ts, err := f.toolsFor(n, fams)
	if err != nil {
		return err
	}
	unlock, err := f.lock()
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	defer unlock()
	for _, fam := range fams {
		if err := f.setPorts(ts[fam], n, fam, byFam[fam]); err != nil {
			return fmt.Errorf("network %s: %s port mappings: %w", n.Name, fam, err)
		}
	}
	return nil
}

// setPorts rewrites the DNAT chain of one family in a restore that also
// tests the rest of the network's rules, and falls back to a full sync
// when that restore fails. Any failure falls back: one that is not a
// missing rule (the lock timed out, say) meets the full sync again.
func (f *Firewall) setPorts(t tools, n Network, fam family, ports []PortMapping) error {
	if err := f.restore(t, planPorts(n, fam, ports).render()); err == nil {
		return nil
	}
	return f.sync(t, func(cur state) *plan {
		p := planEnsure(cur, n, fam)
		p.table("nat").rewriteOnce(NetworkChains(n.Name).DNAT, lines(dnatRules(n, ports)))
		return p
	})
}

// CheckError lists what Check found missing or out of place.
type CheckError struct {
	Network  string
	Problems []string
}

func (e *CheckError) Error() string {
	return fmt.Sprintf("network %s: %s", e.Network, strings.Join(e.Problems, "; "))
}

// Check verifies that the network's rules and exactly the given ports
// are in place, reading the rules once per family. It returns a
// *CheckError naming each missing rule (e.g. "network net1: DNAT tcp
// 8080 -> 10.1.0.5:80 missing") or unexpected rule in the network's own
// chains.
func (f *Firewall) Check(n Network, ports []PortMapping) error {
	return f.check(n, ports, func(problem) bool { return true })
}

// CheckMissing is Check for what is missing only: a jump from a built-in
// chain, a chain, or a rule of the network or of its ports, as a firewall
// reload leaves it. What EnsureNetwork and SetPorts put back, that is;
// rules that should not be there are left out (PublishedBy finds those
// of endpoints that are gone).
func (f *Firewall) CheckMissing(n Network, ports []PortMapping) error {
	return f.check(n, ports, func(p problem) bool { return p.missing })
}

func (f *Firewall) check(n Network, ports []PortMapping, report func(problem) bool) error {
	if err := n.validate(); err != nil {
		return err
	}
	byFam, err := portsByFamily(n, ports)
	if err != nil {
		return err
	}
	fams := n.families()
	ts, err := f.toolsFor(n, fams)
	if err != nil {
		return err
	}
	var problems []string
	for _, fam := range fams {
		cur, err := f.save(ts[fam])
		if err != nil {
			return fmt.Errorf("network %s: reading %s rules: %w", n.Name, fam, err)
		}
		for _, p := range checkFamily(cur, n, fam, byFam[fam]) {
			if report(p) {
				problems = append(problems, p.text)
			}
		}
	}
	if len(problems) > 0 {
		return &CheckError{Network: n.Name, Problems: problems}
	}
	return nil
}
