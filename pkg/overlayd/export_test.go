package overlayd

// SetAfterList makes d run f after each listing and its reconcile,
// before the watches start: a test compacts the store there.
func SetAfterList(d *Daemon, f func()) { d.afterList = f }
