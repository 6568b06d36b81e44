// Package hwm runs a command and reports the peak resident set size of
// that process alone (VmHWM), for the benchmark harness.
//
// wait4's ru_maxrss cannot serve: a child forked from a Go program
// starts on its parent's address space (vfork, or a copy of it), and
// the kernel carries that address space's high-water mark over the
// execve, so ru_maxrss is at least the parent's RSS; it also includes
// every descendant the child waited for. Run stops the child under
// ptrace at its exit (PTRACE_O_TRACEEXIT), when its address space is
// still whole, and reads VmHWM from /proc/<pid>/status.
package hwm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Run starts cmd traced, lets it run to its exit, reads its VmHWM in
// KiB, detaches, and waits for it with cmd.Wait. The calling goroutine
// is locked to its thread meanwhile (the tracer is a thread). hwmKiB is
// -1 if the exit stop was never seen (the process was killed).
func Run(cmd *exec.Cmd) (hwmKiB int64, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	pid := cmd.Process.Pid
	hwmKiB = -1
	var ws syscall.WaitStatus
	// The first stop is the SIGTRAP of the execve.
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return -1, fmt.Errorf("wait for exec stop: %w", err)
	}
	if !ws.Stopped() {
		return -1, cmd.Wait()
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT); err != nil {
		_ = syscall.PtraceDetach(pid)
		return -1, fmt.Errorf("ptrace options: %w", err)
	}
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			return hwmKiB, fmt.Errorf("ptrace cont: %w", err)
		}
		if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil {
			return hwmKiB, fmt.Errorf("wait: %w", err)
		}
		if ws.Exited() || ws.Signaled() {
			// Reaped here, so cmd.Wait cannot: report what we know.
			return hwmKiB, fmt.Errorf("process %d ended while traced: %v", pid, ws)
		}
		if !ws.Stopped() {
			continue
		}
		if ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT {
			hwmKiB = readHWM(pid)
			if err := syscall.PtraceDetach(pid); err != nil {
				return hwmKiB, fmt.Errorf("ptrace detach: %w", err)
			}
			return hwmKiB, cmd.Wait()
		}
		// A signal for the process: pass it on.
		sig = int(ws.StopSignal())
		if ws.StopSignal() == syscall.SIGTRAP {
			sig = 0
		}
	}
}

func readHWM(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
