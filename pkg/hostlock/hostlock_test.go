package hostlock_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cnmnet/cnmnet/pkg/hostlock"
)

func TestAcquireWaitsForTheHolderAndGivesUpAfterWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.lock")
	release, err := hostlock.Acquire(path, "test", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := hostlock.Acquire(path, "test", 50*time.Millisecond); err == nil {
		t.Fatal("a second holder got the lock")
	} else if time.Since(start) < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before its wait", time.Since(start))
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		release()
	}()
	again, err := hostlock.Acquire(path, "test", time.Second)
	if err != nil {
		t.Fatalf("the lock was not handed over: %v", err)
	}
	again()
}
