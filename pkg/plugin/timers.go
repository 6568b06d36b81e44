package plugin

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// runtimeTimerSlack is how late a plugin's threads may wake from a timed
// sleep. The Go runtime's sysmon thread sleeps 20 µs at a time while the
// process is busy; with the kernel's default slack of 50 µs it wakes about
// every 70 µs of an invocation; at 1 ms a sequential ADD took about 5%
// less CPU (120 ADDs per build, alternating). A plugin runs one goroutine on
// one P, so nothing waits for what sysmon does sooner than a millisecond
// (retaking a P from a system call, preempting a goroutine after 10 ms).
// Processes the plugin executes (iptables-restore, delegated IPAM
// plugins) inherit the slack; none of them keeps time finer than that.
const runtimeTimerSlack = 1_000_000 // ns

// relaxRuntimeTimers sets the timer slack of every thread of the process,
// the runtime's included, and of the threads they start from now on. It
// is best effort: without it a plugin is only slower.
func relaxRuntimeTimers() {
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, runtimeTimerSlack, 0, 0, 0)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	self := strconv.Itoa(unix.Gettid())
	value := []byte(strconv.Itoa(runtimeTimerSlack))
	for _, t := range tasks {
		if t.Name() != self {
			setTimerSlack(t.Name(), value)
		}
	}
}

// setTimerSlack writes another thread's timer slack (CAP_SYS_NICE, which
// a plugin run as root has). Raw calls: an os.File would register the
// file with the poller and set up a finalizer, for one write.
func setTimerSlack(tid string, value []byte) {
	fd, err := unix.Open("/proc/"+tid+"/timerslack_ns", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_, _ = unix.Write(fd, value)
	_ = unix.Close(fd)
}
