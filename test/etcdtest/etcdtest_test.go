package etcdtest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/cnmnet/cnmnet/test/etcdtest"
)

const orphanDirEnv = "CNM_ETCDTEST_ORPHAN_DIR"

// TestOrphanChild is the test process that the spec "dies with the test
// process" kills: it starts a cluster, prints its pids and waits.
func TestOrphanChild(t *testing.T) {
	dir := os.Getenv(orphanDirEnv)
	if dir == "" {
		t.Skip("run by the spec that kills it")
	}
	c, err := etcdtest.Start(dir, etcdtest.Options{Members: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		fmt.Println("pid", c.Pid(i))
	}
	fmt.Println("started")
	time.Sleep(time.Hour)
}

// gone says whether process pid has ended: it no longer exists, or is a
// zombie that the init process has not reaped yet.
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

// client is a client of c closed when the spec ends.
func client(c *etcdtest.Cluster) *clientv3.Client {
	GinkgoHelper()
	cli, err := c.Client()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	return cli
}

// put writes key with a deadline, as every call should have one.
func put(cli *clientv3.Client, key, val string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cli.Put(ctx, key, val)
	return err
}

func get(cli *clientv3.Client, key string) string {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.Kvs).To(HaveLen(1))
	return string(resp.Kvs[0].Value)
}

// leader is the index of the member that leads the cluster.
func leader(c *etcdtest.Cluster, cli *clientv3.Client) int {
	GinkgoHelper()
	for i, ep := range c.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	Fail("no member leads")
	return -1
}

