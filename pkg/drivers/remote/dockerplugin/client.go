package dockerplugin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// MediaType is the protocol version a client accepts, as the Docker
// daemon sends it.
const MediaType = "application/vnd.docker.plugins.v1.2+json"

// DefaultTimeout bounds every call when the caller sets none.
const DefaultTimeout = 10 * time.Second

// maxReply bounds what a reply may hold: replies are a few hundred bytes.
const maxReply = 1 << 20

// Kinds of plugin a client activates (what Activate must list).
const (
	NetworkDriver = "NetworkDriver"
	IpamDriver    = "IpamDriver"
)

// ErrUnavailable is matched by the error of a call that got no answer:
// the plugin could not be reached, closed the connection, or did not
// answer within the deadline.
var ErrUnavailable = errors.New("plugin unavailable")

// ErrMalformed is matched by the error of a reply that is not the
// protocol's: not JSON, or not what the method answers.
var ErrMalformed = errors.New("malformed plugin reply")

// Error is an error the plugin answered with: {"Err": "..."} (or the
// IPAM protocol's {"Error": "..."}), or an HTTP status other than 200.
type Error struct {
	// Plugin is the plugin's address, Method the method called.
	Plugin, Method string
	// Status is the HTTP status of the reply.
	Status int
	// Msg is the plugin's message (the body of a reply that is not JSON).
	Msg string
}

func (e *Error) Error() string {
	if e.Status != http.StatusOK {
		return fmt.Sprintf("plugin %s: %s: %s (HTTP %d)", e.Plugin, e.Method, e.Msg, e.Status)
	}
	return fmt.Sprintf("plugin %s: %s: %s", e.Plugin, e.Method, e.Msg)
}

// IsNotFound reports whether err is a plugin's 404: it does not
// implement the method.
func IsNotFound(err error) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.Status == http.StatusNotFound
}

// Client calls one plugin.
type Client struct {
	addr    Addr
	timeout time.Duration
	http    *http.Client
	scheme  string
}

// New returns a client of the plugin at addr whose every call has
// deadline timeout (DefaultTimeout if 0).
func New(addr Addr, timeout time.Duration) (*Client, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: timeout}
	scheme := "http"
	switch addr.Network {
	case "unix":
		path := addr.Address
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	case "tcp":
		if addr.TLS != nil {
			cfg, err := tlsConfig(addr.TLS)
			if err != nil {
				return nil, fmt.Errorf("plugin %s: TLS: %w", addr, err)
			}
			tr.TLSClientConfig = cfg
			scheme = "https"
		}
	default:
		return nil, fmt.Errorf("plugin address %s: network %q is neither unix nor tcp", addr, addr.Network)
	}
	return &Client{addr: addr, timeout: timeout, http: &http.Client{Transport: tr}, scheme: scheme}, nil
}

func tlsConfig(f *TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.InsecureSkipVerify} //nolint:gosec // the spec file's choice, as Docker honours it
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CAFile %s: no certificate in it", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Addr is the address the client calls.
func (c *Client) Addr() Addr { return c.addr }

// Timeout is the deadline of each call.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Activate calls /Plugin.Activate and checks that the plugin implements
// kind (NetworkDriver, IpamDriver).
func (c *Client) Activate(ctx context.Context, kind string) error {
	var reply struct {
		Implements []string
	}
	if err := c.Call(ctx, "Plugin.Activate", struct{}{}, &reply); err != nil {
		return err
	}
	if !slices.Contains(reply.Implements, kind) {
		return &Error{Plugin: c.addr.String(), Method: "Plugin.Activate", Status: http.StatusOK,
			Msg: fmt.Sprintf("the plugin implements %v, not %s", reply.Implements, kind)}
	}
	return nil
}

// Call posts args to /<method> and decodes the reply into reply (nil:
// the reply is only checked for an error). Every call ends within the
// client's timeout.
func (c *Client) Call(ctx context.Context, method string, args, reply any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	body, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("plugin %s: %s: encode request: %w", c.addr, method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://plugin/"+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("plugin %s: %s: %w", c.addr, method, err)
	}
	if c.addr.Network == "tcp" {
		req.URL.Host = c.addr.Address
	}
	req.Header.Set("Accept", MediaType)
	req.Header.Set("Content-Type", MediaType)
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unavailable(method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return c.unavailable(method, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &Error{Plugin: c.addr.String(), Method: method, Status: resp.StatusCode, Msg: errorText(raw)}
	}
	var e struct{ Err, Error string }
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("plugin %s: %s: %w: %v: %q", c.addr, method, ErrMalformed, err, truncate(raw))
	}
	if msg := firstOf(e.Err, e.Error); msg != "" {
		return &Error{Plugin: c.addr.String(), Method: method, Status: resp.StatusCode, Msg: msg}
	}
	if reply == nil {
		return nil
	}
	if err := json.Unmarshal(raw, reply); err != nil {
		return fmt.Errorf("plugin %s: %s: %w: %v: %q", c.addr, method, ErrMalformed, err, truncate(raw))
	}
	return nil
}

func (c *Client) unavailable(method string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
		return fmt.Errorf("plugin %s: %s: %w: no answer within %s", c.addr, method, ErrUnavailable, c.timeout)
	}
	return fmt.Errorf("plugin %s: %s: %w: %v", c.addr, method, ErrUnavailable, err)
}

// errorText is the message of a reply that is not 200: its Err (or
// Error) when it is the protocol's JSON, else its text.
func errorText(raw []byte) string {
	var e struct{ Err, Error string }
	if json.Unmarshal(raw, &e) == nil {
		if msg := firstOf(e.Err, e.Error); msg != "" {
			return msg
		}
	}
	if s := strings.TrimSpace(truncate(raw)); s != "" {
		return s
	}
	return "empty reply"
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// truncate keeps a reply short enough for a message.
func truncate(raw []byte) string {
	const max = 256
	if len(raw) > max {
		return string(raw[:max]) + "…"
	}
	return string(raw)
}
