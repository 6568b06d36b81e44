package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/test/testbin"
)

// hostLocalDir returns a directory holding a host-local binary.
func hostLocalDir() string {
	dir := GinkgoT().TempDir()
	_, err := testbin.Build("host-local", dir)
	Expect(err).NotTo(HaveOccurred())
	return dir
}

var _ = Describe("Delegate", Ordered, func() {
	var pluginDir string

	BeforeAll(func() {
		pluginDir = hostLocalDir()
	})

	hostLocalConf := func(version, dataDir string, extra string) []byte {
		return fmt.Appendf(nil, `{"cniVersion":%q,"name":"dnet","type":"bridge",%s
			"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.9.0.0/24"}]]}}`,
			version, extra, dataDir)
	}

	var (
		ctx     context.Context
		dataDir string
		d       ipam.Delegate
	)

	BeforeEach(func() {
		ctx = context.Background()
		dataDir = GinkgoT().TempDir()
		// An inherited container ID must not reach the plugin.
		GinkgoT().Setenv("CNI_CONTAINERID", "the-container")
		d = ipam.Delegate{
			Type:        "host-local",
			NetConf:     hostLocalConf("1.1.0", dataDir, ""),
			Path:        "/nonexistent:" + pluginDir,
			ContainerID: "ep-123",
			IfName:      "eth0",
			NetNS:       "/var/run/netns/unused-by-ipam",
		}
	})

	reservation := func(ip string) string {
		b, err := os.ReadFile(filepath.Join(dataDir, "dnet", ip))
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		Expect(err).NotTo(HaveOccurred())
		return string(b)
	}

	It("adds under our identity, checks, and deletes", func() {
		res, err := d.Add(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.IPs).To(HaveLen(1))
		Expect(res.IPs[0].Address.String()).To(Equal("10.9.0.2/24"))
		Expect(res.IPs[0].Gateway.String()).To(Equal("10.9.0.1"))
		Expect(reservation("10.9.0.2")).To(HavePrefix("ep-123"))
		Expect(reservation("10.9.0.2")).To(HaveSuffix("eth0"))

		Expect(d.Check(ctx)).To(Succeed())

		Expect(d.Del(ctx)).To(Succeed())
		Expect(reservation("10.9.0.2")).To(BeEmpty())
		err = d.Check(ctx)
		Expect(err).To(MatchError(ContainSubstring("ipam plugin host-local: CHECK")))
	})

	It("converts an older result version to the current one", func() {
		d.NetConf = hostLocalConf("0.4.0", dataDir, "")
		res, err := d.Add(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.CNIVersion).To(Equal("1.1.0"))
		Expect(res.IPs[0].Address.String()).To(Equal("10.9.0.2/24"))
	})

	It("runs GC with the valid attachments the caller put in the config", func() {
		_, err := d.Add(ctx)
		Expect(err).NotTo(HaveOccurred())
		keep := hostLocalConf("1.1.0", dataDir, `"cni.dev/valid-attachments":[{"containerID":"ep-123","ifname":"eth0"}],`)
		Expect(ipam.DelegateGC(ctx, "host-local", keep, d.Path)).To(Succeed())
		Expect(reservation("10.9.0.2")).To(HavePrefix("ep-123"))

		drop := hostLocalConf("1.1.0", dataDir, `"cni.dev/valid-attachments":[],`)
		Expect(ipam.DelegateGC(ctx, "host-local", drop, d.Path)).To(Succeed())
		Expect(reservation("10.9.0.2")).To(BeEmpty())
	})

	It("runs STATUS", func() {
		Expect(ipam.DelegateStatus(ctx, "host-local", d.NetConf, d.Path)).To(Succeed())
	})

	It("keeps the plugin's error reachable", func() {
		d.NetConf = []byte(`{"cniVersion":"1.1.0","name":"dnet","ipam":{"type":"host-local","dataDir":"` + dataDir + `","ranges":[[{"subnet":"10.9.0.0/33"}]]}}`)
		_, err := d.Add(ctx)
		Expect(err).To(MatchError(ContainSubstring("ipam plugin host-local: ADD: ")))
		var cniErr *types.Error
		Expect(errors.As(err, &cniErr)).To(BeTrue())
	})

	It("names a plugin it cannot find", func() {
		d.Type = "no-such-ipam"
		_, err := d.Add(ctx)
		Expect(err).To(MatchError(ContainSubstring("ipam plugin no-such-ipam: ")))
		Expect(ipam.DelegateStatus(ctx, "no-such-ipam", d.NetConf, d.Path)).To(MatchError(ContainSubstring("no-such-ipam")))
		Expect(ipam.DelegateGC(ctx, "../host-local", d.NetConf, d.Path)).To(MatchError(ContainSubstring("invalid plugin type")))
	})
})
