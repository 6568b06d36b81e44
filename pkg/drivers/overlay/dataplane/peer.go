package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/nldump"
)

// Peer is a remote endpoint of the network: its MAC, its addresses and
// the VTEP of the host it runs on. The MAC follows the endpoint from
// host to host, so a move only changes VTEP.
type Peer struct {
	MAC  net.HardwareAddr
	IPs  []net.IP
	VTEP net.IP
}

func (p Peer) String() string {
	ips := make([]string, len(p.IPs))
	for i, ip := range p.IPs {
		ips[i] = ip.String()
	}
	return fmt.Sprintf("%s [%s] at %v", p.MAC, strings.Join(ips, " "), p.VTEP)
}

// devices are the network's links, checked to be its own.
type devices struct {
	n  Network
	br netlink.Link // nil when the bridge is gone
	vx *netlink.Vxlan
}

// open finds the network's links. It returns nil when the VXLAN device
// is gone, and refuses links of the names that are not the network's:
// entries are only ever changed on the network's own devices.
func open(n Network) (*devices, error) {
	if err := n.validateNames(); err != nil {
		return nil, err
	}
	link, err := lookup(n.VXLAN)
	if err != nil || link == nil {
		return nil, err
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok || !ownedBy(link, n.ID) {
		return nil, conflict("vxlan: %s is not network %s's VXLAN device (a %s, alias %q)", n.VXLAN, n.ID, link.Type(), link.Attrs().Alias)
	}
	d := &devices{n: n, vx: vx}
	if d.br, err = lookup(n.Bridge); err != nil {
		return nil, err
	}
	if d.br != nil && (!ownedBy(d.br, n.ID) || d.br.Attrs().Index != vx.MasterIndex) {
		d.br = nil // the learnt entries to purge are the network's bridge's only
	}
	return d, nil
}

// mustOpen is open for the calls that program entries.
func mustOpen(n Network) (*devices, error) {
	d, err := open(n)
	if err == nil && d == nil {
		err = fmt.Errorf("vxlan %s of network %s not found: Ensure the network first", n.VXLAN, n.ID)
	}
	return d, err
}

func unicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&0x01 == 0 && !bytes.Equal(mac, make(net.HardwareAddr, 6))
}

// checkPeer refuses a peer the device cannot or must not carry.
func (d *devices) checkPeer(p Peer) error {
	if !unicastMAC(p.MAC) {
		return invalid("peer mac: %v is not a unicast Ethernet MAC", p.MAC)
	}
	if !usableUnicast(p.VTEP) {
		return invalid("peer %s: vtep %v is not a unicast address", p.MAC, p.VTEP)
	}
	local := d.vx.SrcAddr
	if (p.VTEP.To4() == nil) != (local.To4() == nil) {
		return invalid("peer %s: vtep %v is not of the address family of this host's VTEP %v", p.MAC, p.VTEP, local)
	}
	if p.VTEP.Equal(local) {
		return invalid("peer %s: vtep %v is this host's own; a local endpoint is no peer", p.MAC, p.VTEP)
	}
	for _, ip := range p.IPs {
		if !usableUnicast(ip) {
			return invalid("peer %s: address %v is not a unicast address", p.MAC, ip)
		}
	}
	return nil
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// setFDB points mac at vtep, replacing the destination of an entry the
// MAC has (NLM_F_REPLACE: no moment without one when a peer moves).
func (d *devices) setFDB(mac net.HardwareAddr, vtep net.IP) error {
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: d.vx.Index, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: mac, IP: vtep})
	if err != nil {
		return fmt.Errorf("set FDB entry %s → %s on %s: %w", mac, vtep, d.vx.Name, err)
	}
	return nil
}

// delFDB removes the destination dst of mac's entry (the entry with its
// last one). The kernel needs the destination: a delete without one is
// refused.
func (d *devices) delFDB(mac net.HardwareAddr, dst net.IP) error {
	err := netlink.NeighDel(&netlink.Neigh{LinkIndex: d.vx.Index, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_SELF, HardwareAddr: mac, IP: dst})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete FDB entry %s → %s on %s: %w", mac, dst, d.vx.Name, err)
	}
	return nil
}

func (d *devices) setNeigh(ip net.IP, mac net.HardwareAddr) error {
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: d.vx.Index, Family: family(ip),
		State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: mac})
	if err != nil {
		return fmt.Errorf("set neighbour %s → %s on %s: %w", ip, mac, d.vx.Name, err)
	}
	return nil
}

