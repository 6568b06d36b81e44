package firewall_test

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/cnmnet/cnmnet/pkg/firewall"
)

// benchNetwork is a network with its ports, for the benchmarks.
var benchNetwork = firewall.Network{Name: "bench", Bridge: "brb", IPMasq: true, Isolation: true, ICC: true,
	Subnets: []*net.IPNet{{IP: net.IPv4(10, 77, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}}}

func benchPorts(n int) []firewall.PortMapping {
	ports := make([]firewall.PortMapping, n)
	for i := range ports {
		ports[i] = firewall.PortMapping{Protocol: "tcp", HostPort: 20000 + i, ContainerPort: 80,
			ContainerIP: net.IPv4(10, 77, 0, byte(2+i%250)), Endpoint: fmt.Sprintf("ep%d", i)}
	}
	return ports
}

// benchInNS runs setup, then op b.N times, in a fresh network namespace
// with a new Firewall where benchNetwork is set up, and reports the
// processes op ran per operation.
func benchInNS(b *testing.B, setup, op func(fw *firewall.Firewall) error) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to create network namespaces")
	}
	n, err := testutils.NewNS()
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		n.Close()
		testutils.UnmountNS(n)
	}()
	fw, err := firewall.New()
	if err != nil {
		b.Fatal(err)
	}
	err = n.Do(func(ns.NetNS) error {
		if err := fw.EnsureNetwork(benchNetwork); err != nil {
			return err
		}
		if setup != nil {
			if err := setup(fw); err != nil {
				return err
			}
		}
		start := fw.Execs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := op(fw); err != nil {
				return err
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(fw.Execs()-start)/float64(b.N), "execs/op")
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func BenchmarkEnsureNetworkUnchanged(b *testing.B) {
	benchInNS(b, nil, func(fw *firewall.Firewall) error { return fw.EnsureNetwork(benchNetwork) })
}

func BenchmarkSetPorts50(b *testing.B) {
	ports := benchPorts(50)
	benchInNS(b, nil, func(fw *firewall.Firewall) error { return fw.SetPorts(benchNetwork, ports) })
}

func BenchmarkCheck50(b *testing.B) {
	ports := benchPorts(50)
	benchInNS(b,
		func(fw *firewall.Firewall) error { return fw.SetPorts(benchNetwork, ports) },
		func(fw *firewall.Firewall) error { return fw.Check(benchNetwork, ports) })
}

func BenchmarkRemoveAndEnsureNetwork(b *testing.B) {
	benchInNS(b, nil, func(fw *firewall.Firewall) error {
		if err := fw.RemoveNetwork(benchNetwork); err != nil {
			return err
		}
		return fw.EnsureNetwork(benchNetwork)
	})
}
