// Command cnitrace records a CNI call and runs the real plugin.
//
// The e2e suite gives containerd a bin_dir of copies of this program, one
// per plugin name; the real plugins are in the "real" directory next to
// them. Each call runs real/<name> with the same arguments, environment,
// stdin and stdout, then appends one tab-separated line to ../cni-trace.tsv
// (relative to the bin_dir):
//
//	<unix nanoseconds> <CNI_COMMAND> <plugin> <CNI_CONTAINERID> <CNI_IFNAME> <exit code> <CNI_NETNS> <CNI_ARGS> <call>
//
// and keeps the call's stdin and stdout in ../cni-calls/<call>.stdin and
// .stdout. It exits with the plugin's exit code.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnitrace: %v\n", err)
		return 1
	}
	binDir := filepath.Dir(self)
	name := filepath.Base(os.Args[0])
	real := filepath.Join(binDir, "real", name)
	start := time.Now()

	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnitrace: read stdin: %v\n", err)
		return 1
	}
	var stdout bytes.Buffer
	cmd := exec.Command(real, os.Args[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = io.MultiWriter(os.Stdout, &stdout)
	cmd.Stderr = os.Stderr
	code := 0
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else {
			fmt.Fprintf(os.Stderr, "cnitrace: run %s: %v\n", real, err)
			code = 127
		}
	}

	command := os.Getenv("CNI_COMMAND")
	base := filepath.Dir(binDir)
	callDir := filepath.Join(base, "cni-calls")
	stem := fmt.Sprintf("%d-%d-%s-%s", start.UnixNano(), os.Getpid(), name, command)
	if err := os.MkdirAll(callDir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(callDir, stem+".stdin"), stdin, 0o644)
		_ = os.WriteFile(filepath.Join(callDir, stem+".stdout"), stdout.Bytes(), 0o644)
	}
	fields := []string{
		fmt.Sprint(start.UnixNano()), command, name,
		os.Getenv("CNI_CONTAINERID"), os.Getenv("CNI_IFNAME"), fmt.Sprint(code),
		os.Getenv("CNI_NETNS"), os.Getenv("CNI_ARGS"), stem,
	}
	for i, f := range fields {
		fields[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(f)
	}
	line := strings.Join(fields, "\t") + "\n"
	// One write on an O_APPEND file: lines of concurrent calls do not mix.
	if f, err := os.OpenFile(filepath.Join(base, "cni-trace.tsv"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		_, _ = f.WriteString(line)
		_ = f.Close()
	}
	return code
}
