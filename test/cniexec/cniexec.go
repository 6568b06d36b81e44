package cniexec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Versions are the CNI versions every plugin must answer in.
var Versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// VersionEntries are table entries "CNI <version>" over Versions, each
// with the version as its parameter.
func VersionEntries() []TableEntry {
	var out []TableEntry
	for _, v := range Versions {
		out = append(out, Entry("CNI "+v, v))
	}
	return out
}

// Invocation is one exec of a plugin: its CNI_* variables and stdin.
type Invocation struct {
	Command     string // CNI_COMMAND
	ContainerID string // CNI_CONTAINERID
	NetNS       string // CNI_NETNS, a path
	// IfName is CNI_IFNAME; empty means eth0 but for GC, STATUS and
	// VERSION, which name no interface.
	IfName string
	Args   string // CNI_ARGS
	// Path is CNI_PATH, where the plugin finds its delegates; empty
	// means the binary's own directory.
	Path string
	// Env is added after the CNI variables and PATH, so it may override
	// them (the last of a name wins).
	Env   []string
	Stdin []byte
}

// environ is inv's environment for binary: the CNI variables, the test
// process's PATH, and inv.Env.
func (inv Invocation) environ(binary string) []string {
	ifname, path := inv.IfName, inv.Path
	if ifname == "" && inv.Command != "GC" && inv.Command != "STATUS" && inv.Command != "VERSION" {
		ifname = "eth0"
	}
	if path == "" {
		path = filepath.Dir(binary)
	}
	return append([]string{
		"CNI_COMMAND=" + inv.Command, "CNI_CONTAINERID=" + inv.ContainerID, "CNI_NETNS=" + inv.NetNS,
		"CNI_IFNAME=" + ifname, "CNI_ARGS=" + inv.Args, "CNI_PATH=" + path, "PATH=" + os.Getenv("PATH"),
	}, inv.Env...)
}

// Run execs binary in n with inv and returns its stdout and stderr; the
// stderr goes to GinkgoWriter too. When the plugin exits non-zero, err
// is the *types.Error it printed and stdout is nil; a failure without
// one wraps the *exec.ExitError (how it died) with what it printed.
// Run fails the spec when it cannot enter n.
func Run(n ns.NetNS, binary string, inv Invocation) (stdout []byte, stderr string, err error) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error {
		cmd := exec.Command(binary)
		cmd.Env = inv.environ(binary)
		cmd.Stdin = bytes.NewReader(inv.Stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		stdout, stderr = o.Bytes(), e.String()
		fmt.Fprint(GinkgoWriter, stderr)
		return nil
	})).To(Succeed())
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return stdout, stderr, err
	}
	te := &types.Error{}
	if jerr := json.Unmarshal(stdout, te); jerr != nil {
		return nil, stderr, fmt.Errorf("plugin failed without a CNI error (%w): %s", err, stdout)
	}
	return nil, stderr, te
}

// Code is the CNI code of err, 0 for none.
func Code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// Config is the JSON of conf with each of more's keys set in turn, or
// removed where its value is nil: a spec's variation on a suite's
// usual network configuration.
func Config(conf map[string]any, more ...map[string]any) []byte {
	GinkgoHelper()
	for _, m := range more {
		for k, v := range m {
			if v == nil {
				delete(conf, k)
			} else {
				conf[k] = v
			}
		}
	}
	b, err := json.Marshal(conf)
	Expect(err).NotTo(HaveOccurred())
	return b
}
