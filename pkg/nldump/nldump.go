package nldump

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// attempts bounds the reads of a dump that keeps being interrupted.
const attempts = 5

// Retry runs dump until it is not interrupted, at most a few times, and
// returns its last result.
func Retry[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range attempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return v, err
}

// LinkList is netlink.LinkList, read to the end.
func LinkList() ([]netlink.Link, error) { return Retry(netlink.LinkList) }