func (d *devices) delNeigh(ip net.IP) error {
	err := netlink.NeighDel(&netlink.Neigh{LinkIndex: d.vx.Index, Family: family(ip), IP: ip})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete neighbour %s on %s: %w", ip, d.vx.Name, err)
	}
	return nil
}

// learnt says whether a bridge FDB entry is one the bridge learnt from
// traffic, not a local, static or externally learnt one.
func learnt(e *netlink.Neigh) bool {
	return e.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) == 0 &&
		e.Flags&(netlink.NTF_EXT_LEARNED|netlink.NTF_STICKY) == 0
}

// delBridgeFDB removes an entry of the bridge's (on the port it is on).
func (d *devices) delBridgeFDB(e *netlink.Neigh) error {
	err := netlink.NeighDel(&netlink.Neigh{LinkIndex: e.LinkIndex, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_MASTER, HardwareAddr: e.HardwareAddr, Vlan: e.Vlan})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("purge learnt entry %s of bridge %s: %w", e.HardwareAddr, d.n.Bridge, err)
	}
	return nil
}

// purgeLearnt removes the entry the bridge learnt for mac, when it is on
// the VXLAN port (onTunnel) or on a local port (!onTunnel). A learnt
// entry outlives the endpoint's move by up to the bridge's ageing time
// (300 s) and sends a silent endpoint's traffic to the wrong port.
func (d *devices) purgeLearnt(mac net.HardwareAddr, onTunnel bool) error {
	if d.br == nil {
		return nil
	}
	e, err := getBridgeFDB(d.br.Attrs().Index, mac)
	if err != nil {
		return fmt.Errorf("look up %s in bridge %s: %w", mac, d.n.Bridge, err)
	}
	if e == nil || !learnt(e) || (e.LinkIndex == d.vx.Index) != onTunnel {
		return nil
	}
	return d.delBridgeFDB(e)
}

// SetPeer programs a remote endpoint: a permanent FDB entry sending
// p.MAC to p.VTEP on the VXLAN device (its destination replaced in place
// when the peer moves) and a permanent neighbour entry for each of p.IPs
// on the VXLAN device, from which the device answers ARP and neighbour
// solicitations. The entries live on the VXLAN device because its proxy
// answers from its own neighbour table; the bridge's is the host's own
// and would serve no endpoint. An entry the bridge learnt for p.MAC on a
// local port (the endpoint lived here before) is purged. Entries of
// addresses the peer no longer has are DeletePeer's or Reconcile's.
func SetPeer(n Network, p Peer) error {
	d, err := mustOpen(n)
	if err != nil {
		return err
	}
	if err := d.checkPeer(p); err != nil {
		return err
	}
	// The FDB entry first: an address never resolves to a MAC that does
	// not go anywhere.
	if err := d.setFDB(p.MAC, p.VTEP); err != nil {
		return err
	}
	for _, ip := range p.IPs {
		if err := d.setNeigh(ip, p.MAC); err != nil {
			return err
		}
	}
	return d.purgeLearnt(p.MAC, false)
}

// DeletePeer removes a remote endpoint's entries: the neighbour entries
// of p.IPs that still resolve to p.MAC (an address given to another
// endpoint since keeps its entry), the FDB entry of p.MAC, and the entry
// the bridge learnt for p.MAC on the VXLAN port, so that the endpoint,
// should it come to this host, is reached on its local port at once
// rather than after the bridge's ageing time. When p.VTEP is given and
// the FDB entry points elsewhere, the peer has moved since and nothing
// is removed. Entries already gone, and a network gone from this host,
// are fine.
func DeletePeer(n Network, p Peer) error {
	if !unicastMAC(p.MAC) {
		return invalid("peer mac: %v is not a unicast Ethernet MAC", p.MAC)
	}
	d, err := open(n)
	if err != nil || d == nil {
		return err
	}
	// A unicast MAC has one destination: the kernel appends further ones
	// only to the all-zeros and multicast entries.
	fdb, err := getVXLANFDB(d.vx.Index, p.MAC)
	if err != nil {
		return fmt.Errorf("look up FDB entry %s on %s: %w", p.MAC, d.vx.Name, err)
	}
	if fdb != nil && p.VTEP != nil && !fdb.IP.Equal(p.VTEP) {
		return nil // moved: the entries are the new place's
	}
	// The reverse of SetPeer's order: addresses first, so that none
	// resolves to a MAC that goes nowhere.
	for _, ip := range p.IPs {
		e, err := getIPNeigh(d.vx.Index, ip)
		if err != nil {
			return fmt.Errorf("look up neighbour %s on %s: %w", ip, d.vx.Name, err)
		}
		if e != nil && bytes.Equal(e.HardwareAddr, p.MAC) {
			if err := d.delNeigh(ip); err != nil {
				return err
			}
		}
	}
	if fdb != nil {
		if err := d.delFDB(p.MAC, fdb.IP); err != nil {
			return err
		}
	}
	return d.purgeLearnt(p.MAC, true)
}

