// Command cnm-testglobal is the test driver's plugin at global scope: its
// networks live in the cluster store, for the tests of networks whose
// endpoints span hosts.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/cluster"
	"github.com/cnmnet/cnmnet/pkg/plugin"
	"github.com/cnmnet/cnmnet/test/testdriver"
)

func main() {
	plugin.Main(testdriver.GlobalNetworkType, testdriver.RegisterGlobal, plugin.WithCluster(cluster.Open))
}
