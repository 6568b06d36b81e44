// Package cluster connects the core to the cluster store of global-scope
// networks: it opens the etcd store a configuration's cluster section
// names, and keeps a host's registration and lease there, by which the
// other hosts know whether it is alive (see cnm.HostRecord).
//
// Only binaries with global-scope drivers import it, so that the others
// (cnm-bridge, cnm-null) do not link an etcd client.
package cluster
