package cnm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Endpoint states.
const (
	// StateCreated: reserved, never joined.
	StateCreated = "created"
	// StateJoining: a Join is under way (or died half-way); the record
	// names the sandbox so that DEL or GC can undo it.
	StateJoining = "joining"
	// StateJoined: attached to a sandbox.
	StateJoined = "joined"
	// StateLeft: was joined, keeps its reservation.
	StateLeft = "left"
	// StateDeleting: being deleted (or a deletion died half-way: DEL, GC
	// or the next ADD of the same name finishes it).
	StateDeleting = "deleting"
)

// Network is the stored record of a CNM network.
type Network struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`
	Driver  string    `json:"driver"`
	Created time.Time `json:"created"`
	// Ready is set once the driver's CreateNetwork succeeded.
	Ready bool `json:"ready"`
	// DeletingSince is set while the network is being deleted: no ADD
	// joins it. One whose deletion died half-way (older than
	// staleDeletion) is taken back by the next ADD, which makes its host
	// state again.
	DeletingSince time.Time `json:"deletingSince,omitzero"`
	// Config is the network configuration of the latest ADD, without its
	// per-request parts, for operations without a runtime (cnmctl).
	Config json.RawMessage `json:"config,omitempty"`
	// Pools are the subnets and gateways of a network whose addresses a
	// delegated IPAM plugin hands out, as the plugin gave them to the
	// network's first endpoint; the driver was made with them, and a
	// later endpoint's addresses must fall in them. Built-in IPAM needs
	// none: its ranges say.
	// With an IPAM driver (remote) they are the pools it reserved at
	// the network's first ADD, given back when the network is deleted.
	Pools []Pool `json:"pools,omitempty"`
}

// Pool is one subnet of a network, with its gateway ("" for none).
type Pool struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway,omitempty"`
	// ID is the IPAM driver's name of a pool it reserved; "" otherwise.
	ID string `json:"id,omitempty"`
	// GatewayRequested: the gateway is an address the IPAM driver
	// reserved in the pool, given back with it.
	GatewayRequested bool `json:"gatewayRequested,omitempty"`
}

// staleDeletion is how long a network deletion may take before an ADD
// takes it for one that died: a deletion takes well under a second.
const staleDeletion = 30 * time.Second

