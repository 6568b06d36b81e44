package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/buildinfo"
	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/bridge"
	"github.com/cnmnet/cnmnet/pkg/drivers/null"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote"
	remoteipam "github.com/cnmnet/cnmnet/pkg/ipam/remote"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// options are the flags every command shares.
type options struct {
	dataDir string
	cniPath string
	output  string
	wait    time.Duration
	cluster clusterFlags
}

func newRootCommand(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:           "cnmctl",
		Short:         "Inspect and manage the networks, endpoints and sandboxes of the cnmnet CNI plugins",
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "table" && o.output != "json" {
				return usageError{fmt.Sprintf("-o %q: want table or json", o.output)}
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	f := root.PersistentFlags()
	f.StringVar(&o.dataDir, "data-dir", cnm.DefaultDataDir, "the plugins' store (their dataDir)")
	f.StringVar(&o.cniPath, "cni-path", "/opt/cni/bin", "where delegated IPAM plugins are found")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.wait, "wait", store.DefaultLockWait, "how long to wait for a plugin holding the store")
	o.cluster.register(f)
	root.SetVersionTemplate(buildinfo.String("cnmctl") + "\n")
	root.AddCommand(newNetworkCommand(o), newEndpointCommand(o), newSandboxCommand(o), newGCCommand(o), newCheckCommand(o),
		newValidateCommand(o), newVersionCommand(o))
	return root
}

func newVersionCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print cnmctl's version and commit",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			v := struct {
				Name    string `json:"name"`
				Version string `json:"version"`
				Commit  string `json:"commit"`
			}{"cnmctl", buildinfo.Version(), buildinfo.Commit()}
			return o.show(v, func() error {
				_, err := fmt.Println(buildinfo.String("cnmctl"))
				return err
			})
		},
	}
}

// suiteDrivers register the drivers of every plugin of the suite (and,
// in a test build, the test drivers: testdrivers.go).
var suiteDrivers = []func(driverapi.Registerer) error{null.Register, bridge.Register, overlay.Register, remote.Register, remoteipam.Register}

// withController opens the store, builds a controller with every driver
// of the suite, and runs fn: the host's own store, or with the cluster
// flags the cluster store of global-scope networks, as this host sees
// it. It never makes a host's store: the plugins do, on their first
// ADD, and a store that is not there means a wrong --data-dir (or a
// node with no network yet), not an empty one.
func (o *options) withController(fn func(*cnm.Controller) error) error {
	c, err := o.controller()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func (o *options) controller() (*cnm.Controller, error) {
	var c *cnm.Controller
	conf, host, err := o.cluster.conf()
	switch {
	case err != nil:
		return nil, err
	case conf != nil:
		s, err := cluster.Open(conf)
		if err != nil {
			return nil, err
		}
		c = cnm.NewClustered(s, host)
	default:
		if err := cnm.ValidateDataDir(o.dataDir); err != nil {
			return nil, usageError{"--data-dir: " + err.Error()}
		}
		s, err := store.Open(o.dataDir, store.Options{LockWait: o.wait, MustExist: true})
		if err != nil {
			return nil, err
		}
		c = cnm.New(s)
	}
	c.SetCNIPath(o.cniPath)
	for _, register := range suiteDrivers {
		if err := register(c); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// show prints v as JSON, or as table prints it.
func (o *options) show(v any, table func() error) error {
	if o.output == "json" {
		return printJSON(os.Stdout, v)
	}
	return table()
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// exactArgs turns cobra's argument errors into usage errors.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err.Error()}
		}
		return nil
	}
}