var _ = Describe("an etcd test cluster", func() {
	It("of one member serves puts and gets on a unix socket", func() {
		c := etcdtest.StartForTest(GinkgoT(), etcdtest.Options{})
		Expect(c.Endpoints).To(HaveLen(1))
		Expect(c.Endpoints[0]).To(HavePrefix("unix:///"))
		Expect(c.TLS).To(BeNil())
		cli := client(c)
		Expect(put(cli, "k", "v", 5*time.Second)).To(Succeed())
		Expect(get(cli, "k")).To(Equal("v"))
	})

	It("of three members survives one killed, stops writing without quorum and recovers on Restart", func() {
		t0 := time.Now()
		c := etcdtest.StartForTest(GinkgoT(), etcdtest.Options{Members: 3})
		GinkgoWriter.Printf("3 members serving after %s\n", time.Since(t0))
		cli := client(c)
		Expect(put(cli, "a", "1", 5*time.Second)).To(Succeed())

		By("killing the leader: the others elect one and keep serving")
		lead := leader(c, cli)
		Expect(c.Kill(lead)).To(Succeed())
		t0 = time.Now()
		Eventually(func() error { return put(cli, "a", "2", time.Second) }).
			WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		GinkgoWriter.Printf("writes again %s after the leader was killed\n", time.Since(t0))
		Expect(get(cli, "a")).To(Equal("2"))

		By("killing a second member: a write fails within its deadline")
		other := (lead + 1) % 3
		Expect(c.Kill(other)).To(Succeed())
		t0 = time.Now()
		err := put(cli, "a", "3", 2*time.Second)
		Expect(err).To(HaveOccurred())
		Expect(time.Since(t0)).To(BeNumerically("<", 3*time.Second))

		By("restarting one of them: quorum is back, with the data")
		t0 = time.Now()
		Expect(c.Restart(lead)).To(Succeed())
		GinkgoWriter.Printf("restarted member ready after %s\n", time.Since(t0))
		Eventually(func() error { return put(cli, "a", "4", time.Second) }).
			WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		Expect(get(cli, "a")).To(Equal("4"))

		By("restarting the last: all three serve")
		Expect(c.Restart(other)).To(Succeed())
		for _, ep := range c.Endpoints {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cli.Status(ctx, ep)
			cancel()
			Expect(err).NotTo(HaveOccurred(), ep)
		}
	})

	It("brings back a cluster all of whose members were killed, restarted in one call", func() {
		c := etcdtest.StartForTest(GinkgoT(), etcdtest.Options{Members: 3})
		cli := client(c)
		Expect(put(cli, "k", "v", 5*time.Second)).To(Succeed())
		Expect(c.Kill(0, 1, 2)).To(Succeed())
		Expect(put(cli, "k", "w", time.Second)).NotTo(Succeed())
		t0 := time.Now()
		Expect(c.Restart(0, 1, 2)).To(Succeed())
		GinkgoWriter.Printf("restarted members ready after %s\n", time.Since(t0))
		Eventually(func() error { return put(cli, "k", "w", time.Second) }).
			WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		GinkgoWriter.Printf("writes again after %s\n", time.Since(t0))
		Expect(get(cli, "k")).To(Equal("w"))
	})

	Context("with TLS", func() {
		var c *etcdtest.Cluster
		BeforeEach(func() {
			c = etcdtest.StartForTest(GinkgoT(), etcdtest.Options{TLS: true})
		})

		It("serves a client with the client certificate, verifying the server by its socket name", func() {
			Expect(c.Endpoints[0]).To(HavePrefix("unixs:///"))
			Expect(c.TLS).NotTo(BeNil())
			cfg, err := c.ClientConfig()
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.TLS.ServerName).To(BeEmpty(), "the client finds the name itself")
			cli := client(c)
			Expect(put(cli, "k", "v", 5*time.Second)).To(Succeed())
			Expect(get(cli, "k")).To(Equal("v"))
		})

		It("refuses a client without a client certificate", func() {
			cfg, err := c.ClientConfig()
			Expect(err).NotTo(HaveOccurred())
			cfg.TLS.Certificates = nil
			cfg.TLS.GetClientCertificate = nil
			cli, err := clientv3.New(cfg)
			Expect(err).NotTo(HaveOccurred())
			defer cli.Close()
			err = put(cli, "k", "v", 2*time.Second)
			Expect(err).To(HaveOccurred())
			GinkgoWriter.Printf("without a client certificate: %v\n", err)
		})

		It("refuses a client without TLS", func() {
			cfg, err := c.ClientConfig()
			Expect(err).NotTo(HaveOccurred())
			cfg.Endpoints = []string{strings.Replace(c.Endpoints[0], "unixs://", "unix://", 1)}
			cfg.TLS = nil
			cli, err := clientv3.New(cfg)
			Expect(err).NotTo(HaveOccurred())
			defer cli.Close()
			err = put(cli, "k", "v", 2*time.Second)
			Expect(err).To(HaveOccurred())
			GinkgoWriter.Printf("without TLS: %v\n", err)
		})
	})

	It("leaves no process, socket or data after Stop, which may be called twice", func() {
		dir := GinkgoT().TempDir()
		c, err := etcdtest.Start(dir, etcdtest.Options{Members: 3, TLS: true})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(c.Stop)
		var pids []int
		for i := range 3 {
			Expect(c.Pid(i)).NotTo(BeZero())
			pids = append(pids, c.Pid(i))
		}
		Expect(c.Kill(1)).To(Succeed()) // leaves its socket file, as a crash does
		Expect(filepath.Join(dir, "m1.sock")).To(BeAnExistingFile())

		Expect(c.Stop()).To(Succeed())
		for _, pid := range pids {
			Expect(gone(pid)).To(BeTrue(), "pid %d", pid)
		}
		entries, err := os.ReadDir(dir)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(BeEmpty())
		Expect(c.Stop()).To(Succeed())
		Expect(c.Restart(0)).NotTo(Succeed())
	})

	It("dies with the test process that started it", func() {
		// The members are orphaned when their test process dies: take
		// them as ours (init here may not reap) so as to reap them.
		Expect(unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)).To(Succeed())
		DeferCleanup(unix.Prctl, unix.PR_SET_CHILD_SUBREAPER, uintptr(0), uintptr(0), uintptr(0), uintptr(0))
		cmd := exec.Command(os.Args[0], "-test.run=^TestOrphanChild$")
		cmd.Env = append(os.Environ(), orphanDirEnv+"="+GinkgoT().TempDir())
		cmd.Stderr = GinkgoWriter
		out, err := cmd.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		var pids []int
		lines := bufio.NewScanner(out)
		for lines.Scan() && lines.Text() != "started" {
			if pid, ok := strings.CutPrefix(lines.Text(), "pid "); ok {
				n, err := strconv.Atoi(pid)
				Expect(err).NotTo(HaveOccurred())
				pids = append(pids, n)
			}
		}
		Expect(pids).To(HaveLen(3))
		for _, pid := range pids {
			Expect(gone(pid)).To(BeFalse(), "pid %d", pid)
		}

		Expect(cmd.Process.Signal(syscall.SIGKILL)).To(Succeed())
		for _, pid := range pids {
			Eventually(func() bool {
				_, _ = syscall.Wait4(pid, nil, syscall.WNOHANG, nil)
				return gone(pid)
			}).WithTimeout(5*time.Second).Should(BeTrue(), "pid %d", pid)
		}
	})

	It("refuses a directory whose socket paths would be too long", func() {
		dir := filepath.Join(GinkgoT().TempDir(), strings.Repeat("d", 100))
		_, err := etcdtest.Start(dir, etcdtest.Options{})
		Expect(err).To(MatchError(ContainSubstring("use a shorter dir")))
	})
})