// programmed is what the kernel holds for the network.
type programmed struct {
	fdb   []netlink.Neigh // the VXLAN device's own FDB, one per destination
	neigh []netlink.Neigh // the VXLAN device's neighbour entries
}

// read lists the VXLAN device's FDB and neighbour entries. Neighbour
// entries the kernel makes itself (NOARP: multicast, and the like) are
// not the network's and are left out.
func (d *devices) read() (programmed, error) {
	var st programmed
	fdb, err := nldump.Retry(func() ([]netlink.Neigh, error) {
		return netlink.NeighListExecute(netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: uint32(d.vx.Index)})
	})
	if err != nil {
		return st, fmt.Errorf("list FDB of %s: %w", d.vx.Name, err)
	}
	for _, e := range fdb {
		// The dump of a bridge port has the bridge's entries for the
		// port (NTF_MASTER) as well as the device's own (NTF_SELF).
		if e.Flags&netlink.NTF_SELF != 0 && e.Flags&netlink.NTF_MASTER == 0 {
			st.fdb = append(st.fdb, e)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := nldump.Retry(func() ([]netlink.Neigh, error) { return netlink.NeighList(d.vx.Index, fam) })
		if err != nil {
			return st, fmt.Errorf("list neighbours of %s: %w", d.vx.Name, err)
		}
		for _, e := range list {
			if e.State&netlink.NUD_NOARP != 0 || e.IP.IsMulticast() {
				continue
			}
			st.neigh = append(st.neigh, e)
		}
	}
	return st, nil
}

// Peers returns the peers programmed now, one per destination of each
// FDB entry of the VXLAN device, with the addresses whose neighbour
// entries resolve to its MAC. Neighbour entries whose MAC has no FDB
// entry are listed as peers without a VTEP, and FDB entries without
// addresses as peers without IPs: what a crash or a missed delete
// leaves, which Reconcile removes. Sorted by MAC.
func Peers(n Network) ([]Peer, error) {
	d, err := mustOpen(n)
	if err != nil {
		return nil, err
	}
	st, err := d.read()
	if err != nil {
		return nil, err
	}
	ips := map[string][]net.IP{}
	for _, e := range st.neigh {
		ips[e.HardwareAddr.String()] = append(ips[e.HardwareAddr.String()], e.IP)
	}
	var peers []Peer
	withFDB := map[string]bool{}
	for _, e := range st.fdb {
		mac := e.HardwareAddr.String()
		withFDB[mac] = true
		peers = append(peers, Peer{MAC: e.HardwareAddr, IPs: ips[mac], VTEP: e.IP})
	}
	for _, e := range st.neigh {
		if mac := e.HardwareAddr.String(); !withFDB[mac] {
			withFDB[mac] = true
			peers = append(peers, Peer{MAC: e.HardwareAddr, IPs: ips[mac]})
		}
	}
	slices.SortStableFunc(peers, func(a, b Peer) int { return bytes.Compare(a.MAC, b.MAC) })
	return peers, nil
}

// wanted is Reconcile's index of the peers it is given.
type wanted struct {
	byMAC map[string]Peer
	byIP  map[string]net.HardwareAddr
	ips   map[string]net.IP
}

func (d *devices) index(want []Peer) (wanted, error) {
	w := wanted{byMAC: map[string]Peer{}, byIP: map[string]net.HardwareAddr{}, ips: map[string]net.IP{}}
	for _, p := range want {
		if err := d.checkPeer(p); err != nil {
			return w, err
		}
		mac := p.MAC.String()
		if prev, ok := w.byMAC[mac]; ok && !prev.VTEP.Equal(p.VTEP) {
			return w, invalid("peers: %s is at both %v and %v", mac, prev.VTEP, p.VTEP)
		}
		w.byMAC[mac] = p
		for _, ip := range p.IPs {
			key := ip.String()
			if other, ok := w.byIP[key]; ok && !bytes.Equal(other, p.MAC) {
				return w, invalid("peers: %s belongs to both %s and %s", key, other, mac)
			}
			w.byIP[key], w.ips[key] = p.MAC, ip
		}
	}
	return w, nil
}

