package dockerplugin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
)

// serve answers on a unix socket at path with mux until the spec ends.
func serve(path string, mux *http.ServeMux) {
	l, err := net.Listen("unix", path)
	Expect(err).NotTo(HaveOccurred())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	DeferCleanup(func() { _ = srv.Close() })
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

var _ = Describe("discovery", func() {
	var dirs dockerplugin.Dirs
	BeforeEach(func() {
		tmp := GinkgoT().TempDir()
		dirs = dockerplugin.Dirs{
			Sockets: []string{filepath.Join(tmp, "run")},
			Specs:   []string{filepath.Join(tmp, "etc"), filepath.Join(tmp, "lib")},
		}
		for _, d := range append(dirs.Sockets, dirs.Specs...) {
			Expect(os.MkdirAll(d, 0o755)).To(Succeed())
		}
	})

	It("finds <name>.sock, then <name>/<name>.sock", func() {
		Expect(os.Mkdir(filepath.Join(dirs.Sockets[0], "nested"), 0o755)).To(Succeed())
		serve(filepath.Join(dirs.Sockets[0], "nested", "nested.sock"), http.NewServeMux())
		serve(filepath.Join(dirs.Sockets[0], "flat.sock"), http.NewServeMux())
		a, err := dirs.Find("flat")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.String()).To(Equal("unix://" + filepath.Join(dirs.Sockets[0], "flat.sock")))
		a, err = dirs.Find("nested")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Address).To(Equal(filepath.Join(dirs.Sockets[0], "nested", "nested.sock")))
	})

	It("reads a .spec URL and a .json spec with TLS, in the order of the directories", func() {
		Expect(os.WriteFile(filepath.Join(dirs.Specs[0], "a.spec"), []byte("tcp://127.0.0.1:9000\n"), 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dirs.Specs[1], "a.spec"), []byte("unix:///never"), 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dirs.Specs[1], "b.json"),
			[]byte(`{"Name":"b","Addr":"https://127.0.0.1:9443","TLSConfig":{"InsecureSkipVerify":true}}`), 0o644)).To(Succeed())
		a, err := dirs.Find("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(a).To(Equal(dockerplugin.Addr{Network: "tcp", Address: "127.0.0.1:9000", Source: filepath.Join(dirs.Specs[0], "a.spec")}))
		b, err := dirs.Find("b")
		Expect(err).NotTo(HaveOccurred())
		Expect(b.Network).To(Equal("tcp"))
		Expect(b.TLS).To(Equal(&dockerplugin.TLSFiles{InsecureSkipVerify: true}))
	})

	It("names what it looked for when nothing is there, and refuses a name with a path", func() {
		_, err := dirs.Find("nope")
		Expect(errors.Is(err, dockerplugin.ErrNotFound)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("nope.sock"))
		_, err = dirs.Find("../etc/x")
		Expect(err).To(MatchError(ContainSubstring("not a file name")))
	})

	It("refuses a spec file that does not parse, naming it", func() {
		p := filepath.Join(dirs.Specs[0], "bad.spec")
		Expect(os.WriteFile(p, []byte("ftp://x"), 0o644)).To(Succeed())
		_, err := dirs.Find("bad")
		Expect(err).To(MatchError(ContainSubstring(p)))
	})
})

var _ = Describe("calls", func() {
	var (
		mux    *http.ServeMux
		client *dockerplugin.Client
		ctx    = context.Background()
	)
	BeforeEach(func() {
		mux = http.NewServeMux()
		sock := filepath.Join(GinkgoT().TempDir(), "p.sock")
		serve(sock, mux)
		var err error
		client, err = dockerplugin.New(dockerplugin.SocketAddr(sock), 300*time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
	})

	It("posts JSON with the protocol's media type and decodes the reply", func() {
		mux.HandleFunc("/NetworkDriver.GetCapabilities", func(w http.ResponseWriter, r *http.Request) {
			Expect(r.Method).To(Equal(http.MethodPost))
			Expect(r.Header.Get("Accept")).To(Equal(dockerplugin.MediaType))
			_, _ = w.Write([]byte(`{"Scope":"local"}`))
		})
		var caps struct{ Scope string }
		Expect(client.Call(ctx, "NetworkDriver.GetCapabilities", nil, &caps)).To(Succeed())
		Expect(caps.Scope).To(Equal("local"))
	})

	It("activates a plugin that implements the kind, and refuses one that does not", func() {
		mux.HandleFunc("/Plugin.Activate", reply(200, `{"Implements":["IpamDriver"]}`))
		Expect(client.Activate(ctx, dockerplugin.IpamDriver)).To(Succeed())
		Expect(client.Activate(ctx, dockerplugin.NetworkDriver)).To(MatchError(ContainSubstring("not NetworkDriver")))
	})

	DescribeTable("turns the plugin's errors into errors carrying its message",
		func(status int, body, want string) {
			mux.HandleFunc("/X.Y", reply(status, body))
			err := client.Call(ctx, "X.Y", struct{}{}, &struct{}{})
			var pe *dockerplugin.Error
			Expect(errors.As(err, &pe)).To(BeTrue(), "%v", err)
			Expect(pe.Status).To(Equal(status))
			Expect(err.Error()).To(ContainSubstring(want))
			Expect(errors.Is(err, dockerplugin.ErrUnavailable)).To(BeFalse())
		},
		Entry("Err in a 200", 200, `{"Err":"no such network"}`, "no such network"),
		Entry("the IPAM protocol's Error", 200, `{"Error":"pool exhausted"}`, "pool exhausted"),
		Entry("a 500 with Err", 500, `{"Err":"boom"}`, "boom (HTTP 500)"),
		Entry("a 500 with text", 500, "internal trouble\n", "internal trouble (HTTP 500)"),
		Entry("a 404", 404, "404 page not found", "HTTP 404"),
	)

	It("tells a 404 apart", func() {
		Expect(dockerplugin.IsNotFound(client.Call(ctx, "Not.There", nil, nil))).To(BeTrue())
	})

	It("calls a reply that is not JSON malformed", func() {
		mux.HandleFunc("/X.Y", reply(200, `{"Interface": `))
		err := client.Call(ctx, "X.Y", nil, nil)
		Expect(errors.Is(err, dockerplugin.ErrMalformed)).To(BeTrue(), "%v", err)
		mux.HandleFunc("/X.Z", reply(200, `{"Scope": 3}`))
		var caps struct{ Scope string }
		Expect(errors.Is(client.Call(ctx, "X.Z", nil, &caps), dockerplugin.ErrMalformed)).To(BeTrue())
	})

	It("gives up on a plugin that does not answer within the deadline", func() {
		release := make(chan struct{})
		DeferCleanup(func() { close(release) })
		mux.HandleFunc("/X.Y", func(http.ResponseWriter, *http.Request) { <-release })
		start := time.Now()
		err := client.Call(ctx, "X.Y", nil, nil)
		Expect(errors.Is(err, dockerplugin.ErrUnavailable)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("no answer within 300ms"))
		Expect(time.Since(start)).To(BeNumerically("<", 2*time.Second))
	})

	It("says a socket nobody listens on is unavailable", func() {
		c, err := dockerplugin.New(dockerplugin.SocketAddr(filepath.Join(GinkgoT().TempDir(), "none.sock")), time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(errors.Is(c.Call(ctx, "X.Y", nil, nil), dockerplugin.ErrUnavailable)).To(BeTrue())
	})
})
