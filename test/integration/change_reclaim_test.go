package integration_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ = Describe("expired reservations on a full network, without GC", func() {
	var (
		w *world
		n network
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("small", "10.98.0.0/29") // .2 to .6: five addresses
		n.extra = map[string]any{"reservationTTL": "1s", "maxPersistentEndpoints": 5}
	})

	// fill reserves every address for persistent endpoints that then
	// leave, as pods deleted for good do; containerd 1.6 sends no GC.
	fill := func() map[string]string {
		GinkgoHelper()
		ips := map[string]string{}
		for i := range 5 {
			name := fmt.Sprintf("gone-%d", i)
			a := attachment{id: name, netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", name}}}
			res, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			ips[name] = firstIP(res)
			Expect(w.del(n, a)).To(Succeed())
		}
		return ips
	}

	It("are reclaimed by the ADD that finds the range exhausted", func() {
		fill()
		// Before the reservations expire the network is full.
		_, err := w.add(n, attachment{id: "early", netns: newNS()})
		Expect(cniCode(err)).To(BeEquivalentTo(102))
		time.Sleep(1100 * time.Millisecond)
		a := attachment{id: "new", netns: newNS()}
		res, err := w.add(n, a)
		Expect(err).NotTo(HaveOccurred())
		Expect(firstIP(res)).To(HavePrefix("10.98.0."))
		Expect(w.check(n, a)).To(Succeed())
		// Every expired reservation went, not only the one needed.
		Expect(keysUnder(w.dump(), "endpoints/small/gone-")).To(BeEmpty())
	})

	It("do not count against the cap on persistent endpoints", func() {
		n.extra = map[string]any{"reservationTTL": "1s", "maxPersistentEndpoints": 2}
		for _, name := range []string{"a", "b"} {
			a := attachment{id: name, netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", name}}}
			_, err := w.add(n, a)
			Expect(err).NotTo(HaveOccurred())
			Expect(w.del(n, a)).To(Succeed())
		}
		c := attachment{id: "c", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "c"}}}
		_, err := w.add(n, c)
		Expect(cniCode(err)).To(BeEquivalentTo(105))
		time.Sleep(1100 * time.Millisecond)
		_, err = w.add(n, c)
		Expect(err).NotTo(HaveOccurred())
	})

	It("count as free for STATUS", func() {
		fill()
		err := w.status(n)
		Expect(cniCode(err)).To(Equal(types.ErrPluginNotAvailable), "unexpired reservations hold the range")
		time.Sleep(1100 * time.Millisecond)
		Expect(w.status(n)).To(Succeed())
	})

	It("are never taken while a persistent endpoint is joined", func() {
		ips := fill()
		time.Sleep(1100 * time.Millisecond)
		// Rejoining one makes it live again: it must keep its address.
		back := attachment{id: "back", netns: newNS(), args: [][2]string{{"CNM_ENDPOINT", "gone-0"}}}
		res, err := w.add(n, back)
		Expect(err).NotTo(HaveOccurred())
		for i := range 4 {
			_, err := w.add(n, attachment{id: fmt.Sprintf("new-%d", i), netns: newNS()})
			Expect(err).NotTo(HaveOccurred())
		}
		_, err = w.add(n, attachment{id: "one-too-many", netns: newNS()})
		Expect(cniCode(err)).To(BeEquivalentTo(102))
		Expect(w.check(n, back)).To(Succeed())
		Expect(firstIP(res)).To(Equal(ips["gone-0"]))
	})
})

var _ = Describe("STATUS on a busy node", func() {
	It("answers 11 (try again later), not 50, while the store stays locked", func() {
		w := newWorld()
		n := nullNet("1.1.0")
		Expect(w.status(n)).To(Succeed()) // makes the store
		holdStoreLock(w.dataDir)
		start := time.Now()
		err := w.status(n)
		Expect(cniCode(err)).To(Equal(types.ErrTryAgainLater), "%v", err)
		Expect(time.Since(start)).To(BeNumerically(">=", store.DefaultLockWait-time.Second))
	})
})

// holdStoreLock takes the store directory's lock in another process, as
// a plugin in the middle of an ADD holds it, and returns its release.
func holdStoreLock(dir string) func() {
	GinkgoHelper()
	cmd := exec.Command("flock", "--exclusive", filepath.Join(dir, store.LockName), "sleep", "60")
	// sleep inherits the locked file: the whole group must go.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	Expect(cmd.Start()).To(Succeed())
	release := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	DeferCleanup(release)
	// flock runs sleep once it holds the lock.
	childOf(cmd.Process.Pid)
	return release
}
