// Command fullfs runs a plugin against a store on a full file system, for
// the reliability tests. Run it in a mount namespace of its own
// (unshare --mount --propagation private): it mounts a small tmpfs on DIR,
// copies STORE into it as state.db (unless STORE is "-"), fills what is
// left, runs the plugin with its own stdin, stdout and environment, and
// reports on stderr whether the store file changed (or appeared).
//
//	fullfs DIR STORE PLUGIN
package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: fullfs DIR STORE PLUGIN")
		os.Exit(2)
	}
	code, err := run(os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fullfs:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(dir, src, plugin string) (int, error) {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		return 0, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	db := filepath.Join(dir, "state.db")
	if src != "-" {
		if err := copyFile(src, db); err != nil {
			return 0, err
		}
	}
	if err := fill(filepath.Join(dir, "filler")); err != nil {
		return 0, err
	}
	before, err := digest(db)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(plugin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	runErr := cmd.Run()
	after, err := digest(db)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "fullfs: store unchanged: %v\n", before == after)
	var ee *exec.ExitError
	if errors.As(runErr, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, runErr
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// fill writes until the file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

func digest(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "absent", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}
