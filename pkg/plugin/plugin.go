package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnmnet/cnmnet/pkg/buildinfo"
	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// SupportedVersions are the CNI spec versions every cnmnet plugin speaks.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// RegisterFunc registers a binary's drivers with a controller; driver
// packages export one (e.g. null.Register).
type RegisterFunc func(driverapi.Registerer) error

// ClusterOpener opens the cluster store a configuration's cluster
// section names (see pkg/cluster). A plugin with global-scope drivers
// is built with one; the others never link a cluster client.
type ClusterOpener func(conf *cnm.ClusterConf) (store.Store, error)

// Option configures a plugin.
type Option func(*plugin)

// WithCluster gives the plugin the cluster store of its global-scope
// drivers' networks.
func WithCluster(open ClusterOpener) Option {
	return func(p *plugin) { p.openCluster = open }
}

// Main runs the plugin named name with the drivers reg registers. Run
// by hand with --version, it prints its version and commit.
func Main(name string, reg RegisterFunc, opts ...Option) {
	oneProc()
	relaxRuntimeTimers()
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(buildinfo.String(name))
		return
	}
	skel.PluginMainFuncs(Funcs(reg, opts...), SupportedVersions, buildinfo.String(name)+": CNM endpoints as a CNI plugin (cnmnet)")
}

// oneProc runs the plugin's goroutines on one P unless the environment
// says otherwise. A plugin does one thing at a time; a second P only adds
// threads that spin looking for work and wake one another, which in a
// burst of plugin processes is CPU taken from the others (about 1 ms per
// ADD in a 50-wide burst on two CPUs, docs/benchmarks.md).
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// Funcs returns the CNI verbs of a plugin with the drivers reg registers,
// for skel or for running a plugin in-process.
func Funcs(reg RegisterFunc, opts ...Option) skel.CNIFuncs {
	p := &plugin{register: reg}
	for _, o := range opts {
		o(p)
	}
	return skel.CNIFuncs{Add: p.cmdAdd, Del: p.cmdDel, Check: p.cmdCheck, GC: p.cmdGC, Status: p.cmdStatus}
}

type plugin struct {
	register    RegisterFunc
	openCluster ClusterOpener
}

func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	p.warnUnknownKeys(os.Stderr, args.StdinData)
	return p.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
		res, err := c.Add(ctx, req)
		if err != nil {
			return err
		}
		return types.PrintResult(res, req.Conf.CNIVersion)
	})
}

func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	return p.runWith(loadDelRequest, args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
		return c.Del(ctx, req)
	})
}

func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	return p.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
		return c.Check(ctx, req)
	})
}

func (p *plugin) cmdGC(args *skel.CmdArgs) error {
	return p.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
		return c.GC(ctx, req)
	})
}

func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	err := p.run(args, func(ctx context.Context, c *cnm.Controller, req *cnm.Request) error {
		return c.Status(ctx, req)
	})
	// A store that cannot be read means no ADD can be served. One that
	// stayed locked means a busy node, not a broken one: STATUS says
	// "try again later" (11) like every other verb.
	var te *types.Error
	if errors.As(err, &te) && te.Code == types.ErrIOFailure {
		return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
	}
	return err
}

// warnUnknownKeys writes a line to w for each key of the configuration
// that nothing reads: CNI allows other keys, so ADD goes on, but a
// misspelt key ("ipMasg") would otherwise be ignored in silence. stdout
// is the CNI result; this is stderr's.
func (p *plugin) warnUnknownKeys(w io.Writer, raw []byte) {
	var conf struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &conf) != nil || cnm.ValidateNetworkName(conf.Name) != nil {
		return // the ADD fails on that, naming it
	}
	drivers := cnm.NewDrivers()
	if p.register(drivers) != nil || drivers.Driver(conf.Type) == nil {
		return // so is a type this plugin has no driver for
	}
	for _, u := range cnm.UnknownKeys(raw, drivers.Driver(conf.Type)) {
		fmt.Fprintf(w, "%s: network %s: %s\n", conf.Type, conf.Name, u)
	}
}

// run parses the request, opens the store, builds the controller and
// calls verb, turning any failure into a CNI error.
func (p *plugin) run(args *skel.CmdArgs, verb func(context.Context, *cnm.Controller, *cnm.Request) error) error {
	return p.runWith(loadRequest, args, verb)
}

