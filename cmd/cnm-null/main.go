// Command cnm-null is the CNI plugin of the null driver: endpoints with
// the whole CNM lifecycle and persistence, and no interface besides lo.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/drivers/null"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func main() {
	plugin.Main(null.NetworkType, null.Register)
}
