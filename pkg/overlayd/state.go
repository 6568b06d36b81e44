package overlayd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
)

// space is one prefix of the cluster store the daemon lists and watches.
type space int

const (
	spacePeers        space = iota // drivers/cnm-overlay/peers/<nid>/<eid>
	spaceNetworks                  // drivers/cnm-overlay/networks/<nid>
	spaceHostNetworks              // hosts/<host>/hostdrivers/cnm-overlay/networks/<nid>
	spaceHostInfo                  // hostinfo/<host>
	spaceHostLive                  // hostlive/<host>
	numSpaces
)

var spaceNames = [numSpaces]string{"peers", "networks", "hostnetworks", "hostinfo", "hostlive"}

func (s space) String() string { return spaceNames[s] }

// storePrefixes are the spaces' store keys for host.
func storePrefixes(host string) [numSpaces]string {
	return [numSpaces]string{
		spacePeers:        records.StorePrefix + records.PeersPrefix,
		spaceNetworks:     records.StorePrefix + records.NetworkKey(""),
		spaceHostNetworks: "hosts/" + host + "/hostdrivers/" + records.NetworkType + "/" + records.HostNetworkKey(""),
		spaceHostInfo:     cnm.HostKey(""),
		spaceHostLive:     cnm.HostLiveKey(""),
	}
}

// state is what the daemon knows of the cluster store: one listing and
// the watch events since.
type state struct {
	host     string
	nets     map[string]records.Network
	hostNets map[string]records.HostNetwork
	// unreadable are the networks whose cluster record is there but
	// does not decode: not deleted, so never removed.
	unreadable map[string]bool
	peers      map[string]map[string]records.Peer // by network id, endpoint id
	registered map[string]bool
	live       map[string]bool
}

func newState(host string) *state {
	return &state{
		host:       host,
		nets:       map[string]records.Network{},
		hostNets:   map[string]records.HostNetwork{},
		unreadable: map[string]bool{},
		peers:      map[string]map[string]records.Peer{},
		registered: map[string]bool{},
		live:       map[string]bool{},
	}
}

// affected says which networks a change may have changed the peers of.
type affected struct {
	all  bool
	nets map[string]bool
}

func (a *affected) add(nid string) {
	if a.nets == nil {
		a.nets = map[string]bool{}
	}
	a.nets[nid] = true
}

// apply records a put (value non-nil) or a delete of key, relative to
// sp's prefix. A value that does not decode counts as absent, and is
// returned as an error for the log.
func (s *state) apply(sp space, key string, value []byte, a *affected) error {
	var decodeErr error
	decode := func(v any) bool {
		if value == nil {
			return false
		}
		if err := json.Unmarshal(value, v); err != nil {
			decodeErr = fmt.Errorf("%s %s: %w", sp, key, err)
			return false
		}
		return true
	}
	switch sp {
	case spacePeers:
		nid, eid, ok := strings.Cut(key, "/")
		if !ok || nid == "" || eid == "" || strings.Contains(eid, "/") {
			return nil // not a peer key
		}
		var p records.Peer
		if decode(&p) {
			if s.peers[nid] == nil {
				s.peers[nid] = map[string]records.Peer{}
			}
			s.peers[nid][eid] = p
		} else {
			delete(s.peers[nid], eid)
			if len(s.peers[nid]) == 0 {
				delete(s.peers, nid)
			}
		}
		a.add(nid)
	case spaceNetworks:
		var n records.Network
		if decode(&n) {
			s.nets[key] = n
		} else {
			delete(s.nets, key)
		}
		if decodeErr != nil {
			s.unreadable[key] = true
		} else {
			delete(s.unreadable, key)
		}
		a.add(key)
	case spaceHostNetworks:
		var h records.HostNetwork
		if decode(&h) {
			s.hostNets[key] = h
		} else {
			delete(s.hostNets, key)
		}
		a.add(key)
	case spaceHostInfo:
		if value != nil {
			s.registered[key] = true
		} else {
			delete(s.registered, key)
		}
		a.all = true
	case spaceHostLive:
		if value != nil {
			s.live[key] = true
		} else {
			delete(s.live, key)
		}
		a.all = true
	}
	return decodeErr
}

// gone says whether host is known to be gone: it registered and its
// lease expired. A host that never registered never is.
func (s *state) gone(host string) bool { return s.registered[host] && !s.live[host] }

