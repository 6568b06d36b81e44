// Package hostlock is the lock file the plugins of one host take around
// a step that reads state and then changes the host accordingly, where
// two processes doing it at once would undo each other: the firewall's
// shared chains, a bridge network's creation and port sync.
package hostlock
