package plugin

import (
	"os"
	"runtime"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

// threadSlacks reads the timer slack of every thread of the process.
func threadSlacks() map[string]string {
	tasks, err := os.ReadDir("/proc/self/task")
	Expect(err).NotTo(HaveOccurred())
	slacks := map[string]string{}
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + t.Name() + "/timerslack_ns")
		if os.IsNotExist(err) {
			continue // the thread exited meanwhile
		}
		Expect(err).NotTo(HaveOccurred())
		slacks[t.Name()] = strings.TrimSpace(string(b))
	}
	return slacks
}

var _ = Describe("the runtime's timers in a plugin process", func() {
	want := strconv.Itoa(runtimeTimerSlack)

	It("gives every thread, the runtime's too, the plugin's timer slack", func() {
		relaxRuntimeTimers()
		slacks := threadSlacks()
		Expect(len(slacks)).To(BeNumerically(">", 1), "sysmon at least runs beside the test")
		for tid, slack := range slacks {
			Expect(slack).To(Equal(want), "thread %s", tid)
		}
	})

	It("gives it to the threads started after it", func() {
		relaxRuntimeTimers()
		before := threadSlacks()
		// Goroutines locked to their threads and parked at once need a
		// thread each: more of them than there are threads make new ones.
		type thread struct{ tid, slack string }
		got := make(chan thread)
		release := make(chan struct{})
		defer close(release)
		for range len(before) + 2 {
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				tid := strconv.Itoa(unix.Gettid())
				b, err := os.ReadFile("/proc/" + tid + "/timerslack_ns")
				slack := strings.TrimSpace(string(b))
				if err != nil {
					slack = err.Error()
				}
				got <- thread{tid, slack}
				<-release
			}()
		}
		started := 0
		for range len(before) + 2 {
			t := <-got
			Expect(t.slack).To(Equal(want), "thread %s", t.tid)
			if _, ok := before[t.tid]; !ok {
				started++
			}
		}
		Expect(started).To(BeNumerically(">", 0))
	})
})
