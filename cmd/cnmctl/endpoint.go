package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/cnm"
)

func newEndpointCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Endpoints: list, inspect, reserve, remove"}
	var network string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List endpoints, of one network or all",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return o.withController(func(c *cnm.Controller) error { return listEndpoints(o, c, network) })
		},
	}
	ls.Flags().StringVar(&network, "network", "", "only the endpoints of this network")
	var inspectNet string
	inspect := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show an endpoint: identity, addresses, MAC, state, published ports",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return o.withController(func(c *cnm.Controller) error {
				nw, ep, err := findEndpoint(c, inspectNet, args[0])
				if err != nil {
					return err
				}
				return showEndpoint(o, c, nw, ep)
			})
		},
	}
	inspect.Flags().StringVar(&inspectNet, "network", "", "the endpoint's network (needed when the name is in several)")
	cmd.AddCommand(ls, inspect, endpointCreateCommand(o), endpointRemoveCommand(o))
	return cmd
}

func endpointCreateCommand(o *options) *cobra.Command {
	var network, name, mac string
	var ips []string
	cmd := &cobra.Command{
		Use:   "create --network N --name X [--ip A]... [--mac M]",
		Short: "Reserve a persistent endpoint with no container",
		Long: "Reserve a persistent endpoint before any container: its address and MAC are kept for the first ADD " +
			"that names it (CNI_ARGS CNM_ENDPOINT=X, runtimeConfig.endpoint, or the pod identity namespace/name/ifname).",
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if network == "" || name == "" {
				return usageError{"endpoint create needs --network and --name"}
			}
			var addrs []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					if ipn, _, err := net.ParseCIDR(s); err == nil {
						ip = ipn
					}
				}
				if ip == nil {
					return usageError{fmt.Sprintf("--ip %q is not an IP address", s)}
				}
				addrs = append(addrs, ip)
			}
			var hw net.HardwareAddr
			if mac != "" {
				var err error
				if hw, err = net.ParseMAC(mac); err != nil {
					return usageError{fmt.Sprintf("--mac %q is not a MAC address", mac)}
				}
			}
			return o.withController(func(c *cnm.Controller) error {
				ep, err := c.ReserveEndpoint(context.Background(), network, name, addrs, hw)
				if err != nil {
					return err
				}
				nw, err := c.Network(network)
				if err != nil {
					return err
				}
				return showEndpoint(o, c, nw, ep)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&network, "network", "", "the network (it must have had its first ADD)")
	f.StringVar(&name, "name", "", "the endpoint's name")
	f.StringSliceVar(&ips, "ip", nil, "a static address (one per range set), instead of the next free one")
	f.StringVar(&mac, "mac", "", "a static MAC")
	return cmd
}

