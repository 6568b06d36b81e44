package testdriver

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// NetworkType is the CNI "type" of the test driver.
const NetworkType = "cnm-testveth"

// HangEnv names the step at which a test build waits to be killed.
const HangEnv = "CNM_TESTDRIVER_HANG"

// GlobalNetworkType is the type of the same driver registered at global
// scope: its networks live in the cluster store, for the tests of
// networks whose endpoints span hosts.
const GlobalNetworkType = "cnm-testglobal"

// Driver gives each endpoint a veth pair.
type Driver struct {
	typ   string
	store store.Store
}

var (
	_ driverapi.Driver  = (*Driver)(nil)
	_ driverapi.Checker = (*Driver)(nil)
)

// Register registers the test driver with r.
func Register(r driverapi.Registerer) error {
	d := &Driver{typ: NetworkType, store: r.DriverStore(NetworkType)}
	return r.RegisterDriver(NetworkType, d, driverapi.Capability{Scope: driverapi.LocalScope})
}

// RegisterGlobal registers the test driver at global scope, as
// GlobalNetworkType, with r.
func RegisterGlobal(r driverapi.Registerer) error {
	d := &Driver{typ: GlobalNetworkType, store: r.DriverStore(GlobalNetworkType)}
	return r.RegisterDriver(GlobalNetworkType, d, driverapi.Capability{Scope: driverapi.GlobalScope})
}

// network is what the driver keeps of a network between invocations.
type network struct {
	Gateways []string `json:"gateways"`
}

func hangAt(step string) {
	if os.Getenv(HangEnv) == step {
		fmt.Fprintf(os.Stderr, "testdriver: hanging at %s\n", step)
		time.Sleep(time.Hour)
	}
}

// hostName is the host end of the endpoint's veth, peerName the end that
// goes to the sandbox.
func hostName(eid string) string { return "tv" + eid[:10] }
func peerName(eid string) string { return "tp" + eid[:10] }

func (d *Driver) Type() string { return d.typ }

func (d *Driver) CreateNetwork(nid string, info driverapi.NetworkInfo) error {
	var n network
	for _, p := range info.Pools {
		if p.Gateway != nil {
			n.Gateways = append(n.Gateways, p.Gateway.String())
		}
	}
	return d.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, "networks/"+nid, n) })
}

func (d *Driver) DeleteNetwork(nid string) error {
	return d.store.Update(func(tx store.Tx) error { return tx.Delete("networks/" + nid) })
}

func (d *Driver) CreateEndpoint(nid, eid string, ep driverapi.EndpointInfo, _ driverapi.Options) error {
	hangAt("create")
	ifc := ep.Interface()
	if ifc == nil || len(ifc.Addresses()) == 0 {
		return errors.New("testveth: endpoint has no address; configure ipam")
	}
	if ifc.MacAddress() == nil {
		// Locally administered, derived from the endpoint ID.
		mac := net.HardwareAddr{0x02, 0xcb, 0, 0, 0, 0}
		if b, err := hex.DecodeString(eid[:8]); err == nil {
			copy(mac[2:], b) // 32 random bits of the ID
		} else {
			copy(mac[2:], eid[:4])
		}
		return ifc.SetMacAddress(mac)
	}
	return nil
}

func (d *Driver) DeleteEndpoint(string, string) error { return nil }

func (d *Driver) EndpointOperInfo(string, string) (map[string]any, error) {
	return map[string]any{}, nil
}

func (d *Driver) Join(nid, eid, _ string, ji driverapi.JoinInfo, opts driverapi.Options) error {
	var n network
	if err := d.store.View(func(tx store.Tx) error { return store.GetJSON(tx, "networks/"+nid, &n) }); err != nil {
		return fmt.Errorf("testveth: network %s: %w", nid, err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName(eid)}, PeerName: peerName(eid)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("testveth: add veth %s: %w", veth.Name, err)
	}
	hangAt("join")
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("testveth: up %s: %w", veth.Name, err)
	}
	for _, g := range n.Gateways {
		gw := net.ParseIP(g)
		var err error
		if gw.To4() != nil {
			err = ji.SetGateway(gw)
		} else {
			err = ji.SetGatewayIPv6(gw)
		}
		if err != nil {
			return err
		}
	}
	if err := ji.AddHostInterface(veth.Name, nil); err != nil {
		return err
	}
	return ji.SetNames(peerName(eid), opts.IfName)
}

func (d *Driver) Leave(_, eid string) error {
	link, err := netlink.LinkByName(hostName(eid))
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return err
	}
	// The kernel deletes the pair itself when the sandbox's namespace
	// goes, and may do so between the lookup and this.
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// CheckEndpoint verifies the host end of the veth is there.
func (d *Driver) CheckEndpoint(_, eid, _ string) error {
	if _, err := netlink.LinkByName(hostName(eid)); err != nil {
		return fmt.Errorf("host veth %s: %w", hostName(eid), err)
	}
	return nil
}
