// Package overlay_test tests the cnm-overlay plugin on the data path:
// hosts are network namespaces on an underlay (a namespace with a
// bridge), each with a veth into it and an underlay address, sharing a
// real etcd (three members for the fault specs); the plugin binary is
// exec'd in each host's namespace as a runtime would, and containers are
// namespaces.
//
// The specs about the plugin emulate cnm-overlayd in process: where one
// needs the other hosts to know an endpoint, it programs them with
// dataplane.Reconcile from the records in etcd (world.sync), as the
// daemon would. Those in faults_test.go, soak_test.go, isolation_test.go
// and ipv6_test.go run the real cnm-overlayd binary on every host.
//
// A test file here must sort after doc.go: this file declares the
// package too, and go reads them in order.
package overlay_test