// Endpoint is the stored record of a CNM endpoint.
type Endpoint struct {
	Network    string    `json:"network"`
	Name       string    `json:"name"`
	ID         string    `json:"id"`
	Persistent bool      `json:"persistent"`
	Created    time.Time `json:"created"`
	State      string    `json:"state"`

	MAC       string    `json:"mac,omitempty"`
	Addresses []Address `json:"addresses,omitempty"`
	// IPAM is the allocator of the addresses: "cnm" (built in), a
	// delegated plugin type, or "" for none.
	IPAM string `json:"ipam,omitempty"`
	// DriverCreated is set once the driver's CreateEndpoint succeeded.
	DriverCreated bool `json:"driverCreated,omitempty"`

	// Sandbox is the current attachment, while joining or joined.
	Sandbox *Attachment `json:"sandbox,omitempty"`

	LeftAt    time.Time `json:"leftAt,omitzero"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// Address is one of an endpoint's addresses.
type Address struct {
	Address string `json:"address"` // CIDR
	Gateway string `json:"gateway,omitempty"`
	// Pool is the ID of the IPAM driver's pool the address is of; ""
	// for the built-in allocator and CNI IPAM plugins.
	Pool string `json:"pool,omitempty"`
}

// Attachment is an endpoint's join to a sandbox.
type Attachment struct {
	Key string `json:"key"` // the netns path
	// Host is the host the sandbox is on, for an endpoint of a network
	// kept in a cluster store; "" in a host's own store.
	Host string `json:"host,omitempty"`
	// NetNS is the identity of the namespace at Key when the endpoint
	// joined: DEL, CHECK and GC act in a sandbox only if its path still
	// holds that namespace.
	NetNS       sandbox.ID `json:"netns,omitzero"`
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Joined      time.Time  `json:"joined"`
	// SrcName is the interface the driver made, DstName its name in the
	// sandbox; both empty when the driver gave the sandbox no interface.
	SrcName string `json:"srcName,omitempty"`
	DstName string `json:"dstName,omitempty"`
	// InSandbox: the driver made SrcName inside the sandbox.
	InSandbox      bool            `json:"inSandbox,omitempty"`
	Routes         []Route         `json:"routes,omitempty"`
	HostInterfaces []HostInterface `json:"hostInterfaces,omitempty"`
	DNS            *DNS            `json:"dns,omitempty"`
	// StandbyRoutes are default routes the sandbox did not take at join
	// because another endpoint's gateway served that family: one of them
	// is elected when that endpoint leaves (see electGateways).
	StandbyRoutes []Route `json:"standbyRoutes,omitempty"`
}

// sandbox is the joined sandbox, as the records name it.
func (a *Attachment) sandbox() sandbox.Ref { return sandbox.Ref{Path: a.Key, ID: a.NetNS} }

// sandboxFor is the joined sandbox as req names it: the runtime's
// CNI_NETNS when req is about this attachment and gives one (it may name
// the namespace by another path), the recorded path otherwise. Either way
// it is acted in only if it holds the namespace that was joined.
func (a *Attachment) sandboxFor(req *Request) sandbox.Ref {
	ref := a.sandbox()
	if req != nil && req.NetNS != "" && req.ContainerID == a.ContainerID && req.IfName == a.IfName {
		ref.Path = req.NetNS
	}
	return ref
}

// holds reports whether a is joined to the namespace sbx names: the same
// identity, or for a record without one, the same path.
func (a *Attachment) holds(sbx sandbox.Ref) bool {
	if a.NetNS.IsZero() {
		return a.Key == sbx.Path
	}
	return a.NetNS == sbx.ID
}

// sameAs reports whether a and b are the same attachment.
func (a *Attachment) sameAs(b *Attachment) bool {
	return a.Key == b.Key && a.ContainerID == b.ContainerID && a.IfName == b.IfName
}

// Route is a route in the sandbox.
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
	// Elected: a standby default route added after the join, when the
	// endpoint that gave the sandbox its default route left; the
	// runtime's prevResult, from the ADD, does not list it.
	Elected bool `json:"elected,omitempty"`
}

// HostInterface is an interface a driver keeps on the host for an endpoint.
type HostInterface struct {
	Name string `json:"name"`
	MAC  string `json:"mac,omitempty"`
}

// DNS is what a driver reports for the sandbox's resolver.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// SandboxRecord lists the endpoints joined to one sandbox, across networks.
type SandboxRecord struct {
	Key       string   `json:"key"`
	Endpoints []string `json:"endpoints"` // network/endpoint
}

// Store keys.
func networkKey(name string) string { return "networks/" + name }
func endpointPrefix(network string) string {
	return "endpoints/" + network + "/"
}
func endpointKey(network, name string) string { return endpointPrefix(network) + name }
func attachmentPrefix(network string) string {
	return "attachments/" + network + "/"
}
func attachmentKey(network, containerID, ifName string) string {
	return attachmentPrefix(network) + containerID + "/" + ifName
}
func sandboxKey(key string) string { return "sandboxes/" + url.PathEscape(key) }

// macKey reserves a MAC in its network, like an address: two endpoints
// with one MAC on one L2 segment lose each other's traffic.
func macKey(network, mac string) string { return "macs/" + network + "/" + mac }

// macHolderIn names the endpoint of network that has mac, or "".
func macHolderIn(tx store.Tx, network, mac string) (string, error) {
	v, err := tx.Get(macKey(network, mac))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return string(v), err
}

// claimableMAC fails with CodeAddressInUse when another endpoint of ep's
// network has mac.
func claimableMAC(tx store.Tx, ep *Endpoint, mac string) error {
	holder, err := macHolderIn(tx, ep.Network, mac)
	if err != nil {
		return err
	}
	if holder != "" && holder != ep.Name {
		return newError(CodeAddressInUse, "mac: %s is held by endpoint %s of network %s", mac, holder, ep.Network)
	}
	return nil
}

// indexMAC claims ep's MAC in its network.
func indexMAC(tx store.Tx, ep *Endpoint) error {
	if ep.MAC == "" {
		return nil
	}
	if err := claimableMAC(tx, ep, ep.MAC); err != nil {
		return err
	}
	return tx.Put(macKey(ep.Network, ep.MAC), []byte(ep.Name))
}

// unindexMAC releases ep's MAC if ep holds it.
func unindexMAC(tx store.Tx, ep *Endpoint) error {
	if ep.MAC == "" {
		return nil
	}
	if holder, err := macHolderIn(tx, ep.Network, ep.MAC); err != nil || holder != ep.Name {
		return err
	}
	return tx.Delete(macKey(ep.Network, ep.MAC))
}

// persistentKey indexes a persistent endpoint, so that counting them
// against the network's cap reads keys, not records.
func persistentPrefix(network string) string { return "persistent/" + network + "/" }
func persistentKey(network, name string) string {
	return persistentPrefix(network) + name
}

// newID returns a random 128-bit identifier in hex.
func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)
}

// hostNetworkKey records, in a cluster store, that the driver made the
// network's host state on this host (the network's ID): CreateNetwork
// runs on each host a global network is used on.
func hostNetworkKey(name string) string { return "hostnetworks/" + name }

// getNetwork reads a network's record. In a cluster store, Ready says
// whether the network's host state is made on this host.
func getNetwork(tx store.Tx, name string) (*Network, error) {
	n := &Network{}
	if err := store.GetJSON(tx, networkKey(name), n); err != nil {
		return nil, err
	}
	if err := readyHere(tx, n); err != nil {
		return nil, err
	}
	return n, nil
}

// readyHere sets n.Ready, in a cluster store, to whether the network's
// host state is made on this host.
func readyHere(tx store.Tx, n *Network) error {
	if !clustered(tx) {
		return nil
	}
	id, err := tx.Get(hostNetworkKey(n.Name))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	n.Ready = err == nil && string(id) == n.ID
	return nil
}

// putNetwork writes a network's record, only if it changed: in a cluster
// store every ADD of the network reads it, and a write would make each
// concurrent ADD conflict with the others. In a cluster store Ready is
// this host's (hostNetworkKey), not the shared record's.
func putNetwork(tx store.Tx, nw *Network) error {
	rec := *nw
	if clustered(tx) {
		if err := putHostReady(tx, nw); err != nil {
			return err
		}
		rec.Ready = false
	}
	b, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("encode %s: %w", networkKey(nw.Name), err)
	}
	return putIfChanged(tx, networkKey(nw.Name), b)
}

// putHostReady records whether nw's host state is made on this host.
func putHostReady(tx store.Tx, nw *Network) error {
	cur, err := tx.Get(hostNetworkKey(nw.Name))
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	case nw.Ready && (err != nil || string(cur) != nw.ID):
		return tx.Put(hostNetworkKey(nw.Name), []byte(nw.ID))
	case !nw.Ready && err == nil:
		return tx.Delete(hostNetworkKey(nw.Name))
	}
	return nil
}

// putIfChanged puts value under key unless it holds value already.
func putIfChanged(tx store.Tx, key string, value []byte) error {
	if cur, err := tx.Get(key); err == nil && bytes.Equal(cur, value) {
		return nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return tx.Put(key, value)
}

func getEndpoint(tx store.Tx, network, name string) (*Endpoint, error) {
	ep := &Endpoint{}
	if err := store.GetJSON(tx, endpointKey(network, name), ep); err != nil {
		return nil, err
	}
	return ep, nil
}

// endpointOf returns the endpoint attached as (containerID, ifName), or
// nil when there is none.
func endpointOf(tx store.Tx, network, containerID, ifName string) (*Endpoint, error) {
	name, err := tx.Get(attachmentKey(network, containerID, ifName))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ep, err := getEndpoint(tx, network, string(name))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return ep, err
}

// ref is how a sandbox record names an endpoint.
func (ep *Endpoint) ref() string { return ep.Network + "/" + ep.Name }

// ips returns the endpoint's addresses as IPs.
func (ep *Endpoint) ips() []net.IP {
	var ips []net.IP
	for _, a := range ep.Addresses {
		if ip, _, err := net.ParseCIDR(a.Address); err == nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

// ipNets returns the endpoint's addresses with their prefix lengths.
func (ep *Endpoint) ipNets() []*net.IPNet {
	var nets []*net.IPNet
	for _, a := range ep.Addresses {
		if ip, n, err := net.ParseCIDR(a.Address); err == nil {
			n.IP = ip
			nets = append(nets, n)
		}
	}
	return nets
}

// putEndpoint writes ep and keeps the attachment and sandbox indexes in
// step with ep.Sandbox, given the attachment it had before (nil if none).
func putEndpoint(tx store.Tx, ep *Endpoint, before *Attachment) error {
	if before != nil && (ep.Sandbox == nil || !before.sameAs(ep.Sandbox)) {
		if err := unindexAttachment(tx, ep, before); err != nil {
			return err
		}
	}
	if ep.Sandbox != nil {
		if err := indexAttachment(tx, ep); err != nil {
			return err
		}
	}
	if err := indexPersistent(tx, ep); err != nil {
		return err
	}
	if err := indexMAC(tx, ep); err != nil {
		return err
	}
	return store.PutJSON(tx, endpointKey(ep.Network, ep.Name), ep)
}

func indexAttachment(tx store.Tx, ep *Endpoint) error {
	a := ep.Sandbox
	tx = onHost(tx, a.Host)
	if err := tx.Put(attachmentKey(ep.Network, a.ContainerID, a.IfName), []byte(ep.Name)); err != nil {
		return err
	}
	sb := &SandboxRecord{Key: a.Key}
	if err := store.GetJSON(tx, sandboxKey(a.Key), sb); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, r := range sb.Endpoints {
		if r == ep.ref() {
			return nil
		}
	}
	sb.Endpoints = append(sb.Endpoints, ep.ref())
	return store.PutJSON(tx, sandboxKey(a.Key), sb)
}

func unindexAttachment(tx store.Tx, ep *Endpoint, a *Attachment) error {
	tx = onHost(tx, a.Host)
	if err := tx.Delete(attachmentKey(ep.Network, a.ContainerID, a.IfName)); err != nil {
		return err
	}
	sb := &SandboxRecord{}
	err := store.GetJSON(tx, sandboxKey(a.Key), sb)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	kept := sb.Endpoints[:0]
	for _, r := range sb.Endpoints {
		if r != ep.ref() {
			kept = append(kept, r)
		}
	}
	if len(kept) == 0 {
		// The sandbox goes with its last endpoint.
		return tx.Delete(sandboxKey(a.Key))
	}
	sb.Endpoints = kept
	return store.PutJSON(tx, sandboxKey(a.Key), sb)
}

// prefetchEndpoint reads at once, where the store can, the keys that
// writing or deleting ep's record reads: the record, its MAC's, and its
// attachment's and sandbox's on the attachment's host.
func prefetchEndpoint(tx store.Tx, ep *Endpoint) error {
	keys := []string{endpointKey(ep.Network, ep.Name)}
	if ep.MAC != "" {
		keys = append(keys, macKey(ep.Network, ep.MAC))
	}
	if err := store.Prefetch(tx, keys...); err != nil {
		return err
	}
	if a := ep.Sandbox; a != nil {
		return store.Prefetch(onHost(tx, a.Host), attachmentKey(ep.Network, a.ContainerID, a.IfName), sandboxKey(a.Key))
	}
	return nil
}

// deleteEndpointRecord removes ep and its indexes.
func deleteEndpointRecord(tx store.Tx, ep *Endpoint) error {
	if ep.Sandbox != nil {
		if err := unindexAttachment(tx, ep, ep.Sandbox); err != nil {
			return err
		}
	}
	if err := tx.Delete(persistentKey(ep.Network, ep.Name)); err != nil {
		return err
	}
	if err := unindexMAC(tx, ep); err != nil {
		return err
	}
	return tx.Delete(endpointKey(ep.Network, ep.Name))
}

// indexPersistent keeps the persistent index in step with ep (a rollback
// may make an endpoint ephemeral again).
func indexPersistent(tx store.Tx, ep *Endpoint) error {
	if ep.Persistent {
		return tx.Put(persistentKey(ep.Network, ep.Name), nil)
	}
	return tx.Delete(persistentKey(ep.Network, ep.Name))
}

// danglingIndex lists the index keys of network whose endpoint record is
// gone: what a process killed between two writes could leave.
func danglingIndex(tx store.Tx, network string) ([]string, error) {
	var dangling []string
	if err := tx.Scan(attachmentPrefix(network), func(k string, v []byte) error {
		if _, err := getEndpoint(tx, network, string(v)); err != nil {
			dangling = append(dangling, k)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := tx.Scan(persistentPrefix(network), func(k string, _ []byte) error {
		if _, err := getEndpoint(tx, network, k[len(persistentPrefix(network)):]); err != nil {
			dangling = append(dangling, k)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	prefix := "macs/" + network + "/"
	err := tx.Scan(prefix, func(k string, v []byte) error {
		if ep, err := getEndpoint(tx, network, string(v)); err != nil || ep.MAC != k[len(prefix):] {
			dangling = append(dangling, k)
		}
		return nil
	})
	return dangling, err
}

// checkPersistentLimit refuses one more persistent endpoint in a network
// that holds as many as conf allows.
func checkPersistentLimit(tx store.Tx, conf *NetConf, network string) error {
	limit := conf.persistentLimit()
	held := 0
	if err := tx.Scan(persistentPrefix(network), func(string, []byte) error {
		held++
		return nil
	}); err != nil {
		return err
	}
	if held < limit {
		return nil
	}
	return newError(CodeReservationLimit,
		"maxPersistentEndpoints: network %s holds %d persistent endpoint(s), its limit; remove unused ones (cnmctl endpoint ls, cnmctl endpoint rm) or raise maxPersistentEndpoints",
		network, held)
}
