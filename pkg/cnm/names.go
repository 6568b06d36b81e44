package cnm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// nameAddressHolder rewrites an allocation error for a requested address
// that another endpoint holds so that it names that endpoint as `cnmctl
// endpoint ls` shows it, by network and name: the allocator knows owners
// only by endpoint ID. Other errors are returned as they are.
func nameAddressHolder(tx store.Tx, network string, requested []net.IP, self string, err error) error {
	if !errors.Is(err, ipam.ErrAddressInUse) {
		return err
	}
	a := ipam.NewAllocator(tx, network, nil)
	for _, ip := range requested {
		owner, herr := a.Holder(ip)
		if herr != nil || owner == "" || owner == self {
			continue
		}
		name, nerr := endpointNameByID(tx, network, owner)
		if nerr != nil {
			return err
		}
		if name == "" {
			return fmt.Errorf("%w: %s is held by a reservation of no endpoint of network %s (ID %s; cnmctl gc releases it)",
				ipam.ErrAddressInUse, ip, network, owner)
		}
		return fmt.Errorf("%w: %s is held by endpoint %s of network %s", ipam.ErrAddressInUse, ip, name, network)
	}
	return err
}

// endpointNameByID returns the name of network's endpoint whose ID is id,
// or "" when none has it. It reads every endpoint record of the network:
// for error messages, not for the paths of a successful ADD.
func endpointNameByID(tx store.Tx, network, id string) (string, error) {
	name := ""
	err := tx.Scan(endpointPrefix(network), func(_ string, v []byte) error {
		var ep struct {
			Name string `json:"name"`
			ID   string `json:"id"`
		}
		if json.Unmarshal(v, &ep) == nil && ep.ID == id {
			name = ep.Name
		}
		return nil
	})
	return name, err
}
