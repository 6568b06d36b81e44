package cnm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Release is the address release of a deleted endpoint that its
// delegated IPAM plugin could not do (the plugin is not installed, or
// failed). The endpoint is gone all the same, so that DEL, cnmctl and GC
// never stop at a plugin; the release is kept under
// releases/<network>/<endpoint ID> with what calling the plugin again
// needs, retried by GC (CNI GC and cnmctl gc) and reported by cnmctl check.
type Release struct {
	Network  string `json:"network"`
	Endpoint string `json:"endpoint"`
	// ID is the endpoint's ID: the plugin's CNI_CONTAINERID.
	ID        string    `json:"id"`
	IPAM      string    `json:"ipam"`
	Addresses []Address `json:"addresses,omitempty"`
	// Pools are the pools of a deleted network an IPAM driver has to
	// give back (Endpoint is then "", ID the network's).
	Pools []Pool `json:"pools,omitempty"`
	// NetConf is the plugin's stdin, Args its CNI_ARGS.
	NetConf json.RawMessage `json:"netConf"`
	Args    string          `json:"args,omitempty"`
	Since   time.Time       `json:"since"`
	// Error is why the latest attempt failed.
	Error string `json:"error"`
}

func releasePrefix(network string) string  { return "releases/" + network + "/" }
func releaseKey(network, id string) string { return releasePrefix(network) + id }

// releaseOf is the delegated release of ep's addresses, as req asks for it.
func (c *Controller) releaseOf(req *Request, nw *Network, ep *Endpoint) *Release {
	conf := json.RawMessage(req.Conf.Raw)
	if !json.Valid(conf) || c.ipamDriver(ep.IPAM) != nil && len(nw.Config) > 0 {
		// An IPAM driver's plugin is the one that served the network.
		conf = nw.Config
	}
	return &Release{
		Network:   nw.Name,
		Endpoint:  ep.Name,
		ID:        ep.ID,
		IPAM:      ep.IPAM,
		Addresses: ep.Addresses,
		NetConf:   conf,
		Args:      releaseArgs(req.RawArgs),
		Since:     c.now().UTC(),
	}
}

// call runs the plugin's DEL with netconf; netns is the sandbox for the
// first attempt, at DEL, and "" for retries, when it is likely gone.
func (r *Release) call(ctx context.Context, netconf []byte, path, netns string) error {
	d := ipam.Delegate{Type: r.IPAM, NetConf: netconf, Path: path, ContainerID: r.ID, IfName: delegateIfName, NetNS: netns, Args: r.Args}
	if err := d.Del(ctx); err != nil {
		return fmt.Errorf("ipam %s: release addresses of endpoint %s: %w", r.IPAM, r.Endpoint, err)
	}
	return nil
}

// releaseArgs is CNI_ARGS for a release: the runtime's well-formed pairs
// but static addresses, which mean nothing to a release and which a
// plugin refuses when they do not parse (host-local reads IP even on
// DEL), marked so the plugin ignores cnmnet's keys.
func releaseArgs(raw string) string {
	var kept []string
	for _, kv := range strings.Split(raw, ";") {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || k == "IP" {
			continue
		}
		kept = append(kept, kv)
	}
	return delegateArgs(strings.Join(kept, ";"))
}

