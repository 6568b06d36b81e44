package cnm

import (
	"errors"
	"time"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// Hosts of a cluster store. An endpoint of a global network is joined on
// one host at a time (Attachment.Host). Another host cannot look at that
// host's sandboxes, so it takes the endpoint over only from a host known
// to be gone: one that registered itself (HostRecord, kept by the daemon
// that holds the host's lease, cnm-overlayd) and whose lease expired
// (HostLiveKey is gone with it). A host that never registered is never
// taken for gone: its endpoints move when they are left there, or when
// an operator removes them (cnmctl endpoint rm --force).

// HostRecord is a host's registration in the cluster store.
type HostRecord struct {
	Name string `json:"name"`
	// Address is the host's address on the underlay (its tunnel end).
	Address    string    `json:"address,omitempty"`
	Registered time.Time `json:"registered"`
}

// HostKey is the store key of host's registration, which stays when
// the host goes.
func HostKey(host string) string { return "hostinfo/" + host }

// HostLiveKey is the store key that exists while host's lease does: a
// cluster store's daemon writes it under the lease it keeps alive.
func HostLiveKey(host string) string { return "hostlive/" + host }

// here reports whether a is an attachment of this controller's host.
func (c *Controller) here(a *Attachment) bool { return a.Host == c.host }

// hostGone reports whether host registered and its lease expired.
func (c *Controller) hostGone(host string) (bool, error) {
	gone := false
	err := c.store.View(func(tx store.Tx) error {
		if _, err := tx.Get(HostKey(host)); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil // never registered: not known to be gone
			}
			return err
		}
		_, err := tx.Get(HostLiveKey(host))
		if errors.Is(err, store.ErrNotFound) {
			gone = true
			return nil
		}
		return err
	})
	return gone, err
}

// takeOverFromGoneHost leaves ep, joined on another host, in the records
// only, if that host is gone: what the join made there stays there (its
// sandbox, if it ever comes back, and the driver's state, which its own
// repair removes). The reservation is kept: the endpoint joins here with
// its addresses and MAC. An endpoint whose host is not known to be gone
// is left as it is, and the ADD answers that it is in use.
func (c *Controller) takeOverFromGoneHost(nw *Network, ep *Endpoint) error {
	from := ep.Sandbox
	gone, err := c.hostGone(from.Host)
	if err != nil || !gone {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		cur, err := getEndpoint(tx, nw.Name, ep.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.ID != ep.ID || cur.Sandbox == nil || !cur.Sandbox.sameAs(from) || cur.Sandbox.Host != from.Host {
			return nil // it moved or left meanwhile
		}
		before := cur.Sandbox
		cur.Sandbox = nil
		cur.State = StateLeft
		cur.LeftAt = c.now().UTC()
		cur.ExpiresAt = time.Time{}
		return putEndpoint(tx, cur, before)
	})
}

// onHostSuffix names a's host in a message, when it has one.
func onHostSuffix(a *Attachment) string {
	if a.Host == "" {
		return ""
	}
	return " on host " + a.Host
}

// checkIPAMSpans refuses, on a network kept in a cluster store, an IPAM
// plugin that keeps its reservations on one host: two hosts would hand
// out the same address.
func (c *Controller) checkIPAMSpans(conf *NetConf) error {
	if c.host == "" {
		return nil
	}
	return ipamSpansHosts(conf)
}

// ipamSpansHosts refuses a delegated IPAM plugin for conf, a network
// across hosts.
func ipamSpansHosts(conf *NetConf) error {
	if conf.IPAMConf == nil || !conf.IPAMConf.Delegated() {
		return nil
	}
	return invalidConfig("ipam: type %q keeps its reservations on one host, but network %s spans hosts (type %s): use the built-in allocator, ipam type \"cnm\"",
		conf.IPAMConf.Type, conf.Name, conf.Type)
}

// RequireCluster refuses conf, of a type whose networks span hosts,
// without a cluster section naming the cluster store.
func RequireCluster(conf *NetConf) error {
	if conf.Cluster != nil {
		return nil
	}
	return invalidConfig("cluster: network type %q spans hosts: its configuration needs a cluster section naming the cluster store (cluster.etcd.endpoints)", conf.Type)
}
