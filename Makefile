# cnmnet — CNM endpoints as CNI plugins.
GO         ?= go
# Install: the plugins to $(DESTDIR)$(CNI_BIN_DIR), cnmctl to
# $(DESTDIR)$(BIN_DIR); DESTDIR stages a package's tree.
CNI_BIN_DIR ?= /opt/cni/bin
BIN_DIR    ?= /usr/local/bin
DESTDIR    ?=
PLUGINS    := cnm-null cnm-bridge cnm-overlay cnm-remote
BINS       := $(PLUGINS:%=bin/%)
CNITOOL_VERSION := v1.3.1
# Stamped into every binary: `cnmctl version`, `cnm-bridge --version`.
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -X github.com/cnmnet/cnmnet/pkg/buildinfo.version=$(VERSION) -X github.com/cnmnet/cnmnet/pkg/buildinfo.commit=$(COMMIT)

.PHONY: all build install uninstall deps test lint demo bench clean tools e2e soak fuzz

all: build

build: $(BINS) bin/cnmctl bin/cnm-overlayd

# Static binaries: without cgo a plugin has no dynamic loader to run at
# each of its starts (about 1 ms of CPU per invocation here), and needs
# no libc of the node.
bin/%: FORCE
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/$*

FORCE:

# Tools the tests and the demo drive the plugins with, built through the module proxy.
tools: bin/cnitool bin/cnm-testetcd
bin/cnitool:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)
# The etcd member test/etcdtest runs (not shipped).
bin/cnm-testetcd: FORCE
	$(GO) build -o $@ ./test/etcdtest/cnm-testetcd

install: build
	install -d $(DESTDIR)$(CNI_BIN_DIR)
	install -m 0755 $(BINS) $(DESTDIR)$(CNI_BIN_DIR)/
	install -d $(DESTDIR)$(BIN_DIR)
	install -m 0755 bin/cnmctl bin/cnm-overlayd $(DESTDIR)$(BIN_DIR)/

# Removes exactly what install put there. The plugins' state (dataDir,
# /var/lib/cni/cnm) and host state stay: remove the networks first
# (cnmctl network rm), see README "Install".
uninstall:
	rm -f $(PLUGINS:%=$(DESTDIR)$(CNI_BIN_DIR)/%) $(DESTDIR)$(BIN_DIR)/cnmctl $(DESTDIR)$(BIN_DIR)/cnm-overlayd

# What the tests need from Debian, installed when missing (root).
deps:
	./test/deps.sh

# The tests need root: they create network namespaces.
test: deps build tools
	CNM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 20m ./...

# End-to-end through containerd's CRI and through podman (root; installs
# containerd, runc, podman and conmon, builds crictl into /var/cache/cnm-e2e):
# see README, "End-to-end tests".
e2e: build
	CNM_E2E=1 CNM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 15m ./test/e2e/ -v

# The reliability suite at ten times its `make test` size (20,000 chaos
# operations, 2,000 kills), and the fuzz targets 300,000 executions each.
soak: build tools
	CNM_SOAK=10 CNM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 3h ./test/integration/ -ginkgo.label-filter=reliability -ginkgo.v
	$(MAKE) fuzz FUZZTIME=300000x

# Each fuzz target for FUZZTIME (go runs one target per invocation; plain
# `go test` runs their seeds). FUZZTIME is a count of executions ("Nx"):
# go1.26's fuzzing coordinator can fail a run bounded by a duration with
# "context deadline exceeded" at its end, no input at fault
# (golang/go#75804, fixed in go1.27). A value that widens coverage is
# minimised for at most FUZZMINIMIZETIME, not go's default minute: store
# files are kilobytes of mostly zeros, whose minimisation would use up a
# short run. A failing input is written to the package's
# testdata/fuzz/<target>/.
FUZZTIME ?= 30000x
FUZZMINIMIZETIME ?= 1s
FUZZFLAGS = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME)
fuzz:
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzLoadNetConf$$' ./pkg/cnm/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzParseArgs$$' ./pkg/cnm/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzRuntimeConfig$$' ./pkg/cnm/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzRecordDecode$$' ./pkg/cnm/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzPortMappings$$' ./pkg/drivers/bridge/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzIPAMConfig$$' ./pkg/ipam/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzStoreFile$$' ./pkg/store/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzVolatileFile$$' ./pkg/store/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff

demo: deps build tools
	./test/demo.sh

# cnm-bridge against Debian's reference bridge + host-local (+ portmap),
# through libcni, in throwaway network namespaces (root). Prints the table
# and writes docs/bench/ (latest.json, latest.md, latency.png); 3 to 4
# minutes. See docs/benchmarks.md. BENCH_FLAGS are passed on (e.g. -keep).
bench:
	@test "$$(id -u)" = 0 || { echo "make bench: run as root: it creates network namespaces" >&2; exit 1; }
	@if ! test -x /usr/lib/cni/bridge || ! command -v iptables-restore >/dev/null || ! command -v strace >/dev/null; then \
		apt-get update && apt-get install -y --no-install-recommends containernetworking-plugins iptables strace; fi
	$(MAKE) build
	$(GO) run ./test/bench $(BENCH_FLAGS)

# A short run for development (fewer containers and levels); writes nothing.
.PHONY: bench-quick
bench-quick:
	$(MAKE) bench BENCH_FLAGS="-quick $(BENCH_FLAGS)"

clean:
	rm -rf bin
