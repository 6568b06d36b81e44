package hostports

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/endpointkit"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Record is what a driver keeps of a joined endpoint that publishes
// ports; an endpoint that publishes none has no record.
type Record struct {
	Network  string `json:"network"`  // nid
	Endpoint string `json:"endpoint"` // eid, named in the rules' comments
	Ports    []Port `json:"ports"`
	// Name is the endpoint's name (cnmctl endpoint ls), for the message
	// that refuses its ports to another endpoint.
	Name string `json:"name,omitempty"`
}

// Mappings are the record's ports as the firewall takes them.
func (r *Record) Mappings() []firewall.PortMapping {
	var out []firewall.PortMapping
	for _, p := range r.Ports {
		out = append(out, firewall.PortMapping{
			Protocol:      p.Protocol,
			HostIP:        net.ParseIP(p.HostIP),
			HostPort:      p.HostPort,
			ContainerIP:   net.ParseIP(p.ContainerIP),
			ContainerPort: p.ContainerPort,
			Endpoint:      r.Endpoint,
		})
	}
	return out
}

// Book keeps the records and the host ports they reserve in a driver's
// store: one host's, as a port is published on one host.
type Book struct {
	Store store.Store
	// NetworkName names network nid in the message refusing a port,
	// "" when it cannot.
	NetworkName func(tx store.Tx, nid string) string
}

func recordKey(eid string) string { return "endpoints/" + eid }

// hostPortKey reserves a host port; the port comes before the address so
// that one scan finds every address a port is bound on.
func hostPortKey(p Port) string {
	return "hostports/" + p.Protocol + "/" + strconv.Itoa(p.HostPort) + "/" + hostIPKey(p)
}

func hostIPKey(p Port) string {
	if p.HostIP != "" {
		return p.HostIP
	}
	return "any" + family(net.ParseIP(p.ContainerIP))
}

// Reserve records the endpoint's published ports, refusing (error
// CodePortInUse) any host port another endpoint already publishes on an
// overlapping address. No ports: nothing is written.
func (b Book) Reserve(nid, eid, name string, ports []Port) error {
	if len(ports) == 0 {
		return nil
	}
	return b.Store.Update(func(tx store.Tx) error {
		for _, p := range ports {
			if holder, err := portHolder(tx, p); err != nil {
				return err
			} else if holder != "" && holder != eid {
				return types.NewError(driverapi.CodePortInUse, fmt.Sprintf(
					"runtimeConfig.portMappings: %s port %d on %s is already published by endpoint %s",
					p.Protocol, p.HostPort, hostIPKey(p), b.endpointName(tx, holder)), "")
			}
			if err := tx.Put(hostPortKey(p), []byte(eid)); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, recordKey(eid), Record{Network: nid, Endpoint: eid, Ports: ports, Name: name})
	})
}

// endpointName names endpoint eid as cnmctl endpoint ls does, "<name> of
// network <network>", from its record; by its ID if the record predates
// names.
func (b Book) endpointName(tx store.Tx, eid string) string {
	r := &Record{}
	if store.GetJSON(tx, recordKey(eid), r) != nil || r.Name == "" {
		return "with ID " + eid
	}
	if b.NetworkName == nil {
		return r.Name
	}
	if n := b.NetworkName(tx, r.Network); n != "" {
		return r.Name + " of network " + n
	}
	return r.Name
}

// portHolder returns the endpoint publishing p's host port on an address
// that overlaps p's, or "".
func portHolder(tx store.Tx, p Port) (string, error) {
	holder := ""
	prefix := "hostports/" + p.Protocol + "/" + strconv.Itoa(p.HostPort) + "/"
	mine := hostIPKey(p)
	fam := family(net.ParseIP(p.ContainerIP))
	err := tx.Scan(prefix, func(k string, v []byte) error {
		theirs := k[len(prefix):]
		if theirs == mine || theirs == "any"+fam || mine == "any"+fam && family(net.ParseIP(theirs)) == fam {
			holder = string(v)
		}
		return nil
	})
	return holder, err
}

