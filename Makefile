# Sluice developer targets. `make test` is the README's test command and
# what .ci/run runs after the lint steps.
GO        ?= go
BIN       ?= bin/sluice
FUZZTIME  ?= 20s

.PHONY: build run test lint fuzz bench fmt

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/proxy

run:
	$(GO) run ./cmd/proxy

test:
	$(GO) test -race -count=1 ./...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool -modfile=tools.mod staticcheck ./...

# Each fuzz target for FUZZTIME; seeds live in testdata/fuzz.
fuzz:
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzParseGroupingKey$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzDecodeRemoteWriteV1$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzDecodeRemoteWriteV2$$' -fuzztime $(FUZZTIME)
	$(GO) test ./configs -run '^$$' -fuzz '^FuzzParseMode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./aggregate -run '^$$' -fuzz '^FuzzDecodeOp$$' -fuzztime $(FUZZTIME)
	$(GO) test ./wal -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME)
	$(GO) test ./forward -run '^$$' -fuzz '^FuzzFrameDecode$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=6 ./... | tee bench.txt

fmt:
	gofmt -w $$(git ls-files '*.go')
