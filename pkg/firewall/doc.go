// Package firewall keeps the iptables state of cnm-bridge networks: NAT,
// isolation between networks, published ports, and the forwarding rules
// that let bridged traffic through on hosts whose FORWARD policy is DROP
// (as on a host where Docker runs).
//
// # Principles
//
// Every rule lives in a chain this project owns (named CNM-…), except one
// jump per built-in chain that needs it, inserted once at the top. Every
// rule carries a comment: "cnm:<network>", "cnm:<network>/<endpoint>" for
// a published port, or "cnm" for the shared jumps that belong to no
// network.
//
// Process execs dominate the latency of a plugin, so rules are never
// added one by one: each operation writes everything it changes in one
// family in a single "iptables-restore --noflush -w" (ip6tables-restore
// for IPv6). In such an input, declaring a user chain (":CHAIN - [0:0]")
// creates it or flushes it, so a chain is rewritten wholesale from the
// desired state: idempotent, and with no "-D" of a rule that may be
// missing. Binaries are found through PATH and run directly, input on
// stdin, in the network namespace of the calling thread.
//
// # Chains
//
// Per family (iptables, and ip6tables for networks with IPv6 subnets):
//
//	filter FORWARD     -j CNM-FORWARD                      (inserted at 1)
//	filter CNM-FORWARD       -j CNM-ISOLATION-1            (always first)
//	                         -j CNM-FWD-<id>               one per network
//	filter CNM-ISOLATION-1   -i br ! -o br -j CNM-ISOLATION-2   per isolated network
//	filter CNM-ISOLATION-2   -o br -j DROP                 per isolated network
//	filter CNM-FWD-<id>      -o br --ctstate RELATED,ESTABLISHED -j ACCEPT
//	                         -o br --ctstate DNAT -j ACCEPT
//	                         -i br -o br -j DROP           (ICC false)
//	                         -i br -j ACCEPT
//	filter INPUT       -j CNM-INPUT                        (IPv4; inserted at 1)
//	filter CNM-INPUT         -i br -d 127.0.0.0/8 ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP   per network
//	nat PREROUTING     -m addrtype --dst-type LOCAL -j CNM-DNAT (inserted at 1)
//	nat OUTPUT         -m addrtype --dst-type LOCAL -j CNM-DNAT (inserted at 1)
//	nat POSTROUTING    -j CNM-POSTROUTING                  (inserted at 1)
//	nat CNM-DNAT             -j CNM-DN-<id>                one per network
//	nat CNM-DN-<id>          [-d hostIP] -p proto --dport hostPort -j DNAT --to-destination ctr:port
//	nat CNM-POSTROUTING      -j CNM-PR-<id>                one per network
//	nat CNM-PR-<id>          -s subnet ! -o br -j MASQUERADE           (IPMasq)
//	                         -s subnet -o br --ctstate DNAT -j MASQUERADE   (hairpin)
//	                         -s 127.0.0.0/8 -o br -j MASQUERADE        (IPv4: localhost)
//
// <id> is the first 10 hex digits of the SHA-256 of the network name
// (see NetworkChains). Isolation is Docker's two stages: traffic entering
// from an isolated bridge and leaving through another bridge is dropped
// if that bridge is isolated too. With ICC false, traffic the host
// routes from a bridge back to it (an endpoint's route to another via
// the gateway) is dropped, but replies and published ports. The OUTPUT
// jump includes 127.0.0.0/8, so that a published port answers on
// localhost; that needs the bridge's route_localnet sysctl, which the
// bridge driver sets while such a port is published. route_localnet also
// lets the bridge's containers send to the host's loopback addresses:
// CNM-INPUT drops that, as kube-proxy's KUBE-FIREWALL does, whoever set
// the sysctl.
//
// The network's own chains are rewritten wholesale. The shared chains
// hold the rules of many networks: an operation reads them with
// iptables-save, keeps the other networks' rules verbatim (recognised by
// their comments), puts its network's rules in place of the old ones, and
// rewrites the chain in the same restore. A lock file (DefaultLockFile)
// serialises these read-modify-writes between processes.
//
// # Cost of an operation, in process execs
//
//	New            0
//	EnsureNetwork  per family: 1 iptables-save, plus 1 iptables-restore if anything differs
//	SetPorts       per family of the network's subnets: 1 iptables-restore; when a rule
//	               of the network is missing, 1 more iptables-save and iptables-restore
//	RemoveNetwork  per family: 1 iptables-save, plus 1 iptables-restore if anything is left
//	Check          per family: 1 iptables-save
//	ForgetFlows    0 (conntrack over netlink)
//
// Execs reports the count, for tests and benchmarks. A restore applies
// each table as one transaction; if the nat part of an input fails after
// the filter part, running the operation again converges.
//
// # Firewall reloads
//
// A firewall reload (firewalld, "iptables -F", another tool's
// iptables-restore without --noflush) removes the jumps, or the chains
// and rules, of every network. EnsureNetwork puts back what is missing,
// and so does SetPorts, the operation of every port change, without
// reading the rules first: its restore tests every rule of the network
// with "-C" before rewriting the DNAT chain, so that it fails, changing
// nothing, when one is missing, and only then does SetPorts read and
// restore everything. Check and CheckMissing name what is missing.
//
// RemoveNetwork of the last network of a family also deletes the shared
// chains and the built-in jumps, so that a host without cnmnet networks
// has no cnmnet rules; the lock every change takes keeps that from
// racing with a network being made, whose EnsureNetwork makes them again.
package firewall
