package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

func newNetworkCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Networks: list, inspect, remove"}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "ls",
			Short: "List the networks",
			Args:  exactArgs(0),
			RunE: func(*cobra.Command, []string) error {
				return o.withController(func(c *cnm.Controller) error { return listNetworks(o, c) })
			},
		},
		&cobra.Command{
			Use:   "inspect NAME",
			Short: "Show a network: driver, subnets, host state, endpoints, addresses",
			Args:  exactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return o.withController(func(c *cnm.Controller) error {
					nw, err := c.Network(args[0])
					if err != nil {
						return err
					}
					v, err := describeNetwork(c, nw)
					if err != nil {
						return err
					}
					return o.show(v, func() error { return printNetwork(v) })
				})
			},
		},
		networkRemoveCommand(o),
	)
	return cmd
}

func networkRemoveCommand(o *options) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a network and its host state (bridge, firewall chains)",
		Long:  "Remove a network and its host state. A network with endpoints is refused unless --force, which detaches and deletes them first.",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return o.withController(func(c *cnm.Controller) error {
				if err := c.RemoveNetwork(context.Background(), args[0], force); err != nil {
					return err
				}
				return o.show(removal{Removed: "network", Network: args[0]}, func() error {
					_, err := fmt.Printf("removed network %s\n", args[0])
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the network's endpoints first, detaching joined ones")
	return cmd
}

// removal is what rm prints under -o json.
type removal struct {
	Removed string `json:"removed"` // "network" or "endpoint"
	Network string `json:"network"`
	Name    string `json:"name,omitempty"`
}

// networkView is what network ls and inspect show.
type networkView struct {
	*cnm.Network
	Config    any            `json:"config,omitempty"` // the stored configuration, as JSON
	Host      map[string]any `json:"host,omitempty"`
	Endpoints int            `json:"endpoints"`
	Joined    int            `json:"joined"`
	Addresses *cnm.Usage     `json:"addresses"`
}

func describeNetwork(c *cnm.Controller, nw *cnm.Network) (*networkView, error) {
	v := &networkView{Network: nw}
	if len(nw.Config) > 0 {
		// The configuration of the network's latest successful ADD: the
		// one in force, which the host keys describe.
		v.Config = nw.Config
	}
	eps, err := c.Endpoints(nw.Name)
	if err != nil {
		return nil, err
	}
	v.Endpoints = len(eps)
	for _, ep := range eps {
		if ep.Sandbox != nil {
			v.Joined++
		}
	}
	if v.Addresses, err = c.AddressUsage(nw); err != nil {
		return nil, err
	}
	if v.Host, err = c.NetworkOperInfo(nw); err != nil {
		return nil, err
	}
	return v, nil
}

func listNetworks(o *options, c *cnm.Controller) error {
	nws, err := c.Networks()
	if err != nil {
		return err
	}
	views := []*networkView{}
	for _, nw := range nws {
		v, err := describeNetwork(c, nw)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	if o.output == "json" {
		return printJSON(os.Stdout, views)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDRIVER\tSUBNETS\tHOST\tENDPOINTS\tJOINED\tUSED\tFREE")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", v.Name, v.Driver, dash(strings.Join(v.Addresses.Subnets, ",")),
			dash(hostName(v.Host)), v.Endpoints, v.Joined, perFamily(v.Addresses, usedOf), perFamily(v.Addresses, freeOf))
	}
	return tw.Flush()
}

func printNetwork(v *networkView) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k string, val any) { fmt.Fprintf(tw, "%s:\t%v\n", k, val) }
	row("Name", v.Name)
	row("ID", v.ID)
	row("Driver", v.Driver)
	row("Created", v.Created.Format("2006-01-02T15:04:05Z"))
	row("Subnets", dash(strings.Join(v.Addresses.Subnets, ", ")))
	row("Gateways", dash(strings.Join(v.Addresses.Gateways, ", ")))
	for _, k := range slices.Sorted(maps.Keys(v.Host)) {
		row("Host "+k, v.Host[k])
	}
	row("Endpoints", fmt.Sprintf("%d (%d joined)", v.Endpoints, v.Joined))
	if len(v.Addresses.Families) == 0 {
		row("Addresses", fmt.Sprintf("%d used", v.Addresses.Used))
	}
	for _, f := range v.Addresses.Families {
		row(f.Family+" addresses", fmt.Sprintf("%d used, %s free", f.Used, f.Free))
	}
	return tw.Flush()
}

func usedOf(f cnm.FamilyUsage) string { return fmt.Sprint(f.Used) }
func freeOf(f cnm.FamilyUsage) string { return f.Free }

// perFamily is a count of each address family, "250" for one family,
// "250 (IPv4), 18446744073709551613 (IPv6)" for two, "-" for none.
func perFamily(u *cnm.Usage, count func(cnm.FamilyUsage) string) string {
	switch len(u.Families) {
	case 0:
		return "-"
	case 1:
		return count(u.Families[0])
	}
	var out []string
	for _, f := range u.Families {
		out = append(out, count(f)+" ("+f.Family+")")
	}
	return strings.Join(out, ", ")
}

func hostName(host map[string]any) string {
	if b, ok := host["bridge"].(string); ok {
		return b
	}
	return ""
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
