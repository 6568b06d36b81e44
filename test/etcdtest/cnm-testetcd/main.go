// Command cnm-testetcd runs one etcd v3 member for the tests (package
// test/etcdtest starts it); it is not shipped. Clients reach it on a unix
// socket, peers on loopback TCP. It prints "ready" on stdout once the
// member has joined its cluster and serves clients, logs only errors (to
// stderr), and stops cleanly on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cnm-testetcd:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := embed.NewConfig()
	var clientURL, peerURL string
	flag.StringVar(&cfg.Name, "name", "m0", "member name, as in -initial-cluster")
	flag.StringVar(&cfg.Dir, "data-dir", "", "data directory (required)")
	flag.StringVar(&clientURL, "listen-client", "", "client URL: unix:///abs/path, or unixs:///abs/path with TLS (required)")
	flag.StringVar(&peerURL, "listen-peer", "", "peer URL: http://127.0.0.1:port (required)")
	flag.StringVar(&cfg.InitialCluster, "initial-cluster", "", "name=peerURL,... (default: this member alone)")
	flag.StringVar(&cfg.ClusterState, "initial-cluster-state", embed.ClusterStateFlagNew, "new or existing; ignored once the data dir holds a member")
	flag.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", "cnm-testetcd", "cluster token")
	flag.StringVar(&cfg.ClientTLSInfo.CertFile, "cert-file", "", "server certificate (PEM), for unixs://")
	flag.StringVar(&cfg.ClientTLSInfo.KeyFile, "key-file", "", "server key (PEM)")
	flag.StringVar(&cfg.ClientTLSInfo.TrustedCAFile, "trusted-ca-file", "", "CA that signs client certificates")
	flag.BoolVar(&cfg.ClientTLSInfo.ClientCertAuth, "client-cert-auth", false, "require a client certificate signed by -trusted-ca-file")
	// Short ticks so that a lost leader is replaced within about a second.
	flag.UintVar(&cfg.TickMs, "heartbeat-ms", 50, "raft heartbeat interval")
	flag.UintVar(&cfg.ElectionMs, "election-ms", 500, "raft election timeout")
	flag.StringVar(&cfg.AutoCompactionMode, "auto-compaction-mode", "revision", "periodic or revision")
	flag.StringVar(&cfg.AutoCompactionRetention, "auto-compaction-retention", "0", "revisions (or a duration with periodic) to keep; 0 turns auto-compaction off")
	flag.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", 0, "backend size quota; 0 is etcd's default (2 GiB)")
	// A SIGKILL loses nothing the kernel has been given: fsync only matters
	// for power loss, which the tests do not simulate.
	flag.BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, "skip fsync")
	flag.StringVar(&cfg.LogLevel, "log-level", "error", "zap log level (debug, info, warn, error)")
	flag.Parse()
	if cfg.Dir == "" || clientURL == "" || peerURL == "" {
		return fmt.Errorf("-data-dir, -listen-client and -listen-peer are required")
	}

	cu, err := url.Parse(clientURL)
	if err != nil {
		return fmt.Errorf("-listen-client: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return fmt.Errorf("-listen-peer: %w", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.Name + "=" + peerURL
	}
	cfg.LogOutputs = []string{"stderr"}
	cfg.EnableGRPCGateway = false // the tests speak gRPC only

	// Registered before the server starts, so that an early SIGTERM too
	// closes it rather than kills it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-sig:
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-sig:
		return nil
	}
}
