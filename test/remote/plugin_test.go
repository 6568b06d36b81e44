package remote_test

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	. "github.com/onsi/ginkgo/v2"
)

// testPlugin is a Docker network plugin as plugin authors write them,
// on go-plugins-helpers: a bridge per network and a veth pair per
// joined endpoint, made in the host namespace hostNS.
type testPlugin struct {
	hostNS ns.NetNS

	mu        sync.Mutex
	calls     []string
	networks  map[string]*network.CreateNetworkRequest
	endpoints map[string]*network.CreateEndpointRequest
	// rewriteMAC is the MAC CreateEndpoint answers with, "" for none.
	rewriteMAC string
	// fail is the method that answers an error ({"Err": ...}, HTTP 500).
	fail string
}

var _ network.Driver = (*testPlugin)(nil)

func newTestPlugin(hostNS ns.NetNS) *testPlugin {
	return &testPlugin{hostNS: hostNS, networks: map[string]*network.CreateNetworkRequest{}, endpoints: map[string]*network.CreateEndpointRequest{}}
}

func bridgeName(nid string) string { return "rbr" + nid[:8] }
func hostVeth(eid string) string   { return "rh" + eid[:8] }
func peerVeth(eid string) string   { return "rc" + eid[:8] }

func (p *testPlugin) record(method string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, method)
	if p.fail == method {
		return fmt.Errorf("test plugin refuses %s", method)
	}
	return nil
}

// Calls lists the methods called so far.
func (p *testPlugin) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

func (p *testPlugin) Endpoints() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.endpoints)
}

func (p *testPlugin) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.LocalScope}, p.record("GetCapabilities")
}

func (p *testPlugin) CreateNetwork(r *network.CreateNetworkRequest) error {
	if err := p.record("CreateNetwork"); err != nil {
		return err
	}
	if err := p.hostNS.Do(func(ns.NetNS) error { return makeBridge(r.NetworkID) }); err != nil {
		return err
	}
	p.mu.Lock()
	p.networks[r.NetworkID] = r
	p.mu.Unlock()
	return nil
}

func (p *testPlugin) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	if err := p.record("DeleteNetwork"); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.networks, r.NetworkID)
	p.mu.Unlock()
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(bridgeName(r.NetworkID)) })
}

func (p *testPlugin) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if err := p.record("CreateEndpoint"); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.networks[r.NetworkID]; !ok {
		return nil, fmt.Errorf("no network %s", r.NetworkID)
	}
	p.endpoints[r.EndpointID] = r
	if p.rewriteMAC != "" {
		return &network.CreateEndpointResponse{Interface: &network.EndpointInterface{MacAddress: p.rewriteMAC}}, nil
	}
	return &network.CreateEndpointResponse{}, nil
}

func (p *testPlugin) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	if err := p.record("DeleteEndpoint"); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.endpoints, r.EndpointID)
	p.mu.Unlock()
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(hostVeth(r.EndpointID)) })
}

func (p *testPlugin) EndpointInfo(r *network.InfoRequest) (*network.InfoResponse, error) {
	if err := p.record("EndpointOperInfo"); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.endpoints[r.EndpointID]; !ok {
		return nil, fmt.Errorf("no endpoint %s", r.EndpointID)
	}
	return &network.InfoResponse{Value: map[string]string{"veth": hostVeth(r.EndpointID)}}, nil
}

func (p *testPlugin) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	if err := p.record("Join"); err != nil {
		return nil, err
	}
	return plugVeth(p.hostNS, r)
}

func (p *testPlugin) Leave(r *network.LeaveRequest) error {
	if err := p.record("Leave"); err != nil {
		return err
	}
	return p.hostNS.Do(func(ns.NetNS) error { return delLink(hostVeth(r.EndpointID)) })
}

func (p *testPlugin) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return nil, p.record("AllocateNetwork")
}
func (p *testPlugin) FreeNetwork(*network.FreeNetworkRequest) error { return p.record("FreeNetwork") }
func (p *testPlugin) DiscoverNew(*network.DiscoveryNotification) error {
	return p.record("DiscoverNew")
}
func (p *testPlugin) DiscoverDelete(*network.DiscoveryNotification) error {
	return p.record("DiscoverDelete")
}
func (p *testPlugin) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return p.record("ProgramExternalConnectivity")
}
func (p *testPlugin) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return p.record("RevokeExternalConnectivity")
}

// makeBridge makes the network's bridge in the current netns, or finds
// it made already, and sets it up.
func makeBridge(nid string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName(nid)}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return netlink.LinkSetUp(br)
}

// plugVeth makes the endpoint's veth pair on its network's bridge in
// hostNS and answers Join with the end the core moves into the sandbox.
func plugVeth(hostNS ns.NetNS, r *network.JoinRequest) (*network.JoinResponse, error) {
	err := hostNS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName(bridgeName(r.NetworkID))
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostVeth(r.EndpointID), MasterIndex: br.Attrs().Index}, PeerName: peerVeth(r.EndpointID)}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		return nil, err
	}
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: peerVeth(r.EndpointID), DstPrefix: "eth"}}, nil
}

func delLink(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return err
	}
	// Gone meanwhile with its peer's namespace: deleted all the same.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// server is the test plugin served on a socket of the spec's, behind
// a front that injects faults. plugin may be replaced while the server
// is stopped: the next start serves the new one (a plugin restarted
// without its state).
type server struct {
	*front
	plugin *testPlugin
}

func startServer(p *testPlugin, dir string) *server {
	GinkgoHelper()
	s := &server{plugin: p}
	s.front = startFront(dir, "plugin.sock", "helpers.sock", func(l net.Listener) error {
		return network.NewHandler(s.plugin).Serve(l)
	}, `{"Interface": {"MacAddress": `, "")
	return s
}