// Reconcile makes the network's programmed entries exactly want: it
// adds what is missing, points entries of peers that moved at their new
// VTEP, and deletes every FDB and neighbour entry of the VXLAN device
// that no peer of want owns (what a crash, a vanished host or a missed
// delete leaves, and any all-zeros flooding entry), with the entries the
// bridge learnt on the VXLAN port for MACs no peer has and on local
// ports for MACs that are peers now. added counts the entries made or
// changed, removed those deleted; both are 0 when nothing had drifted.
// It goes on past an entry it fails on and reports them all.
func Reconcile(n Network, want []Peer) (added, removed int, err error) {
	d, err := mustOpen(n)
	if err != nil {
		return 0, 0, err
	}
	w, err := d.index(want)
	if err != nil {
		return 0, 0, err
	}
	st, err := d.read()
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	note := func(err error, count *int) {
		if err != nil {
			errs = append(errs, err)
		} else {
			*count++
		}
	}

	// FDB entries first, so that no address resolves to a MAC that goes
	// nowhere. The kernel lists an entry once per destination.
	dsts := map[string][]netlink.Neigh{}
	var macs []string
	for _, e := range st.fdb {
		mac := e.HardwareAddr.String()
		if dsts[mac] == nil {
			macs = append(macs, mac)
		}
		dsts[mac] = append(dsts[mac], e)
	}
	for _, mac := range macs {
		entries := dsts[mac]
		p, ok := w.byMAC[mac]
		keep := -1
		if ok {
			keep = slices.IndexFunc(entries, func(e netlink.Neigh) bool {
				return e.IP.Equal(p.VTEP) && e.VNI == 0 && e.State&netlink.NUD_PERMANENT != 0
			})
			if keep < 0 {
				// Replacing swaps the first destination in place.
				note(d.setFDB(p.MAC, p.VTEP), &added)
				keep = 0
			}
		}
		for i, e := range entries {
			if i != keep {
				note(d.delFDB(e.HardwareAddr, e.IP), &removed)
			}
		}
	}
	for mac, p := range w.byMAC {
		if dsts[mac] == nil {
			note(d.setFDB(p.MAC, p.VTEP), &added)
		}
	}

	seen := map[string]bool{}
	for _, e := range st.neigh {
		key := e.IP.String()
		seen[key] = true
		mac, ok := w.byIP[key]
		switch {
		case !ok:
			note(d.delNeigh(e.IP), &removed)
		case !bytes.Equal(e.HardwareAddr, mac) || e.State != netlink.NUD_PERMANENT:
			note(d.setNeigh(e.IP, mac), &added)
		}
	}
	for key, mac := range w.byIP {
		if !seen[key] {
			note(d.setNeigh(w.ips[key], mac), &added)
		}
	}

	if d.br != nil {
		r, err := d.purgeAllLearnt(w)
		removed += r
		errs = append(errs, err)
	}
	return added, removed, errors.Join(errs...)
}

// purgeAllLearnt removes the bridge's learnt entries that disagree with
// want: on the VXLAN port for a MAC no peer has, on a local port for a
// MAC that is a peer's.
func (d *devices) purgeAllLearnt(w wanted) (removed int, err error) {
	// No kernel filter by bridge without NDA_MASTER, which the netlink
	// package's dump does not send: the whole namespace's FDB, filtered.
	all, err := nldump.Retry(func() ([]netlink.Neigh, error) {
		return netlink.NeighListExecute(netlink.Ndmsg{Family: unix.AF_BRIDGE})
	})
	if err != nil {
		return 0, fmt.Errorf("list FDB of bridge %s: %w", d.n.Bridge, err)
	}
	var errs []error
	for i := range all {
		e := &all[i]
		if e.MasterIndex != d.br.Attrs().Index || e.Flags&netlink.NTF_SELF != 0 || !learnt(e) {
			continue
		}
		_, isPeer := w.byMAC[e.HardwareAddr.String()]
		if onTunnel := e.LinkIndex == d.vx.Index; onTunnel == isPeer {
			continue
		}
		if err := d.delBridgeFDB(e); err != nil {
			errs = append(errs, err)
		} else {
			removed++
		}
	}
	return removed, errors.Join(errs...)
}
