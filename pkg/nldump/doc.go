// Package nldump reads netlink dumps to the end: the kernel flags a dump
// that a concurrent change interrupted (another plugin making or
// deleting links, say), and the netlink package then returns what it
// read with ErrDumpInterrupted; such a dump is read again.
package nldump
