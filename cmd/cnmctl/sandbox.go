package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

func newSandboxCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Short: "Sandboxes (network namespaces) and their endpoints"}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List the sandboxes and the endpoints joined to each, across networks",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return o.withController(func(c *cnm.Controller) error {
				sbs, err := c.Sandboxes()
				if err != nil {
					return err
				}
				if o.output == "json" {
					if sbs == nil {
						sbs = []*cnm.SandboxRecord{}
					}
					return printJSON(os.Stdout, sbs)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SANDBOX\tENDPOINTS")
				for _, sb := range sbs {
					fmt.Fprintf(tw, "%s\t%s\n", sb.Key, strings.Join(sb.Endpoints, ", "))
				}
				return tw.Flush()
			})
		},
	})
	return cmd
}
