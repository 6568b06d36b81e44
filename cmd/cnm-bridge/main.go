// Command cnm-bridge is the CNI plugin of the bridge driver: a Linux
// bridge per network with NAT, isolation and published ports, on CNM
// endpoints whose reservations can outlive containers.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/drivers/bridge"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func main() {
	plugin.Main(bridge.NetworkType, bridge.Register)
}
