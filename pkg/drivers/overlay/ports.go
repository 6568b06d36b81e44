package overlay

import (
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Published ports (the portMappings capability) are the host's: an
// overlay endpoint's ports are published on the host it is joined on,
// reserved in this host's part of the store, and DNATed to the endpoint
// through the network's bridge there. They move with the endpoint as its
// next ADD asks for them again.

// ports is the book of the published ports of this host's endpoints.
func (d *Driver) ports() hostports.Book {
	return hostports.Book{Store: d.hostStore, NetworkName: func(tx store.Tx, nid string) string {
		h := &records.HostNetwork{}
		if store.GetJSON(tx, records.HostNetworkKey(nid), h) != nil {
			return ""
		}
		return h.Name
	}}
}

// syncPorts makes the network's DNAT rules here exactly the published
// ports of its endpoints but those left out, and the bridge's
// route_localnet on exactly while one of them is reachable on
// 127.0.0.1, under the host lock so that the last write is of the
// latest state.
func (d *Driver) syncPorts(nid string, h *records.HostNetwork, leftOut ...string) error {
	return d.withLock(func() error { return d.syncPortsLocked(nid, h, leftOut...) })
}

func (d *Driver) syncPortsLocked(nid string, h *records.HostNetwork, leftOut ...string) error {
	mappings, err := d.ports().Network(nid, leftOut...)
	if err != nil {
		return err
	}
	fw, err := d.firewall()
	if err != nil {
		return err
	}
	return hostports.Publish(fw, h.Firewall(), mappings, false)
}

// releasePorts rewrites the network's port rules without the endpoint's
// ports, then forgets them: in that order, so that a process killed in
// between leaves the record for the next DEL to finish with.
func (d *Driver) releasePorts(nid string, h *records.HostNetwork, eid string) error {
	r, err := d.ports().Of(eid)
	if err != nil || len(r.Ports) == 0 {
		return err
	}
	if h != nil {
		if err := d.syncPorts(nid, h, eid); err != nil {
			return err
		}
	}
	return d.ports().Forget(eid)
}