// network is network nid's data plane on this host; ok is false when it
// is not this host's (either record missing).
func (s *state) network(nid string) (n dataplane.Network, ok bool, err error) {
	rec, ok1 := s.nets[nid]
	hn, ok2 := s.hostNets[nid]
	if !ok1 || !ok2 {
		return n, false, nil
	}
	n = dataplane.Network{ID: nid, Bridge: hn.Bridge, VXLAN: hn.VXLAN, VNI: rec.VNI, Port: rec.Port,
		Underlay: hn.Underlay, LocalIP: net.ParseIP(hn.LocalIP), MTU: hn.MTU}
	if n.LocalIP == nil {
		return n, false, fmt.Errorf("network %s: host record: localIP %q is not an address", nid, hn.LocalIP)
	}
	for _, g := range rec.Gateways {
		ip, ipn, err := net.ParseCIDR(g)
		if err != nil {
			return n, false, fmt.Errorf("network %s: gateway %q: %w", nid, g, err)
		}
		ipn.IP = ip
		n.Gateways = append(n.Gateways, ipn)
	}
	return n, true, nil
}

// activeNetworks are the ids of the networks on this host, sorted.
func (s *state) activeNetworks() []string {
	var ids []string
	for nid := range s.hostNets {
		if _, ok := s.nets[nid]; ok {
			ids = append(ids, nid)
		}
	}
	slices.Sort(ids)
	return ids
}

// deleted says whether network nid has a host record here and no
// cluster record: the plugin writes the cluster record first (in a
// transaction of its own) and the host record after, and deletes them
// in the other order, so that is a network deleted on another host. A
// cluster record that is there but does not decode is not deleted.
// The watches of the two spaces are not ordered with each other, so
// the daemon reads both records again before it acts.
func (s *state) deleted(nid string) bool {
	_, host := s.hostNets[nid]
	_, cluster := s.nets[nid]
	return host && !cluster && !s.unreadable[nid]
}

// deletedNetworks are the ids of the networks deleted returns true for,
// sorted.
func (s *state) deletedNetworks() []string {
	var ids []string
	for nid := range s.hostNets {
		if s.deleted(nid) {
			ids = append(ids, nid)
		}
	}
	slices.Sort(ids)
	return ids
}

// wanted are the peers network nid must have programmed on this host,
// by endpoint id: the endpoints joined on other hosts not known to be
// gone. A record that cannot be programmed is left out and reported.
func (s *state) wanted(nid string, local net.IP) (map[string]dataplane.Peer, []error) {
	want := map[string]dataplane.Peer{}
	var errs []error
	for eid, rec := range s.peers[nid] {
		if rec.Host == s.host || s.gone(rec.Host) {
			continue
		}
		p, err := toPeer(rec)
		if err == nil && p.VTEP.Equal(local) {
			err = fmt.Errorf("vtep %v is this host's own, but the record names host %q", p.VTEP, rec.Host)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s of network %s: %w", eid, nid, err))
			continue
		}
		want[eid] = p
	}
	return want, errs
}

// toPeer is a record as the data plane programs it.
func toPeer(rec records.Peer) (dataplane.Peer, error) {
	mac, err := net.ParseMAC(rec.MAC)
	if err != nil {
		return dataplane.Peer{}, fmt.Errorf("mac: %w", err)
	}
	vtep := net.ParseIP(rec.VTEP)
	if vtep == nil {
		return dataplane.Peer{}, fmt.Errorf("vtep %q is not an address", rec.VTEP)
	}
	if len(rec.IPs) > 0 && len(rec.ParseIPs()) != len(rec.IPs) {
		return dataplane.Peer{}, fmt.Errorf("ips %q: not all addresses", rec.IPs)
	}
	return dataplane.Peer{MAC: mac, IPs: rec.ParseIPs(), VTEP: vtep}, nil
}

// samePeer says whether a and b program the same entries.
func samePeer(a, b dataplane.Peer) bool {
	return bytes.Equal(a.MAC, b.MAC) && a.VTEP.Equal(b.VTEP) && len(dropped(a, b)) == 0 && len(dropped(b, a)) == 0
}

// dropped are the addresses of old that new does not have.
func dropped(old, new dataplane.Peer) []net.IP {
	var out []net.IP
	for _, ip := range old.IPs {
		if !slices.ContainsFunc(new.IPs, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}
