# Sluice developer targets. `make test` is the README's test command and
# what .ci/run runs after the lint steps.
GO        ?= go
BIN       ?= bin/sluice
# FUZZTIME is a duration (20s) or a count of inputs (10000x).
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
	$(GO) test ./configs -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)
	$(GO) test ./aggregate -run '^$$' -fuzz '^FuzzDecodeOp$$' -fuzztime $(FUZZTIME)
	$(GO) test ./aggregate -run '^$$' -fuzz '^FuzzFamilyEncoding$$' -fuzztime $(FUZZTIME)
	$(GO) test ./aggregate -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME)
	$(GO) test ./wal -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME)
	$(GO) test ./forward -run '^$$' -fuzz '^FuzzFrameDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./forward -run '^$$' -fuzz '^FuzzDecodeWire$$' -fuzztime $(FUZZTIME)
	$(GO) test ./loadtest -run '^$$' -fuzz '^FuzzCountRemoteWrite$$' -fuzztime $(FUZZTIME)
	$(GO) test ./loadtest -run '^$$' -fuzz '^FuzzHistogramBuckets$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzTextFastMatchesExpfmt$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzParseTextFloat$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzProtoFastMatchesUnmarshal$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzRefillMatchesParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ingest -run '^$$' -fuzz '^FuzzRefillProtoMatchesParse$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=6 ./... | tee bench.txt

fmt:
	gofmt -w $$(git ls-files '*.go')

# Deployment files (ops). kubeconform and kustomize are pinned and run with
# `go run`; kubeconform reads the schemas vendored in
# deploy/kubernetes/schemas (its default location, GitHub, is not reachable
# from CI) and must reject every deploy/kubernetes/testdata/*.bad.yaml.
KUBECONFORM ?= $(GO) run github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
KUSTOMIZE   ?= $(GO) run sigs.k8s.io/kustomize/kustomize/v5@v5.8.1
K8S_SCHEMAS := -schema-location 'deploy/kubernetes/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json'

.PHONY: check-deploy check-rules

check-deploy:
	@out="$$(mktemp)"; trap 'rm -f "$$out"' EXIT; \
		$(KUSTOMIZE) build deploy/kubernetes >"$$out" && \
		$(KUBECONFORM) -strict -summary $(K8S_SCHEMAS) - <"$$out"
	@for f in deploy/kubernetes/testdata/*.bad.yaml; do \
		if $(KUBECONFORM) -strict $(K8S_SCHEMAS) "$$f" >/dev/null 2>&1; then \
			echo "check-deploy: $$f should be invalid but passed: the schemas check nothing"; exit 1; \
		fi; \
	done; echo "check-deploy: every deploy/kubernetes/testdata/*.bad.yaml rejected"
	$(GO) test -count=1 -run 'TestDeploy' ./configs ./cmd/proxy

check-rules:
	promtool check rules alerts/sluice.rules.yml
	promtool test rules alerts/sluice.rules.test.yml

# Side-by-side performance comparison with vmagent and the Pushgateway
# (SPEC 10; about 5 minutes; COMPARE_SECONDS and the other COMPARE_* in
# loadtest/compare.sh shorten it). Prints PASS/FAIL, fails only on tooling.
.PHONY: compare

compare:
	bash loadtest/compare.sh
