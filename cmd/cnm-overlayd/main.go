// Command cnm-overlayd is the overlay's daemon on each host: it keeps
// the host registered in the cluster store and the forwarding entries of
// the host's overlay networks equal to the endpoints on the other hosts
// (pkg/overlayd). It runs in the host's network namespace, as root.
//
// Settings come from flags, or from a JSON file (--config) whose keys
// are the flags' names; a flag given on the command line wins.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/buildinfo"
	"github.com/cnmnet/cnmnet/pkg/overlayd"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
)

const name = "cnm-overlayd"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the command line's and the config file's settings.
type options struct {
	endpoints      listFlag
	prefix         string
	timeout        durationFlag
	certFile       string
	keyFile        string
	caFile         string
	host           string
	underlay       string
	metricsAddress string
	leaseTTL       durationFlag
	resync         durationFlag
	logFormat      string
	logLevel       string
	config         string
	version        bool
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.timeout = durationFlag(etcdstore.DefaultTimeout)
	o.leaseTTL = durationFlag(overlayd.DefaultLeaseTTL)
	o.resync = durationFlag(overlayd.DefaultResyncInterval)
	fs.Var(&o.endpoints, "etcd-endpoints", "the cluster store's etcd client URLs (unix:///path, unixs:///path, http://host:port, https://host:port), comma-separated")
	fs.StringVar(&o.prefix, "etcd-prefix", etcdstore.DefaultPrefix, "the cluster store's etcd key prefix")
	fs.Var(&o.timeout, "etcd-timeout", "deadline of each etcd call (Go duration or seconds)")
	fs.StringVar(&o.certFile, "etcd-cert-file", "", "client certificate for etcd (PEM)")
	fs.StringVar(&o.keyFile, "etcd-key-file", "", "client key for etcd (PEM)")
	fs.StringVar(&o.caFile, "etcd-trusted-ca-file", "", "CA of etcd's server certificates (PEM)")
	fs.StringVar(&o.host, "host", "", "this host's name in the cluster store (default: the hostname)")
	fs.StringVar(&o.underlay, "underlay-address", "", "this host's underlay address, recorded in its registration (default: the address of the default route's interface)")
	fs.StringVar(&o.metricsAddress, "metrics-address", "127.0.0.1:9725", "where /metrics and /healthz are served; empty: nowhere")
	fs.Var(&o.leaseTTL, "lease-ttl", "TTL of the host's lease: the other hosts take it for gone this long after the daemon stops renewing")
	fs.Var(&o.resync, "resync-interval", "period of the full reconcile against a listing of the cluster store")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.config, "config", "", "JSON file of settings named as the flags; flags on the command line win")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

func run(args []string, stderr io.Writer) int {
	o := &options{}
	fs := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if o.version {
		fmt.Println(buildinfo.String(name))
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	if o.config != "" {
		if err := loadConfig(fs, o.config); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitUsage
		}
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	cfg, err := o.daemonConfig(log)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	d, err := overlayd.New(cfg)
	if err != nil {
		log.Error("start", "err", err)
		return exitError
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return exitError
	}
	return exitOK
}

// daemonConfig checks the settings and fills in the defaults.
func (o *options) daemonConfig(log *slog.Logger) (overlayd.Config, error) {
	if len(o.endpoints) == 0 {
		return overlayd.Config{}, errors.New("--etcd-endpoints: required")
	}
	host := o.host
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return overlayd.Config{}, fmt.Errorf("--host: not given, and the hostname: %w", err)
		}
		host = h
	}
	var underlay net.IP
	if o.underlay != "" {
		if underlay = net.ParseIP(o.underlay); underlay == nil {
			return overlayd.Config{}, fmt.Errorf("--underlay-address: %q is not an IP address", o.underlay)
		}
	} else {
		ip, err := defaultRouteAddress()
		if err != nil {
			return overlayd.Config{}, fmt.Errorf("--underlay-address: not given, and %w", err)
		}
		underlay = ip
	}
	return overlayd.Config{
		Etcd: etcdstore.Config{
			Endpoints: o.endpoints, Prefix: o.prefix, Timeout: time.Duration(o.timeout),
			CertFile: o.certFile, KeyFile: o.keyFile, TrustedCAFile: o.caFile,
		},
		Host:            host,
		UnderlayAddress: underlay,
		LeaseTTL:        time.Duration(o.leaseTTL),
		ResyncInterval:  time.Duration(o.resync),
		MetricsAddress:  o.metricsAddress,
		Logger:          log,
	}, nil
}

// loadConfig sets the flags the command line did not from the JSON
// object in path. Strings, numbers and booleans set a flag as its text
// would; an array of strings sets a list flag.
func loadConfig(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var values map[string]json.RawMessage
	if err := json.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for key, raw := range values {
		f := fs.Lookup(key)
		if f == nil || key == "config" || key == "version" {
			return fmt.Errorf("--config %s: unknown key %q", path, key)
		}
		if given[key] {
			continue
		}
		text, err := flagText(raw)
		if err != nil {
			return fmt.Errorf("--config %s: %s: %w", path, key, err)
		}
		if err := fs.Set(key, text); err != nil {
			return fmt.Errorf("--config %s: %s: %w", path, key, err)
		}
	}
	return nil
}

// flagText is a JSON value as a flag's text.
func flagText(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("element %d: want a string", i)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or array of strings")
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q: want text or json", format)
}

// defaultRouteAddress is the preferred source of the IPv4 default route,
// else the first global address of its interface; IPv6 when there is
// no IPv4 default route.
func defaultRouteAddress() (net.IP, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, family)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !isDefault(r.Dst) {
				continue
			}
			if r.Src != nil && r.Src.IsGlobalUnicast() {
				return r.Src, nil
			}
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue
			}
			addrs, err := netlink.AddrList(link, family)
			if err != nil {
				return nil, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
			}
			for _, a := range addrs {
				if a.IP.IsGlobalUnicast() {
					return a.IP, nil
				}
			}
		}
	}
	return nil, errors.New("no default route with an address on its interface")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// listFlag is a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// durationFlag is a Go duration, or a number of seconds.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		*d = durationFlag(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: want a duration (30s, 1m) or seconds", s)
	}
	*d = durationFlag(v)
	return nil
}
