// Command cnm-remote is the CNI plugin of the remote driver: each
// network is served by a Docker network plugin (found by name as the
// Docker daemon finds it, or at a socket the configuration names), to
// which every CNM driver call is forwarded.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/drivers/remote"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func main() {
	plugin.Main(remote.NetworkType, remote.Register)
}