// Of returns endpoint eid's record, an empty one when it publishes none.
func (b Book) Of(eid string) (*Record, error) {
	r := &Record{}
	err := b.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, recordKey(eid), r) })
	if errors.Is(err, store.ErrNotFound) {
		return &Record{}, nil
	}
	return r, err
}

// Forget deletes endpoint eid's record and the host ports it still
// holds. Call it once the firewall no longer publishes them, so that a
// process killed in between leaves the record for the next try.
func (b Book) Forget(eid string) error {
	return b.Store.Update(func(tx store.Tx) error {
		r := &Record{}
		err := store.GetJSON(tx, recordKey(eid), r)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range r.Ports {
			if holder, err := tx.Get(hostPortKey(p)); err == nil && string(holder) == eid {
				if err := tx.Delete(hostPortKey(p)); err != nil {
					return err
				}
			}
		}
		return tx.Delete(recordKey(eid))
	})
}

// Network lists the published ports of the endpoints of network nid but
// those left out.
func (b Book) Network(nid string, leftOut ...string) ([]firewall.PortMapping, error) {
	var out []firewall.PortMapping
	err := b.Store.View(func(tx store.Tx) error {
		return tx.Scan("endpoints/", func(_ string, v []byte) error {
			r := &Record{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("%w: endpoint ports record: %v", store.ErrCorrupt, err)
			}
			if r.Network == nid && !slices.Contains(leftOut, r.Endpoint) {
				out = append(out, r.Mappings()...)
			}
			return nil
		})
	})
	return out, err
}

// Owners maps the keys that hold host ports for network nid (records
// and reservations) to their endpoint: what a janitor weighs against the
// endpoints there are. A reservation whose endpoint has no record at all
// is counted in too.
func (b Book) Owners(nid string) (map[string]string, error) {
	owners := map[string]string{}
	networkOf := map[string]string{}
	err := b.Store.View(func(tx store.Tx) error {
		if err := tx.Scan("endpoints/", func(k string, v []byte) error {
			r := &Record{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("%w: endpoint ports record %s: %v", store.ErrCorrupt, k, err)
			}
			eid := strings.TrimPrefix(k, "endpoints/")
			networkOf[eid] = r.Network
			if r.Network == nid {
				owners[k] = eid
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Scan("hostports/", func(k string, v []byte) error {
			if net, ok := networkOf[string(v)]; !ok || net == nid {
				owners[k] = string(v)
			}
			return nil
		})
	})
	return owners, err
}

// Drop deletes one key Owners listed.
func (b Book) Drop(key string) error {
	return b.Store.Update(func(tx store.Tx) error { return tx.Delete(key) })
}

// OnLoopback reports whether a mapping publishes an IPv4 port on the
// host's 127.0.0.0/8: bound to every address, or to a loopback one. The
// bridge then needs route_localnet.
func OnLoopback(mappings []firewall.PortMapping) bool {
	for _, m := range mappings {
		if m.ContainerIP.To4() == nil {
			continue
		}
		if m.HostIP == nil || m.HostIP.IsUnspecified() || m.HostIP.IsLoopback() {
			return true
		}
	}
	return false
}

// PortSetter writes a network's published ports (pkg/firewall).
type PortSetter interface {
	SetPorts(firewall.Network, []firewall.PortMapping) error
}

// Publish makes network n's DNAT rules exactly mappings, with its
// bridge's route_localnet on exactly while one of them is reachable on
// 127.0.0.1: switched on before the rules, off after, unless
// keepLocalnet (a bridge cnmnet adopted, whose setting may be its
// owner's: turned on when needed, never off; CNM-INPUT still guards it).
func Publish(fw PortSetter, n firewall.Network, mappings []firewall.PortMapping, keepLocalnet bool) error {
	localnet := OnLoopback(mappings)
	if localnet {
		if err := endpointkit.SetRouteLocalnet(n.Bridge, true); err != nil {
			return err
		}
	}
	if err := fw.SetPorts(n, mappings); err != nil {
		return fmt.Errorf("publish ports of network %s: %w", n.Name, err)
	}
	if !localnet && !keepLocalnet {
		return endpointkit.SetRouteLocalnet(n.Bridge, false)
	}
	return nil
}
