// Command cnm-overlay is the overlay CNI plugin: one network, and one
// subnet, across hosts over VXLAN, its state in the cluster store
// (etcd). Each host runs cnm-overlayd, which programs the forwarding
// entries of the endpoints on other hosts.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func main() {
	plugin.Main(records.NetworkType, overlay.Register, plugin.WithCluster(cluster.Open))
}
