# gbc — see README.md. `make demo` and `make test` must work as root on a
# fresh Debian machine: both install what is missing first.
GO        ?= go
BIN       := bin/gbc
PKGS      := ./...
FUZZTIME  ?= 60s

# Packages that run goroutines of their own; `make race` tests them under
# the race detector.
RACE_PKGS := ./agent/... ./cache ./clock ./cmd/gbc ./compression ./coordinator \
	./db/sqlite ./db/sqlstore ./hooks ./nar ./protocol ./scheduler ./sshd ./storedaemon \
	./bench/internal/httpload

.PHONY: all build test fmt vet lint golden race chaos abuse deps demo fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gbc

# deps installs the system packages the tests and the demo use, when missing.
deps:
	@scripts/install-deps.sh

test: deps
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@[ -n "$$GBC_TEST_POSTGRES" ] || echo "make test: GBC_TEST_POSTGRES is not set, so the PostgreSQL tests skip (.ci/run sets it; see docs/database.md)"
	$(GO) test -count=1 -timeout 20m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet $(PKGS)

# staticcheck, at the version go.mod pins (its tool directive).
lint:
	$(GO) tool staticcheck $(PKGS)

# golden rewrites the golden help outputs (testdata/help) after an intended
# change of a command or flag; review the diff before committing.
golden:
	$(GO) test ./cmd/gbc ./sshd -run TestHelpGolden -count=1 -update

# race runs the tests of the concurrent packages under the race detector.
# Not part of `make test`: about twice the wall time of the same tests
# without it (78 s against 41 s on 2 cores).
race: deps
	$(GO) test -race -count=1 -timeout 30m $(RACE_PKGS)

# chaos is the fault run: a few hundred builds with kill -9 of the
# coordinator and agents and a disk-full phase, then every build checked
# (succeeded exactly once, narinfo with Nix's NarHash); on SQLite and, with
# GBC_TEST_POSTGRES, PostgreSQL. Prints its figures against the same run
# without faults. Not part of `make test` (minutes). GBC_CHAOS_BUILDS,
# GBC_CHAOS_SEED.
chaos: deps
	$(GO) test -tags chaos -count=1 -timeout 60m -run TestChaos -v ./e2e

# abuse replays the attacks of docs/security.md against a real coordinator
# and prints attack → expected → result; non-zero on any regression.
abuse: deps
	@scripts/abuse.sh

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