// runWith is run with the request parsed by load.
func (p *plugin) runWith(load func(*skel.CmdArgs) (*cnm.Request, error), args *skel.CmdArgs,
	verb func(context.Context, *cnm.Controller, *cnm.Request) error) error {
	req, err := load(args)
	if err != nil {
		return cniError(err)
	}
	c, err := p.controller(req.Conf)
	if err != nil {
		return err
	}
	defer c.Close()
	return cniError(verb(context.Background(), c, req))
}

// ScopeChooser is implemented by a driver whose networks are not all of
// the scope it registers with: each network's configuration chooses
// (cnm-remote's networks have the scope of their Docker plugin). The
// plugin asks it which store a request's network lives in before it
// opens any; the driver then serves the store it is registered with.
type ScopeChooser interface {
	// NetworkScope is the scope of the network conf configures,
	// driverapi.LocalScope or GlobalScope; "" for the registered one.
	NetworkScope(conf *cnm.NetConf) (string, error)
}

// controller opens the store where the network of conf lives — the
// host's own for a local-scope driver, the cluster store for a global
// one — and builds a controller over it with the plugin's drivers.
func (p *plugin) controller(conf *cnm.NetConf) (*cnm.Controller, error) {
	var c *cnm.Controller
	scope, err := p.scopeOf(conf)
	if err != nil {
		return nil, cniError(err)
	}
	if scope == driverapi.GlobalScope {
		if err := cnm.RequireCluster(conf); err != nil {
			return nil, err
		}
		if p.openCluster == nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("cluster: this plugin has no cluster store for network type %q", conf.Type), "")
		}
		s, err := p.openCluster(conf.Cluster)
		if err != nil {
			return nil, clusterError(err)
		}
		c = cnm.NewClustered(s, conf.Host)
	} else {
		s, err := store.Open(conf.DataDir, store.Options{})
		if err != nil {
			return nil, storeError(err)
		}
		c = cnm.New(s)
	}
	if err := p.register(c); err != nil {
		_ = c.Close()
		return nil, cniError(err)
	}
	return c, nil
}

// scopeOf is the scope of conf's network: the one its driver registered
// with, or the one it chooses for conf (ScopeChooser); "" when the plugin
// has no driver of its type (the controller then says so).
func (p *plugin) scopeOf(conf *cnm.NetConf) (string, error) {
	ds := cnm.NewDrivers()
	if p.register(ds) != nil {
		return "", nil
	}
	if sc, ok := ds.Driver(conf.Type).(ScopeChooser); ok {
		scope, err := sc.NetworkScope(conf)
		if err != nil || scope != "" {
			return scope, err
		}
	}
	return ds.Scope(conf.Type), nil
}

// storeError is the CNI error of a store that cannot be opened: try
// again later when another process holds it, an I/O failure otherwise.
func storeError(err error) error {
	if errors.Is(err, store.ErrLocked) {
		return cniError(err)
	}
	return types.NewError(types.ErrIOFailure, err.Error(), "")
}

// clusterError is the CNI error of a cluster store that cannot be
// opened: try again later when it is unreachable, a bad cluster section
// otherwise (a certificate that does not load, say).
func clusterError(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return cniError(err)
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInvalidNetworkConfig, "cluster.etcd: "+err.Error(), "")
}

// cniError gives err the CNI code of its cause; nil stays an untyped nil.
func cniError(err error) error {
	if err == nil {
		return nil
	}
	return cnm.AsCNIError(err)
}

func loadRequest(args *skel.CmdArgs) (*cnm.Request, error) {
	conf, err := cnm.LoadNetConf(args.StdinData)
	if err != nil {
		return nil, err
	}
	a, err := cnm.ParseArgs(args.Args)
	if err != nil {
		return nil, err
	}
	return &cnm.Request{
		Conf:        conf,
		Args:        a,
		ContainerID: args.ContainerID,
		NetNS:       args.Netns,
		IfName:      args.IfName,
		Path:        args.Path,
		RawArgs:     args.Args,
	}, nil
}

// loadDelRequest parses a DEL: only what identifies the network and the
// attachment must be sound (see cnm.LoadNetConfForDel); CNI_ARGS, which
// DEL does not need, never make it fail, so that the DEL following an ADD
// refused for its input succeeds.
func loadDelRequest(args *skel.CmdArgs) (*cnm.Request, error) {
	conf, err := cnm.LoadNetConfForDel(args.StdinData)
	if err != nil {
		return nil, err
	}
	return &cnm.Request{
		Conf:        conf,
		Args:        cnm.ParseArgsForDel(args.Args),
		ContainerID: args.ContainerID,
		NetNS:       args.Netns,
		IfName:      args.IfName,
		Path:        args.Path,
		RawArgs:     args.Args,
	}, nil
}
