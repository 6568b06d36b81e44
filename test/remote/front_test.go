package remote_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// front serves a test plugin on a socket of the spec's: the
// go-plugins-helpers handler on a socket of its own, behind a proxy that
// answers a method (a path such as "/NetworkDriver.Join") itself when a
// fault is set for it: "malformed" (a reply cut short), "500", "hang",
// or "error" (a 200 carrying the protocol's error field, where it has
// one).
type front struct {
	sock string // the socket cnm-remote calls
	back string // the helpers' own socket
	// serve serves the helpers' handler on a listener until it closes.
	serve func(net.Listener) error
	// malformed and errorReply are the bodies of those faults.
	malformed, errorReply string

	front, helper net.Listener
	srv           *http.Server

	mu     sync.Mutex
	faults map[string]string
	hangs  chan struct{}
}

// startFront starts a front on dir/sock for the handler serve serves on
// dir/back, and stops it when the spec ends.
func startFront(dir, sock, back string, serve func(net.Listener) error, malformed, errorReply string) *front {
	GinkgoHelper()
	f := &front{sock: filepath.Join(dir, sock), back: filepath.Join(dir, back), serve: serve,
		malformed: malformed, errorReply: errorReply, faults: map[string]string{}, hangs: make(chan struct{})}
	f.start()
	DeferCleanup(func() {
		f.stop()
		close(f.hangs)
	})
	return f
}

func (f *front) start() {
	GinkgoHelper()
	var err error
	f.helper, err = net.Listen("unix", f.back)
	Expect(err).NotTo(HaveOccurred())
	go func() { _ = f.serve(f.helper) }()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: "plugin"}) },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", f.back)
		}},
	}
	f.front, err = net.Listen("unix", f.sock)
	Expect(err).NotTo(HaveOccurred())
	f.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		fault := f.faults[r.URL.Path]
		f.mu.Unlock()
		switch fault {
		case "malformed":
			_, _ = w.Write([]byte(f.malformed))
		case "500":
			http.Error(w, "plugin crashed", http.StatusInternalServerError)
		case "error":
			_, _ = w.Write([]byte(f.errorReply))
		case "hang":
			<-f.hangs
		default:
			proxy.ServeHTTP(w, r)
		}
	})}
	go func() { _ = f.srv.Serve(f.front) }()
}

// stop closes both listeners: the plugin is gone (its state kept, as a
// plugin that keeps it on disk would).
func (f *front) stop() {
	_ = f.srv.Close()
	_ = f.helper.Close()
}

func (f *front) fault(path, kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[path] = kind
}
