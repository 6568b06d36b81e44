// Package overlayd is the logic of cnm-overlayd, the overlay's daemon on
// each host: it keeps the host registered in the cluster store, and it
// keeps the forwarding entries of the overlay networks on this host equal
// to the endpoints the cluster store says run on the other hosts.
//
// The plugin (cnm-overlay) writes what the daemon reads
// (pkg/drivers/overlay/records): a network's records.Network in the
// driver's cluster space, the records.HostNetwork of the links it made
// on a host in that host's part ("hosts/<host>/hostdrivers/cnm-overlay/
// networks/<network id>"), and a records.Peer per joined endpoint
// ("peers/<network id>/<endpoint id>"). A network is this host's once
// both of its records exist; its peers to program are those joined on
// other hosts that are not known to be gone (registered in
// "hostinfo/<host>" and without "hostlive/<host>", whose lease expired).
//
// The daemon lists those spaces at one revision, reconciles every
// network to exactly its peers (dataplane.Reconcile), and then watches
// them from the next revision, applying each change with
// dataplane.SetPeer and DeletePeer. It lists and reconciles again every
// resync interval, after a watch is compacted away, and when etcd
// returns from an outage: the event stream alone is never trusted.
// While etcd cannot be reached it keeps what is programmed (it never
// tears down on an error) and retries with a backoff. Stopping it (its
// context ending) stops the watches and the lease's renewal; it neither
// revokes the lease nor removes any entry, so the data plane keeps
// forwarding across a restart of the daemon.
//
// Every netlink call runs through Config.InNetNS, on one goroutine at a
// time: the real binary runs in the host's namespace and needs no hook;
// tests run a daemon per host namespace in one process.
package overlayd
