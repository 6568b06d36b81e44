package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Node discovery. The Docker daemon tells a plugin whose connectivity
// spans hosts (ConnectivityScope "global") of each node of its cluster
// as the node joins and leaves: DiscoverNew and DiscoverDelete of type
// NodeDiscovery with the node's address, Self for its own. A CNI plugin
// has no daemon that watches the cluster's membership; what a host knows
// at an invocation is itself. So each host tells its plugin of itself,
// at the address the configuration's advertiseAddress gives, when it
// starts serving a network of that plugin in the cluster store (the
// host's first ADD of the first such network, which runs CreateNetwork
// here), and that it goes when it serves none any more (the last one's
// DeleteNetwork here). Without advertiseAddress nothing is sent. The
// other nodes are the plugin's to learn: a global plugin shares its
// state across hosts itself.

// nodeDiscovery is libnetwork's discoverapi.NodeDiscovery.
const nodeDiscovery = 1

type discoveryNotification struct {
	DiscoveryType int
	DiscoveryData nodeDiscoveryData
}

type nodeDiscoveryData struct {
	Address     string
	BindAddress string
	Self        bool
}

// announced is what a host told its plugin of itself: the address, and
// the networks it serves of that plugin.
type announced struct {
	Target   string   `json:"target"`
	Address  string   `json:"address"`
	Networks []string `json:"networks"`
}

// nodeKey is where a host keeps what it announced to the plugin t.
func nodeKey(t target) string {
	return "nodes/" + targetKey(t)
}

func selfNode(addr string) discoveryNotification {
	return discoveryNotification{DiscoveryType: nodeDiscovery, DiscoveryData: nodeDiscoveryData{Address: addr, Self: true}}
}

func (d *Driver) getAnnounced(t target) (*announced, error) {
	a := &announced{Target: t.String()}
	err := d.hostStore.View(func(tx store.Tx) error { return store.GetJSON(tx, nodeKey(t), a) })
	if errors.Is(err, store.ErrNotFound) {
		return a, nil
	}
	return a, err
}

// discoverNew tells the plugin of this host when network nid is the first
// of the plugin's that it serves (see above). The plugin's refusal does
// not fail the ADD, as the Docker daemon ignores it; it is said on stderr
// and tried again at the next network's first ADD.
func (d *Driver) discoverNew(ctx context.Context, c *dockerplugin.Client, nid string, n *network, conf *netConf) error {
	if d.host == "" || n.Capabilities.ConnectivityScope != driverapi.GlobalScope || conf.AdvertiseAddress == "" {
		return nil
	}
	a, err := d.getAnnounced(n.Target)
	if err != nil {
		return err
	}
	if a.Address == conf.AdvertiseAddress && slices.Contains(a.Networks, nid) {
		return nil
	}
	if a.Address != conf.AdvertiseAddress || len(a.Networks) == 0 {
		if a.Address != "" && a.Address != conf.AdvertiseAddress {
			// This host's address changed: the old node goes.
			d.notify(ctx, c, "NetworkDriver.DiscoverDelete", selfNode(a.Address))
		}
		if !d.notify(ctx, c, "NetworkDriver.DiscoverNew", selfNode(conf.AdvertiseAddress)) {
			return nil
		}
	}
	a.Address, a.Networks = conf.AdvertiseAddress, append(a.Networks, nid)
	return d.hostStore.Update(func(tx store.Tx) error { return store.PutJSON(tx, nodeKey(n.Target), a) })
}

// notify sends a discovery notification, saying on stderr what the plugin
// did not take; it reports whether the plugin took it (or lacks the method).
func (d *Driver) notify(ctx context.Context, c *dockerplugin.Client, method string, note discoveryNotification) bool {
	err := c.Call(ctx, method, note, nil)
	if err == nil || dockerplugin.IsNotFound(err) {
		return true
	}
	fmt.Fprintf(d.log, "%s: %v (ignored, as the Docker daemon does)\n", NetworkType, err)
	return false
}

// discoverDelete tells the plugin that this host goes when network nid
// was the last of the plugin's it served; a plugin that does not answer
// is told later (pending).
func (d *Driver) discoverDelete(nid string, n *network) error {
	if d.host == "" {
		return nil
	}
	a, err := d.getAnnounced(n.Target)
	if err != nil || !slices.Contains(a.Networks, nid) {
		return err
	}
	a.Networks = slices.DeleteFunc(a.Networks, func(s string) bool { return s == nid })
	if len(a.Networks) > 0 {
		return d.hostStore.Update(func(tx store.Tx) error { return store.PutJSON(tx, nodeKey(n.Target), a) })
	}
	raw, err := json.Marshal(selfNode(a.Address))
	if err != nil {
		return err
	}
	if err := d.send(n.Target, nid, "", "NetworkDriver.DiscoverDelete", json.RawMessage(raw)); err != nil {
		return err
	}
	return d.hostStore.Update(func(tx store.Tx) error { return tx.Delete(nodeKey(n.Target)) })
}
