package remote_test

import (
	"fmt"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/test/testns"
)

// registerer keeps the driver a package registers, over a store of the spec's.
type registerer struct {
	s      store.Store
	driver driverapi.Driver
	scope  string
}

func (r *registerer) RegisterDriver(_ string, d driverapi.Driver, c driverapi.Capability) error {
	r.driver, r.scope = d, c.Scope
	return nil
}
func (r *registerer) DriverStore(name string) store.Store {
	return store.Prefixed(r.s, "drivers/"+name+"/")
}
func (r *registerer) DriverHostStore(name string) store.Store {
	return store.Prefixed(r.s, "hostdrivers/"+name+"/")
}

var _ = Describe("finding a plugin by name", func() {
	var (
		dirs dockerplugin.Dirs
		srv  *server
		d    driverapi.StatusReporter
	)
	BeforeEach(func() {
		tmp := GinkgoT().TempDir()
		dirs = dockerplugin.Dirs{Sockets: []string{filepath.Join(tmp, "run")}, Specs: []string{filepath.Join(tmp, "etc"), filepath.Join(tmp, "lib")}}
		for _, dir := range append(dirs.Sockets, dirs.Specs...) {
			Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
		}
		srv = startServer(newTestPlugin(testns.New()), GinkgoT().TempDir())
		s, err := store.Open(GinkgoT().TempDir(), store.Options{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(s.Close)
		r := &registerer{s: s}
		Expect(remote.RegisterWithDirs(dirs)(r)).To(Succeed())
		Expect(r.scope).To(Equal(driverapi.LocalScope))
		d = r.driver.(driverapi.StatusReporter)
	})

	status := func(name string) error {
		return d.Status(driverapi.NetworkInfo{Name: "n", Config: []byte(fmt.Sprintf(`{"name":"n","type":"cnm-remote","plugin":%q}`, name))})
	}

	It("reaches a plugin through a .spec file holding its URL", func() {
		Expect(status("weave")).To(MatchError(ContainSubstring("no socket weave.sock")))
		Expect(os.WriteFile(filepath.Join(dirs.Specs[1], "weave.spec"), []byte("unix://"+srv.sock+"\n"), 0o644)).To(Succeed())
		Expect(status("weave")).To(Succeed())
	})

	It("reaches a plugin through a .json spec", func() {
		spec := fmt.Sprintf(`{"Name":"calico","Addr":"unix://%s"}`, srv.sock)
		Expect(os.WriteFile(filepath.Join(dirs.Specs[0], "calico.json"), []byte(spec), 0o644)).To(Succeed())
		Expect(status("calico")).To(Succeed())
	})

	It("prefers the plugin's socket in the sockets directory", func() {
		Expect(os.WriteFile(filepath.Join(dirs.Specs[0], "p.spec"), []byte("unix:///nonexistent.sock"), 0o644)).To(Succeed())
		Expect(os.Symlink(srv.sock, filepath.Join(dirs.Sockets[0], "p.sock"))).To(Succeed())
		Expect(status("p")).To(Succeed())
	})
})
