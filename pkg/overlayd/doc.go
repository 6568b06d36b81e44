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
// A network of which this host has a host record but whose cluster
// record is gone was deleted on another host (cnmctl network rm runs the
// plugin's DeleteNetwork on one host only): the plugin writes the cluster
// record first and the host record after, each in a transaction of its
// own, and deletes them in the other order, so no network being created
// looks like that. The daemon then removes this host's part as the
// plugin's DeleteNetwork does on its own: under the host lock it reads
// both records again (the watches of the two spaces are not ordered with
// each other), and only if etcd answers that the cluster record is absent
// and the host record is there and readable, it removes the network's
// firewall state (pkg/firewall RemoveNetwork) and its links
// (dataplane.Remove), then deletes the host record in a transaction that
// still finds the cluster record absent and the host record unchanged.
// A cluster record that does not decode is not a deleted one, and an
// etcd error removes nothing: the removal is tried again.
//
// The daemon lists those spaces at one revision, reconciles every
// network to exactly its peers (dataplane.Reconcile), and then watches
// them from the next revision, applying each change with
// dataplane.SetPeer and DeletePeer. It lists and reconciles again every
// resync interval, after a watch is compacted away, and when etcd
// returns from an outage: the event stream alone is never trusted.
// While etcd cannot be reached it keeps what is programmed (it never
// tears down on an error, and removes no network) and retries with a
// backoff. Stopping it (its context ending) stops the watches and the
// lease's renewal; it neither revokes the lease nor removes any entry,
// so the data plane keeps forwarding across a restart of the daemon.
//
// Every netlink call runs through Config.InNetNS, on one goroutine at a
// time: the real binary runs in the host's namespace and needs no hook;
// tests run a daemon per host namespace in one process.
package overlayd
