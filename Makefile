# gbc — see README.md. `make demo` and `make test` must work as root on a
# fresh Debian machine: both install what is missing first.
GO        ?= go
BIN       := bin/gbc
PKGS      := ./...
FUZZTIME  ?= 60s

.PHONY: all build test fmt vet deps demo fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gbc

# deps installs the system packages the tests and the demo use, when missing.
deps:
	@scripts/install-deps.sh

test: deps
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@[ -n "$$GBC_TEST_POSTGRES" ] || echo "make test: GBC_TEST_POSTGRES is not set, so the PostgreSQL tests skip (.ci/run sets it; see docs/database.md)"
	$(GO) test -count=1 -timeout 20m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet $(PKGS)

demo: deps build
	@scripts/demo.sh

# Long fuzzing, one target at a time; FUZZTIME per target.
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

bench: deps build
	@scripts/install-deps.sh bench
	@scripts/bench.sh

clean:
	rm -rf bin
