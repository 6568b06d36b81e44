package integration_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	bolt "go.etcd.io/bbolt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

var _ = Describe("reliability: a store that cannot be used", Label("reliability"), func() {
	var (
		w    *world
		n    network
		path string
	)
	BeforeEach(func() {
		w = newWorld()
		n = bridgeNet("sf", "10.94.0.0/24")
		_, err := w.add(n, attachment{id: "resident", netns: newNS()})
		Expect(err).NotTo(HaveOccurred())
		path = filepath.Join(w.dataDir, store.FileName)
	})

	// expectRefused runs an ADD, checks it gets the code without a panic,
	// that the store file is byte for byte as it was, and that cnmctl
	// check explains the problem.
	expectRefused := func(code uint, says string) {
		before, _ := os.ReadFile(path)
		_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "new", netns: newNS().Path(), stdin: w.stdin(n, nil)})
		Expect(err).To(HaveOccurred())
		Expect(cniCode(err)).To(Equal(code), err.Error())
		Expect(err.Error()).To(ContainSubstring(says))
		Expect(err.Error()).NotTo(ContainSubstring("panic"))
		after, _ := os.ReadFile(path)
		Expect(after).To(Equal(before), "the store is never overwritten")
		_, errOut, exit := w.cnmctl("check")
		Expect(exit).To(Equal(1))
		Expect(errOut).To(ContainSubstring(says))
		Expect(w.hostLinks("veth")).To(HaveLen(1))
	}

	It("answers 5 for a truncated store", func() {
		// Down to its two meta pages: the pages they point to are gone.
		Expect(os.Truncate(path, 2*4096)).To(Succeed())
		expectRefused(types.ErrIOFailure, "truncated")
	})

	It("answers 5 for a store whose meta pages are garbage", func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		Expect(err).NotTo(HaveOccurred())
		_, err = f.WriteAt(bytes.Repeat([]byte{0xa5}, 8192), 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(f.Close()).To(Succeed())
		expectRefused(types.ErrIOFailure, "unreadable")
	})

	It("answers 5 for a store of another schema version", func() {
		db, err := bolt.Open(path, 0o600, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("cnm")).Put([]byte("meta/schema"), []byte("2")) })).To(Succeed())
		Expect(db.Close()).To(Succeed())
		expectRefused(types.ErrIOFailure, "schema version")
	})

	It("answers 5 when the store directory cannot be written", func() {
		if _, err := exec.LookPath("chattr"); err != nil {
			Skip("chattr (e2fsprogs) is needed to make a directory unwritable for root")
		}
		dir := filepath.Join(GinkgoT().TempDir(), "ro")
		Expect(os.Mkdir(dir, 0o700)).To(Succeed())
		if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
			Skip("this file system has no immutable attribute: " + string(out))
		}
		DeferCleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
		ro := n
		ro.name = "ro"
		raw := w.stdinWith(ro, map[string]any{"dataDir": dir, "ipam": ipamRanges("10.94.9.0/24")})
		_, err := w.exec("cnm-bridge", invocation{command: "ADD", containerID: "new", netns: newNS().Path(), stdin: raw})
		Expect(cniCode(err)).To(Equal(types.ErrIOFailure), err.Error())
		Expect(err.Error()).To(ContainSubstring(dir))
		Expect(w.hostLinks("veth")).To(HaveLen(1))
	})

	It("answers 5 when the disk is full, and leaves no store behind", func() {
		if _, err := exec.LookPath("unshare"); err != nil {
			Skip("unshare (util-linux) is needed for a private tmpfs")
		}
		dir := GinkgoT().TempDir()
		var stdout, stderr bytes.Buffer
		code := 0
		Expect(w.hostNS.Do(func(ns.NetNS) error {
			full := w.stdinWith(n, map[string]any{"dataDir": dir})
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
				filepath.Join(binDir, "fault", "fullfs"), dir, "-", filepath.Join(binDir, "cnm-bridge"))
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=full", "CNI_NETNS=" + newNS().Path(), "CNI_IFNAME=eth0",
				"CNI_PATH=" + binDir, "PATH=" + os.Getenv("PATH")}
			cmd.Stdin = bytes.NewReader(full)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
				return nil
			}
			return err
		})).To(Succeed())
		Expect(code).To(Equal(1), "stdout %s\nstderr %s", stdout.String(), stderr.String())
		te := &types.Error{}
		Expect(json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), te)).To(Succeed(), stdout.String())
		Expect(te.Code).To(Equal(types.ErrIOFailure), te.Error())
		Expect(te.Error()).To(ContainSubstring("no space left on device"))
		Expect(stderr.String()).NotTo(ContainSubstring("panic"))
		Expect(stderr.String()).To(ContainSubstring("fullfs: store unchanged: true"), "no half-made store file")
		Expect(w.hostLinks("veth")).To(HaveLen(1), "nothing half-made on the host")
	})
})