// pendingReleases lists the pending releases of network, or of every
// network when network is "", by network and endpoint.
func (c *Controller) pendingReleases(network string) ([]*Release, error) {
	prefix := "releases/"
	if network != "" {
		prefix = releasePrefix(network)
	}
	var out []*Release
	err := c.store.View(func(tx store.Tx) error {
		return tx.Scan(prefix, func(k string, v []byte) error {
			r := &Release{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("%w: %s: %v", store.ErrCorrupt, k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Network != out[j].Network {
			return out[i].Network < out[j].Network
		}
		return out[i].Endpoint < out[j].Endpoint
	})
	return out, err
}

// Release outcomes.
const (
	released = "released"
	dropped  = "dropped"
)

// retryRelease calls the plugin of a pending release again and forgets
// the release once it is done. current is the network's configuration
// now, nil when the network is gone: when the recorded configuration
// fails and current names the same plugin differently (the operator
// fixed it), current is tried too. A release whose plugin is not
// installed is dropped when current names another IPAM type, or when the
// network is gone: nothing could ever release it (and a mistyped type
// never held anything). It returns what happened and why, or the error,
// with the release kept.
func (c *Controller) retryRelease(ctx context.Context, r *Release, current *NetConf, path string) (outcome, why string, err error) {
	err = c.callRelease(ctx, r, r.NetConf, path, "")
	if err == nil {
		return released, "", c.forgetRelease(r)
	}
	missing := errors.Is(err, ipam.ErrPluginNotFound)
	if current == nil {
		if missing {
			why = fmt.Sprintf("ipam plugin %s is not installed and network %s is gone", r.IPAM, r.Network)
			return dropped, why, c.forgetRelease(r)
		}
	} else if now, known := ipamTypeOf(current.Raw); known {
		switch {
		case now == r.IPAM && !bytes.Equal(current.Raw, r.NetConf):
			if err = c.callRelease(ctx, r, current.Raw, path, ""); err == nil {
				return released, "", c.forgetRelease(r)
			}
		case now != r.IPAM && missing:
			why = fmt.Sprintf("ipam plugin %s is not installed and network %s now uses %s", r.IPAM, r.Network, describeIPAM(now))
			return dropped, why, c.forgetRelease(r)
		}
	}
	r.Error = err.Error()
	if uerr := c.store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, releaseKey(r.Network, r.ID), r)
	}); uerr != nil {
		err = errors.Join(err, uerr)
	}
	return "", "", err
}

func (c *Controller) forgetRelease(r *Release) error {
	return c.store.Update(func(tx store.Tx) error { return tx.Delete(releaseKey(r.Network, r.ID)) })
}

// retryReleases retries the pending releases of network with its
// configuration now (nil if unknown), reporting every one still pending.
func (c *Controller) retryReleases(ctx context.Context, network string, current *NetConf, path string) error {
	rels, err := c.pendingReleases(network)
	if err != nil {
		return err
	}
	var errs errorList
	for _, r := range rels {
		if _, _, err := c.retryRelease(ctx, r, current, path); err != nil {
			errs.add(fmt.Errorf("pending since %s: %w", r.Since.Format(time.RFC3339), err))
		}
	}
	return errors.Join(errs...)
}

// ipamTypeOf is the ipam type a configuration names: "" for none, the
// built-in type for a section without one; known is false when the
// section cannot be read.
func ipamTypeOf(raw []byte) (typ string, known bool) {
	var top struct {
		IPAM *struct {
			Type string `json:"type"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return "", false
	}
	switch {
	case top.IPAM == nil:
		return "", true
	case top.IPAM.Type == "":
		return ipam.BuiltinType, true
	}
	return top.IPAM.Type, true
}

func describeIPAM(typ string) string {
	if typ == "" {
		return "no ipam"
	}
	return "ipam " + typ
}

// storedConf is the configuration of network's latest ADD, as far as a
// release needs it (its raw bytes); nil when the network is gone, and
// no bytes when its record cannot be read.
func (c *Controller) storedConf(network string) *NetConf {
	var nw *Network
	err := c.store.View(func(tx store.Tx) error {
		var err error
		nw, err = getNetwork(tx, network)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return &NetConf{}
	}
	return &NetConf{Raw: nw.Config}
}

// collectReleases retries the pending releases of every network for
// Collect (with dryRun, only lists them).
func (c *Controller) collectReleases(ctx context.Context, dryRun bool) ([]Collected, error) {
	rels, err := c.pendingReleases("")
	if err != nil {
		return nil, err
	}
	var out []Collected
	var errs errorList
	for _, r := range rels {
		col := Collected{Network: r.Network, Endpoint: r.Endpoint, Action: released,
			Reason: fmt.Sprintf("address release of a deleted endpoint by ipam %s, pending since %s", r.IPAM, r.Since.Format(time.RFC3339))}
		if !dryRun {
			outcome, why, err := c.retryRelease(ctx, r, c.storedConf(r.Network), c.cniPath)
			if err != nil {
				errs.add(err)
				continue
			}
			col.Action = outcome
			if why != "" {
				col.Reason = why
			}
		}
		out = append(out, col)
	}
	return out, errors.Join(errs...)
}

// auditReleases reports the pending releases of every network for Audit;
// with repair it retries them, and one still pending stays unrepaired.
func (c *Controller) auditReleases(ctx context.Context, repair bool) ([]Finding, error) {
	rels, err := c.pendingReleases("")
	if err != nil {
		return nil, err
	}
	var out []Finding
	for _, r := range rels {
		f := Finding{Network: r.Network, Kind: "release", Object: r.Endpoint}
		if repair {
			_, why, err := c.retryRelease(ctx, r, c.storedConf(r.Network), c.cniPath)
			f.Repaired = err == nil
			if why != "" {
				r.Error += "; " + why
			}
		}
		f.Problem = fmt.Sprintf("addresses of the deleted endpoint (ID %s) not released by ipam %s since %s: %s",
			r.ID, r.IPAM, r.Since.Format(time.RFC3339), r.Error)
		out = append(out, f)
	}
	return out, nil
}
