# cnmnet — CNM endpoints as CNI plugins.
GO         ?= go
CNI_BIN_DIR ?= /opt/cni/bin
BIN_DIR    ?= /usr/local/bin
PLUGINS    := cnm-null cnm-bridge
BINS       := $(PLUGINS:%=bin/%)
CNITOOL_VERSION := v1.3.1

.PHONY: all build install test lint demo bench clean tools e2e

all: build

build: $(BINS) bin/cnmctl

bin/%: FORCE
	$(GO) build -o $@ ./cmd/$*

FORCE:

# Tools the tests and the demo drive the plugins with, built through the module proxy.
tools: bin/cnitool
bin/cnitool:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)

install: build
	install -d $(CNI_BIN_DIR)
	install -m 0755 $(BINS) $(CNI_BIN_DIR)/
	install -d $(BIN_DIR)
	install -m 0755 bin/cnmctl $(BIN_DIR)/

# The tests need root: they create network namespaces.
test: build tools
	CNM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 20m ./...

# End-to-end through containerd's CRI (root; installs containerd and runc,
# builds crictl into /var/cache/cnm-e2e): see README, "End-to-end tests".
e2e: build
	CNM_E2E=1 CNM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -timeout 15m ./test/e2e/ -v

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: build tools
	./test/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

clean:
	rm -rf bin
