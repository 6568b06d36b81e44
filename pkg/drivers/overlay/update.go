package overlay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ driverapi.NetworkUpdater = (*Driver)(nil)

// UpdateNetwork implements driverapi.NetworkUpdater for this host's part
// of the network, on every ADD here after the first. The cluster's keys
// (vni, vxlanPort, the subnets) are the same on every host and cannot
// change in place: ValidateConfig and the core refuse them. This host's
// are applied: ipMasq and isolation to its firewall; mtu to the bridge,
// the VXLAN device and the veths of new endpoints; and the underlay (an
// address that changed, a reboot on another DHCP lease, another
// interface) to the VXLAN device, made anew with its forwarding entries,
// and to the records of the endpoints joined here, so that the other
// hosts follow them to the new VTEP. The host record is written last,
// so that a plugin killed half-way leaves it as it was and the next ADD
// applies the change again. A change holds the host lock, as a network's
// creation does.
func (d *Driver) UpdateNetwork(nid string, info driverapi.NetworkInfo) (func() error, error) {
	c, err := parseConf(info.Config)
	if err != nil {
		return nil, err
	}
	if _, want, err := d.planUpdate(nid, c); err != nil || want == nil {
		return nil, err
	}
	unlock, err := hostLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Again under the lock: another ADD may have applied it meanwhile.
	cur, want, err := d.planUpdate(nid, c)
	if err != nil || want == nil {
		return nil, err
	}
	if err := d.applyHost(nid, cur, want); err != nil {
		return nil, errors.Join(err, d.applyHost(nid, want, cur))
	}
	return func() error { return d.revertHost(nid, want, cur) }, nil
}

// planUpdate returns this host's record of network nid and what the
// configuration c makes of it; want is nil when that is no change, or
// when the network has no state here (Join says so).
func (d *Driver) planUpdate(nid string, c *netConf) (cur, want *records.HostNetwork, err error) {
	cur, err = d.hostNetwork(nid)
	if err != nil || cur == nil {
		return nil, nil, err
	}
	iface, ip, err := d.underlay(c)
	if err != nil {
		return nil, nil, err
	}
	w := *cur
	w.IPMasq = orDefault(c.IPMasq, true)
	w.Isolation = orDefault(c.Isolation, true)
	w.Underlay, w.LocalIP, w.MTU = iface, ip.String(), c.MTU
	dn, err := w.Dataplane(nid)
	if err != nil {
		return nil, nil, err
	}
	if w.MTU, err = dataplane.EffectiveMTU(dn); err != nil {
		return nil, nil, dataplaneError(err)
	}
	if reflect.DeepEqual(*cur, w) {
		return cur, nil, nil
	}
	return cur, &w, nil
}

// revertHost puts this host's part back from what an UpdateNetwork made
// it, applied, to what it was, prior, unless another ADD has changed it
// since: the latest change wins.
func (d *Driver) revertHost(nid string, applied, prior *records.HostNetwork) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	now, err := d.hostNetwork(nid)
	if err != nil || now == nil || !reflect.DeepEqual(*now, *applied) {
		return err
	}
	return d.applyHost(nid, applied, prior)
}

// applyHost changes the network's host state from what from describes
// to what to does, then records to. A data plane that is gone is left
// to Join, which makes it again from the record.
func (d *Driver) applyHost(nid string, from, to *records.HostNetwork) error {
	if from.Underlay != to.Underlay || from.LocalIP != to.LocalIP || from.MTU != to.MTU {
		if err := d.applyDataplane(nid, from, to); err != nil {
			return err
		}
	}
	if from.IPMasq != to.IPMasq || from.Isolation != to.Isolation {
		if err := d.applyFirewall(to); err != nil {
			return err
		}
	}
	return d.putHostNetwork(nid, to)
}

// applyDataplane gives the bridge and VXLAN device the new MTU and VTEP.
// A new VTEP makes the VXLAN device anew, which drops its entries: they
// are programmed again, and the records of the endpoints joined here
// name the new VTEP.
func (d *Driver) applyDataplane(nid string, from, to *records.HostNetwork) error {
	dn, err := to.Dataplane(nid)
	if err != nil {
		return err
	}
	if _, err := netlink.LinkByName(dn.Bridge); errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err := dataplane.Ensure(dn); err != nil {
		return dataplaneError(err)
	}
	if from.LocalIP == to.LocalIP && from.Underlay == to.Underlay {
		return nil
	}
	if err := d.reconcilePeers(nid, to, dn); err != nil {
		return err
	}
	return d.moveVTEP(nid, to.Host, net.ParseIP(to.LocalIP))
}

// moveVTEP rewrites the records of network nid's endpoints joined on
// host to name vtep: every other host's daemon then sends them there.
func (d *Driver) moveVTEP(nid, host string, vtep net.IP) error {
	err := d.store.Update(func(tx store.Tx) error {
		moved := map[string]records.Peer{}
		if err := tx.Scan(records.PeerPrefix(nid), func(k string, v []byte) error {
			p := records.Peer{}
			if json.Unmarshal(v, &p) == nil && p.Host == host && p.VTEP != vtep.String() {
				p.VTEP = vtep.String()
				moved[strings.TrimPrefix(k, records.PeerPrefix(nid))] = p
			}
			return nil
		}); err != nil {
			return err
		}
		for eid, p := range moved {
			if err := store.PutJSON(tx, records.PeerKey(nid, eid), p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("move the endpoints of overlay network %s on this host to VTEP %s: %w", nid, vtep, err)
	}
	return nil
}

// applyFirewall writes the network's rules as to has them: masquerade
// and isolation on or off. Without iptables only a network that needs
// neither can do.
func (d *Driver) applyFirewall(to *records.HostNetwork) error {
	if _, err := d.firewall(); err != nil && !to.IPMasq && !to.Isolation {
		return nil
	}
	return d.ensureFirewall(to)
}
