package etcdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	binName = "cnm-testetcd"
	binPkg  = "github.com/cnmnet/cnmnet/test/etcdtest/cnm-testetcd"
)

var binary struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the member binary: $CNM_BIN_DIR/cnm-testetcd when that
// exists, else one built once per process from this module.
func Binary() (string, error) {
	binary.once.Do(func() {
		if dir := os.Getenv("CNM_BIN_DIR"); dir != "" {
			p := filepath.Join(dir, binName)
			if _, err := os.Stat(p); err == nil {
				binary.path = p
				return
			}
		}
		binary.path, binary.err = build()
	})
	return binary.path, binary.err
}

// build builds the binary into the user's cache directory, one directory
// per module checkout. The output path stays the same from run to run so
// that go build finds it up to date and skips linking (etcd is big);
// a lock file keeps concurrent test processes from building it at once.
func build() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build %s: locate the module: %w", binName, err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("build %s: not inside the cnmnet module", binName)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	sum := sha256.Sum256([]byte(gomod))
	dir := filepath.Join(base, "cnmnet", binName+"-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", binName, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("build %s: %w", binName, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("build %s: lock %s: %w", binName, lock.Name(), err)
	}
	path := filepath.Join(dir, binName)
	cmd := exec.Command("go", "build", "-o", path, binPkg)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v: %s", binName, err, out)
	}
	return path, nil
}
