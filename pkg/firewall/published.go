package firewall

import (
	"fmt"
	"sort"
	"strings"
)

// PublishedBy lists the endpoints named in the comments of the network's
// published-port rules, as the host has them: for finding rules whose
// endpoint is gone (cnmctl check).
func (f *Firewall) PublishedBy(n Network) ([]string, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	fams := n.families()
	ts, err := f.toolsFor(n, fams)
	if err != nil {
		return nil, err
	}
	chain := NetworkChains(n.Name).DNAT
	prefix := networkComment(n.Name) + "/"
	seen := map[string]bool{}
	for _, fam := range fams {
		cur, err := f.save(ts[fam])
		if err != nil {
			return nil, fmt.Errorf("network %s: reading %s rules: %w", n.Name, fam, err)
		}
		for _, r := range cur.table("nat").rules[chain] {
			if ep, ok := strings.CutPrefix(r.comment(), prefix); ok {
				seen[ep] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for ep := range seen {
		out = append(out, ep)
	}
	sort.Strings(out)
	return out, nil
}
