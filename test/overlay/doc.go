// Package overlay_test tests the cnm-overlay plugin on the data path:
// hosts are network namespaces on an underlay (a namespace with a
// bridge), each with a veth into it and an underlay address, sharing a
// real etcd; the plugin binary is exec'd in each host's namespace as a
// runtime would, and containers are namespaces.
//
// cnm-overlayd, which programs on every host the forwarding entries of
// the endpoints joined on the others, is not part of these tests: where
// a spec needs the other hosts to know an endpoint, it programs them
// with dataplane.Reconcile from the records in etcd (world.sync), as
// the daemon would.
package overlay_test
