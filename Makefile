# Pulse: build, test, run.
#
#   make test        install the test servers if missing, then run every test
#                    against one shared Redis, ClickHouse and Kafka
#   make test SHARED_SERVERS=0
#                    let each test binary start its own servers instead
#   make test PKGS=./history/... TESTFLAGS='-race -run TestWriter -v'

GO             ?= go
PKGS           ?= ./...
# -parallel 4: a package's parallel tests (the crash tests: real brokers and
# processes they mostly wait on) run four at a time rather than GOMAXPROCS;
# on two cores the suite takes 410-510 s instead of 530-570.
TESTFLAGS      ?= -race -timeout 25m -parallel 4
STATICCHECK    ?= v0.8.2
SHARED_SERVERS ?= 1

.PHONY: test test-deps dev build lint bench

test: test-deps
	@if [ -f scripts/golden.sh ]; then \
		echo "==> scripts/golden.sh (model goldens)"; \
		bash scripts/golden.sh; \
	fi
ifeq ($(SHARED_SERVERS),1)
	@echo "==> building the shared test servers' launcher"
	@$(GO) build -o bin/testservers ./internal/testenv/cmd/testservers
	@echo "==> go test $(TESTFLAGS) $(PKGS) (one Redis, ClickHouse and Kafka for all packages)"
	@bin/testservers -- $(GO) test $(TESTFLAGS) $(PKGS)
else
	@echo "==> go test $(TESTFLAGS) $(PKGS) (servers started per test binary)"
	@$(GO) test $(TESTFLAGS) $(PKGS)
endif
ifeq ($(PKGS),./...)
	@echo "==> go test ./... in tools/traceslow (a module of its own)"
	@cd tools/traceslow && $(GO) vet ./... && $(GO) test ./...
endif

test-deps:
	@echo "==> scripts/install-test-deps.sh"
	@scripts/install-test-deps.sh

# make dev ARGS=-demo adds realistic shop traffic.
dev:
	$(GO) run ./cmd/pulse dev $(ARGS)

build:
	$(GO) build -o bin/pulse ./cmd/pulse

lint:
	@echo "==> gofmt -l"
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi
	@echo "==> go vet $(PKGS)"
	@$(GO) vet $(PKGS)
	@echo "==> staticcheck $(PKGS)"
	@$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
