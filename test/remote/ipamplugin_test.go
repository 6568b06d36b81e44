package remote_test

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/docker/go-plugins-helpers/ipam"

	. "github.com/onsi/ginkgo/v2"
)

// testIPAM is a Docker IPAM plugin as plugin authors write them, on
// go-plugins-helpers: pools handed out from 10.88.0.0/16 (fd88::/48)
// by /24 (/64) unless one is asked for, addresses in order from the
// pool's sub-pool, a requested one if free.
type testIPAM struct {
	mu    sync.Mutex
	calls []string
	pools map[string]*ipamPool
	next  int
	// fail is the method that answers an error ({"Err": ...}).
	fail string
	// gatewayData makes RequestPool give the gateway as pool data.
	gatewayData bool
}

type ipamPool struct {
	subnet, sub netip.Prefix
	held        map[netip.Addr]bool
}

var _ ipam.Ipam = (*testIPAM)(nil)

func newTestIPAM() *testIPAM { return &testIPAM{pools: map[string]*ipamPool{}} }

func (p *testIPAM) record(method string) error {
	p.calls = append(p.calls, method)
	if p.fail == method {
		return fmt.Errorf("test ipam refuses %s", method)
	}
	return nil
}

// Calls lists the methods called so far.
func (p *testIPAM) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

// Held lists the addresses held in every pool, gateways included.
func (p *testIPAM) Held() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, pl := range p.pools {
		for a := range pl.held {
			out = append(out, a.String())
		}
	}
	sort.Strings(out)
	return out
}

// Pools counts the pools held.
func (p *testIPAM) Pools() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pools)
}

func (p *testIPAM) setFail(method string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = method
}

func (p *testIPAM) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &ipam.CapabilitiesResponse{}, p.record("GetCapabilities")
}

func (p *testIPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "testlocal", GlobalDefaultAddressSpace: "testglobal"}, p.record("GetDefaultAddressSpaces")
}

func (p *testIPAM) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("RequestPool"); err != nil {
		return nil, err
	}
	if r.AddressSpace != "testlocal" {
		return nil, fmt.Errorf("no address space %q", r.AddressSpace)
	}
	var subnet netip.Prefix
	switch {
	case r.Pool != "":
		var err error
		if subnet, err = netip.ParsePrefix(r.Pool); err != nil {
			return nil, err
		}
	case r.V6:
		subnet = netip.MustParsePrefix(fmt.Sprintf("fd88:0:0:%x::/64", p.next))
	default:
		subnet = netip.MustParsePrefix(fmt.Sprintf("10.88.%d.0/24", p.next))
	}
	p.next++
	sub := subnet
	if r.SubPool != "" {
		var err error
		if sub, err = netip.ParsePrefix(r.SubPool); err != nil {
			return nil, err
		}
	}
	id := fmt.Sprintf("pool-%s", subnet)
	if _, ok := p.pools[id]; ok {
		return nil, fmt.Errorf("pool %s is in use", subnet)
	}
	p.pools[id] = &ipamPool{subnet: subnet, sub: sub, held: map[netip.Addr]bool{}}
	res := &ipam.RequestPoolResponse{PoolID: id, Pool: subnet.String()}
	if p.gatewayData {
		gw := subnet.Addr().Next()
		p.pools[id].held[gw] = true
		res.Data = map[string]string{"com.docker.network.gateway": netip.PrefixFrom(gw, subnet.Bits()).String()}
	}
	return res, nil
}

func (p *testIPAM) ReleasePool(r *ipam.ReleasePoolRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("ReleasePool"); err != nil {
		return err
	}
	pl, ok := p.pools[r.PoolID]
	if !ok {
		return fmt.Errorf("no pool %s", r.PoolID)
	}
	if p.gatewayData {
		delete(pl.held, pl.subnet.Addr().Next())
	}
	if len(pl.held) > 0 {
		return fmt.Errorf("pool %s has addresses in use", r.PoolID)
	}
	delete(p.pools, r.PoolID)
	return nil
}

func (p *testIPAM) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("RequestAddress"); err != nil {
		return nil, err
	}
	pl, ok := p.pools[r.PoolID]
	if !ok {
		return nil, fmt.Errorf("no pool %s", r.PoolID)
	}
	var a netip.Addr
	if r.Address != "" {
		var err error
		if a, err = netip.ParseAddr(r.Address); err != nil {
			return nil, err
		}
		if pl.held[a] {
			return nil, fmt.Errorf("address %s is in use", a)
		}
	} else {
		for c := pl.sub.Addr().Next(); pl.sub.Contains(c); c = c.Next() {
			if !pl.held[c] {
				a = c
				break
			}
		}
		if !a.IsValid() {
			return nil, fmt.Errorf("pool %s is full", r.PoolID)
		}
	}
	pl.held[a] = true
	return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(a, pl.subnet.Bits()).String()}, nil
}

func (p *testIPAM) ReleaseAddress(r *ipam.ReleaseAddressRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.record("ReleaseAddress"); err != nil {
		return err
	}
	pl, ok := p.pools[r.PoolID]
	if !ok {
		return fmt.Errorf("no pool %s", r.PoolID)
	}
	a, err := netip.ParseAddr(r.Address)
	if err != nil || !pl.held[a] {
		return fmt.Errorf("address %s is not in use", r.Address)
	}
	delete(pl.held, a)
	return nil
}

// ipamServer is the test IPAM plugin served on a socket of the spec's,
// behind a front that injects faults, as server is for the network
// plugin.
type ipamServer struct {
	*front
	plugin *testIPAM
}

func startIPAMServer(p *testIPAM, dir string) *ipamServer {
	GinkgoHelper()
	s := &ipamServer{plugin: p}
	s.front = startFront(dir, "ipam.sock", "ipam-helpers.sock", func(l net.Listener) error {
		return ipam.NewHandler(s.plugin).Serve(l)
	}, `{"Address": `, `{"Error": "the ipam plugin says no"}`)
	return s
}