func endpointRemoveCommand(o *options) *cobra.Command {
	var network string
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove an endpoint and release its address",
		Long:  "Remove an endpoint and release its address. A joined endpoint is refused unless --force, which detaches it from its sandbox first.",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return o.withController(func(c *cnm.Controller) error {
				nw, ep, err := findEndpoint(c, network, args[0])
				if err != nil {
					return err
				}
				if err := c.RemoveEndpoint(context.Background(), nw.Name, ep.Name, force); err != nil {
					return err
				}
				return o.show(removal{Removed: "endpoint", Network: nw.Name, Name: ep.Name}, func() error {
					_, err := fmt.Printf("removed endpoint %s of network %s\n", ep.Name, nw.Name)
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&network, "network", "", "the endpoint's network (needed when the name is in several)")
	cmd.Flags().BoolVar(&force, "force", false, "detach a joined endpoint from its sandbox first (of a global network joined on another host: forget that join, touching nothing there)")
	return cmd
}

// findEndpoint finds the named endpoint in network, or in the one network
// that has it when network is "".
func findEndpoint(c *cnm.Controller, network, name string) (*cnm.Network, *cnm.Endpoint, error) {
	if network != "" {
		nw, err := c.Network(network)
		if err != nil {
			return nil, nil, err
		}
		ep, err := c.Endpoint(network, name)
		return nw, ep, err
	}
	nws, err := c.Networks()
	if err != nil {
		return nil, nil, err
	}
	var found []*cnm.Network
	var ep *cnm.Endpoint
	for _, nw := range nws {
		if e, err := c.Endpoint(nw.Name, name); err == nil {
			found, ep = append(found, nw), e
		}
	}
	switch len(found) {
	case 0:
		return nil, nil, fmt.Errorf("no endpoint named %q", name)
	case 1:
		return found[0], ep, nil
	default:
		return nil, nil, usageError{fmt.Sprintf("endpoint %q is in %d networks: say which with --network", name, len(found))}
	}
}

// endpointView is what endpoint ls and inspect show.
type endpointView struct {
	*cnm.Endpoint
	Kind     string         `json:"kind"`
	OperInfo map[string]any `json:"operInfo,omitempty"`
}

func describeEndpoint(c *cnm.Controller, nw *cnm.Network, ep *cnm.Endpoint) (*endpointView, error) {
	v := &endpointView{Endpoint: ep, Kind: "ephemeral"}
	if ep.Persistent {
		v.Kind = "persistent"
	}
	if nw.Ready {
		info, err := c.OperInfo(nw, ep)
		if err != nil {
			return nil, err
		}
		v.OperInfo = info
	}
	return v, nil
}

func listEndpoints(o *options, c *cnm.Controller, network string) error {
	eps, err := c.Endpoints(network)
	if err != nil {
		return err
	}
	views := []*endpointView{}
	for _, ep := range eps {
		nw, err := c.Network(ep.Network)
		if err != nil {
			return err
		}
		v, err := describeEndpoint(c, nw, ep)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	if o.output == "json" {
		return printJSON(os.Stdout, views)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tNAME\tKIND\tADDRESSES\tMAC\tSTATE\tPORTS")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Network, v.Name, v.Kind, dash(addresses(v.Endpoint)),
			dash(v.MAC), state(v.Endpoint, time.Now()), dash(ports(v.OperInfo)))
	}
	return tw.Flush()
}

// showEndpoint prints one endpoint in the chosen output format.
func showEndpoint(o *options, c *cnm.Controller, nw *cnm.Network, ep *cnm.Endpoint) error {
	v, err := describeEndpoint(c, nw, ep)
	if err != nil {
		return err
	}
	return o.show(v, func() error { return printEndpoint(v) })
}

func printEndpoint(v *endpointView) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k string, val any) { fmt.Fprintf(tw, "%s:\t%v\n", k, val) }
	row("Network", v.Network)
	row("Name", v.Name)
	row("ID", v.ID)
	row("Kind", v.Kind)
	row("Addresses", dash(addresses(v.Endpoint)))
	row("MAC", dash(v.MAC))
	row("State", state(v.Endpoint, time.Now()))
	if a := v.Sandbox; a != nil {
		if a.Host != "" {
			row("Host", a.Host)
		}
		row("Sandbox", a.Key)
		row("Container", a.ContainerID)
		row("Interface", dash(a.DstName))
	}
	row("Published ports", dash(ports(v.OperInfo)))
	row("Created", v.Created.Format(time.RFC3339))
	return tw.Flush()
}

func addresses(ep *cnm.Endpoint) string {
	var out []string
	for _, a := range ep.Addresses {
		out = append(out, a.Address)
	}
	return strings.Join(out, ",")
}

// state is "joined <container>", "left since T, expires T", ...
func state(ep *cnm.Endpoint, now time.Time) string {
	switch {
	case ep.Sandbox != nil && ep.Sandbox.Host != "":
		// A global network's endpoint: the host it is joined on.
		return ep.State + " " + shortID(ep.Sandbox.ContainerID) + " on " + ep.Sandbox.Host
	case ep.Sandbox != nil:
		return ep.State + " " + shortID(ep.Sandbox.ContainerID)
	case ep.State == cnm.StateLeft && !ep.ExpiresAt.IsZero() && !now.Before(ep.ExpiresAt):
		// Deleted by the next gc, or by an ADD that needs the room.
		return "left since " + ep.LeftAt.Format(time.RFC3339) + ", expired " + ep.ExpiresAt.Format(time.RFC3339)
	case ep.State == cnm.StateLeft && !ep.ExpiresAt.IsZero():
		return "left since " + ep.LeftAt.Format(time.RFC3339) + ", expires " + ep.ExpiresAt.Format(time.RFC3339)
	case ep.State == cnm.StateLeft:
		return "left since " + ep.LeftAt.Format(time.RFC3339)
	default:
		return ep.State
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ports renders the published ports of a driver's operational data the
// way Docker does: "*:8080->80/tcp".
func ports(info map[string]any) string {
	raw, err := json.Marshal(info["portMappings"])
	if err != nil {
		return ""
	}
	var list []struct {
		Protocol      string `json:"protocol"`
		HostIP        string `json:"hostIP"`
		HostPort      int    `json:"hostPort"`
		ContainerPort int    `json:"containerPort"`
	}
	if json.Unmarshal(raw, &list) != nil {
		return ""
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range list {
		host := p.HostIP
		if host == "" {
			host = "*"
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		// A mapping on every address is bound once per address family.
		if s := fmt.Sprintf("%s:%d->%d/%s", host, p.HostPort, p.ContainerPort, p.Protocol); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return strings.Join(out, ",")
}
