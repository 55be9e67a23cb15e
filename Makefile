# mxfront build and test entry points. `make test` is what CI runs.

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOFMT := $(dir $(GO))gofmt
GOBIN := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN),)
GOBIN := $(shell $(GO) env GOPATH)/bin
endif
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(GOBIN)/staticcheck)
# staticcheck and the tests run `go` themselves.
export PATH := $(dir $(GO)):$(PATH)

# Bounds the whole test run of each package (the e2e tests in ./test/...
# included); go test fails with a goroutine dump when it is exceeded.
TEST_TIMEOUT ?= 15m

.PHONY: all build test deps lint fmt-check vet staticcheck bench clean

all: build

build:
	$(GO) build -o bin/mxfront ./cmd/mxfront

# Installs missing test dependencies first (no network when all present).
test:
	scripts/install-deps.sh
	$(MAKE) --no-print-directory lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

deps:
	scripts/install-deps.sh

lint: fmt-check vet staticcheck

# gofmt's own errors (a file that does not parse) fail the check too.
fmt-check:
	@out=$$($(GOFMT) -l .) || { echo "gofmt failed"; exit 1; }; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

bench:
	scripts/bench.sh

clean:
	rm -rf bin
