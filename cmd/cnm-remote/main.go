// Command cnm-remote is the CNI plugin of the remote driver: each
// network is served by a Docker network plugin (found by name as the
// Docker daemon finds it, or at a socket the configuration names), to
// which every CNM driver call is forwarded. The networks of a plugin of
// global scope are in the cluster store (etcd), as cnm-overlay's.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote"
	remoteipam "github.com/cnmnet/cnmnet/pkg/ipam/remote"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func main() {
	// A plugin of global scope keeps its networks in the cluster store.
	plugin.Main(remote.NetworkType, driverapi.RegisterAll(remote.Register, remoteipam.Register), plugin.WithCluster(cluster.Open))
}
