package firewall

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/pkg/nldump"
)

// ForgetFlows deletes the conntrack entries of UDP and SCTP flows to the
// host ports of ports, just published. A client that sent to such a port
// before it was published has an entry without DNAT, and conntrack looks
// the NAT rules up only for a flow's first packet: as long as the client
// keeps sending (a DNS or syslog client from a fixed port, say) the entry
// never expires and the flow never reaches the container. The same holds
// for an entry that still DNATs to the endpoint that published the port
// before. TCP needs nothing: a refused connection leaves no entry that
// its next SYN would reuse.
//
// Only entries of the mappings' protocol, host port and family go, and
// only those to the mapping's host address, or to any local address (what
// the DNAT jump's "--dst-type LOCAL" matches) for a mapping on every
// address: flows the host forwards elsewhere are not touched. It runs no
// process: conntrack is read and changed over netlink, in the network
// namespace of the calling thread.
func (f *Firewall) ForgetFlows(ports []PortMapping) error {
	byFam := map[family][]PortMapping{}
	for _, pm := range ports {
		if protoNumber(pm.Protocol) == 0 {
			continue
		}
		fam, err := pm.validate()
		if err != nil {
			return err
		}
		byFam[fam] = append(byFam[fam], pm)
	}
	var errs []error
	for _, fam := range []family{ipv4, ipv6} {
		if len(byFam[fam]) == 0 {
			continue
		}
		filter, err := newStaleFlows(fam, byFam[fam])
		if err == nil {
			_, err = netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam.inet(), filter)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("conntrack: forget %s flows to published ports: %w", fam, err))
		}
	}
	return errors.Join(errs...)
}

// protoNumber is the IP protocol of the protocols whose flows ForgetFlows
// deletes, 0 for the others.
func protoNumber(proto string) uint8 {
	switch strings.ToLower(proto) {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return 0
}

func (fam family) inet() netlink.InetFamily {
	if fam == ipv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// staleFlows matches the conntrack entries ForgetFlows deletes.
type staleFlows struct {
	ports []PortMapping
	// local are the host's local destinations, for mappings on every
	// address.
	local []*net.IPNet
}

var _ netlink.CustomConntrackFilter = staleFlows{}

// newStaleFlows reads the local destinations of family fam from the
// local routing table: what addrtype's LOCAL matches.
func newStaleFlows(fam family, ports []PortMapping) (staleFlows, error) {
	nlFam := netlink.FAMILY_V4
	if fam == ipv6 {
		nlFam = netlink.FAMILY_V6
	}
	routes, err := nldump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(nlFam,
			&netlink.Route{Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return staleFlows{}, fmt.Errorf("list local addresses: %w", err)
	}
	s := staleFlows{ports: ports}
	for _, r := range routes {
		if r.Dst != nil {
			s.local = append(s.local, r.Dst)
		}
	}
	return s, nil
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter: a flow
// whose original direction goes to one of the published host ports.
func (s staleFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	for _, pm := range s.ports {
		if flow.Forward.Protocol != protoNumber(pm.Protocol) || int(flow.Forward.DstPort) != pm.HostPort {
			continue
		}
		if ip := pm.hostIP(); ip != nil {
			if ip.Equal(flow.Forward.DstIP) {
				return true
			}
			continue
		}
		for _, l := range s.local {
			if l.Contains(flow.Forward.DstIP) {
				return true
			}
		}
	}
	return false
}
