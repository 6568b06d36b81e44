package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

func newGCCommand(o *options) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove expired persistent endpoints and endpoints whose sandbox is gone",
		Long: "What CNI GC does, without a runtime: endpoints joined to a network namespace that no longer exists " +
			"are left (and deleted when ephemeral); persistent endpoints whose reservation expired are deleted; " +
			"address releases a delegated IPAM plugin still owes deleted endpoints are retried.",
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return o.withController(func(c *cnm.Controller) error {
				done, err := c.Collect(context.Background(), dryRun)
				if o.output == "json" {
					if done == nil {
						done = []cnm.Collected{}
					}
					if perr := printJSON(os.Stdout, done); perr != nil {
						return perr
					}
					return err
				}
				verb := ""
				if dryRun {
					verb = "would be "
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				if len(done) > 0 {
					fmt.Fprintln(tw, "NETWORK\tENDPOINT\tACTION\tREASON")
				}
				for _, d := range done {
					fmt.Fprintf(tw, "%s\t%s\t%s%s\t%s\n", d.Network, d.Endpoint, verb, d.Action, d.Reason)
				}
				if len(done) == 0 {
					fmt.Fprintln(tw, "nothing to collect")
				}
				if ferr := tw.Flush(); ferr != nil {
					return ferr
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be removed, change nothing")
	return cmd
}

func newCheckCommand(o *options) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the store against the host; --repair fixes what it safely can",
		Long: "Check the whole store against the host: endpoints whose sandbox or interface vanished, addresses " +
			"reserved for no endpoint, and links, firewall rules and port reservations of the drivers that no " +
			"endpoint owns, and address releases a delegated IPAM plugin still owes deleted endpoints. " +
			"Exit code 3 when problems are left.",
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return o.withController(func(c *cnm.Controller) error {
				found, err := c.Audit(context.Background(), repair)
				if err != nil {
					return err
				}
				left := 0
				for _, f := range found {
					if !f.Repaired {
						left++
					}
				}
				if o.output == "json" {
					if found == nil {
						found = []cnm.Finding{}
					}
					if err := printJSON(os.Stdout, found); err != nil {
						return err
					}
				} else if err := printFindings(found); err != nil {
					return err
				}
				if left > 0 {
					return findingsError{left}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "leave stale joins, remove orphan addresses, links, rules and reservations")
	return cmd
}

func printFindings(found []cnm.Finding) error {
	if len(found) == 0 {
		fmt.Println("store and host agree")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tKIND\tOBJECT\tPROBLEM\tREPAIRED")
	for _, f := range found {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", f.Network, f.Kind, f.Object, f.Problem, f.Repaired)
	}
	return tw.Flush()
}
