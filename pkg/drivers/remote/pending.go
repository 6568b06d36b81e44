package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// pendingCall is a call of Leave, DeleteEndpoint or DeleteNetwork that
// the plugin did not answer: the core released its side, the plugin is
// told when it answers again.
type pendingCall struct {
	Target target          `json:"target"`
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args"`
	Error  string          `json:"error"`
	Since  time.Time       `json:"since"`
}

// pendingKey orders a network's owed calls as they must be sent: an
// endpoint's before its network's, Revoke and Leave before Delete.
func pendingKey(nid, eid, method string) string {
	rank := map[string]string{
		"NetworkDriver.RevokeExternalConnectivity": "0",
		"NetworkDriver.Leave":                      "1",
		"NetworkDriver.DeleteEndpoint":             "2",
		"NetworkDriver.DeleteNetwork":              "3",
		"NetworkDriver.DiscoverDelete":             "4",
	}[method]
	if eid == "" {
		eid = "-"
	}
	return "pending/" + nid + "/" + rank + "/" + eid + "/" + method
}

// send makes a call that must not keep the core from releasing its own
// side: a plugin that does not answer gets it later (recorded, and said
// on stderr); one that answers an error, or lacks the method, has had
// its say (said on stderr). Only the store's failure is returned.
func (d *Driver) send(t target, nid, eid, method string, args any) error {
	// What is owed goes first: a DeleteNetwork before the DeleteEndpoint
	// still owed would be refused.
	err := d.flush(context.Background(), nid)
	if err != nil && !errors.Is(err, dockerplugin.ErrUnavailable) {
		return err // the store's
	}
	if err == nil {
		err = d.call(t, method, args)
	} else {
		err = fmt.Errorf("%s: not sent, a call before it is owed: %w", method, err)
	}
	if err == nil || dockerplugin.IsNotFound(err) {
		return nil
	}
	if !errors.Is(err, dockerplugin.ErrUnavailable) {
		fmt.Fprintf(d.log, "%s: %v (ignored: the plugin answered)\n", NetworkType, err)
		return nil
	}
	raw, jerr := json.Marshal(args)
	if jerr != nil {
		return jerr
	}
	p := pendingCall{Target: t, Method: method, Args: raw, Error: err.Error(), Since: time.Now().UTC()}
	fmt.Fprintf(d.log, "%s: %v; released here, the plugin is told when it answers (cnmctl check lists it)\n", NetworkType, err)
	return d.hostStore.Update(func(tx store.Tx) error { return store.PutJSON(tx, pendingKey(nid, eid, method), p) })
}

func (d *Driver) call(t target, method string, args any) error {
	c, err := d.client(t)
	if err != nil {
		return err
	}
	return c.Call(context.Background(), method, args, nil)
}

// pending lists the owed calls of network nid ("": of every network).
func (d *Driver) pending(nid string) (keys []string, calls []pendingCall, err error) {
	prefix := "pending/"
	if nid != "" {
		prefix += nid + "/"
	}
	err = d.hostStore.View(func(tx store.Tx) error {
		return tx.Scan(prefix, func(k string, v []byte) error {
			var p pendingCall
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("pending call %s: %w", k, err)
			}
			keys, calls = append(keys, k), append(calls, p)
			return nil
		})
	})
	return keys, calls, err
}

// flush sends the owed calls of network nid ("": every network), in
// order, dropping each the plugin answered; it stops at the first the
// plugin still does not answer.
func (d *Driver) flush(_ context.Context, nid string) error {
	keys, calls, err := d.pending(nid)
	if err != nil {
		return err
	}
	for i, p := range calls {
		err := d.call(p.Target, p.Method, p.Args)
		if errors.Is(err, dockerplugin.ErrUnavailable) {
			return err
		}
		if err != nil && !dockerplugin.IsNotFound(err) {
			fmt.Fprintf(d.log, "%s: owed call: %v (dropped: the plugin answered)\n", NetworkType, err)
		}
		if err := d.hostStore.Update(func(tx store.Tx) error { return tx.Delete(keys[i]) }); err != nil {
			return err
		}
	}
	return nil
}

// Orphans implements driverapi.Janitor: the calls network nid's plugin
// is owed, and endpoints it was told of that the core no longer has.
func (d *Driver) Orphans(nid string, eids []string) ([]driverapi.Orphan, error) {
	keys, calls, err := d.pending(nid)
	if err != nil {
		return nil, err
	}
	var out []driverapi.Orphan
	for i, p := range calls {
		out = append(out, driverapi.Orphan{Kind: "plugin", Name: strings.TrimPrefix(keys[i], "pending/"),
			Problem: fmt.Sprintf("%s owed to plugin %s since %s: %s", p.Method, p.Target, p.Since.Format(time.RFC3339), p.Error)})
	}
	live := map[string]bool{}
	for _, e := range eids {
		live[e] = true
	}
	err = d.store.View(func(tx store.Tx) error {
		return tx.Scan("endpoints/", func(k string, v []byte) error {
			var e endpoint
			// Of a global network, only what this host's plugin was
			// told last: another host's are that host's to audit.
			if json.Unmarshal(v, &e) != nil || e.Network != nid || e.Host != d.host {
				return nil
			}
			if eid := strings.TrimPrefix(k, "endpoints/"); !live[eid] {
				out = append(out, driverapi.Orphan{Kind: "plugin", Name: "endpoint/" + eid})
			}
			return nil
		})
	})
	return out, err
}

// RemoveOrphans implements driverapi.Janitor: owed calls are sent, and
// orphaned endpoints left and deleted on the plugin.
func (d *Driver) RemoveOrphans(nid string, orphans []driverapi.Orphan) error {
	var errs []error
	for _, o := range orphans {
		if eid, ok := strings.CutPrefix(o.Name, "endpoint/"); ok {
			errs = append(errs, d.Leave(nid, eid), d.DeleteEndpoint(nid, eid))
			continue
		}
	}
	errs = append(errs, d.flush(context.Background(), nid))
	return errors.Join(errs...)
}
