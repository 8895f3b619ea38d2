# jetsink — make targets are the contract README, CI and reviewers rely on.
# Tool binaries are built from Go modules by hack/tools/install.sh on first
# use (cached by version in ~/.cache/jetsink-tools) and linked into bin/.

SHELL := /usr/bin/env bash -o pipefail
BIN := $(CURDIR)/bin
TOOLS := ./hack/tools/install.sh
CONTROLLER_GEN := $(BIN)/controller-gen
# envtest finds kube-apiserver, etcd and kubectl here.
export KUBEBUILDER_ASSETS := $(BIN)
IMG ?= ghcr.io/jetsink/jetsink:dev
GO_TEST_FLAGS ?= -count=1

.PHONY: all
all: build

##@ Development

# The local cluster (make demo, localstack, e2e) also needs containerd, runc,
# the CNI plugins and iptables from Debian: make cluster-deps installs them.
.PHONY: tools
tools: ## Build every tool binary the tests and the demo need (first use only).
	$(TOOLS) controller-gen etcd kube-apiserver kubectl versitygw helm \
		kube-controller-manager kube-scheduler kubelet kube-proxy

.PHONY: cluster-deps
cluster-deps: ## Install the Debian packages the local stack runs on: the cluster's, and PostgreSQL for the Iceberg catalog (as root; elsewhere the e2e suite skips).
	@if command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge && command -v iptables >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "cluster-deps: not root: the local cluster cannot run here, the e2e suite will skip"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc containernetworking-plugins iptables iproute2 postgresql; fi

# test/lake reads the worker's files back with DuckDB, a C++ library linked
# through cgo: the tests need a C and C++ compiler. The Iceberg tests run
# their SQL catalog on a real PostgreSQL (internal/testutil/pgtest).
.PHONY: test-deps
test-deps: ## Install the C/C++ compiler (DuckDB read-back) and PostgreSQL (Iceberg SQL catalog) the tests use (as root).
	@if command -v gcc >/dev/null && command -v g++ >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "test-deps: not root: install gcc, g++ and postgresql for test/lake and sinkworker/table"; exit 1; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc g++ postgresql; fi

# hack/chartgen renders the chart's CRD and RBAC-rule templates from what
# controller-gen wrote (never hand-copied), so make verify catches a stale chart.
.PHONY: manifests
manifests: ## Generate the CRD and RBAC from the API and controller markers.
	$(TOOLS) controller-gen
	$(CONTROLLER_GEN) rbac:roleName=jetsink-manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	go run ./hack/chartgen

.PHONY: generate
generate: ## Generate deepcopy functions from the API markers.
	$(TOOLS) controller-gen
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: verify
verify: manifests generate ## Fail when generated files are stale.
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config charts)" || { git status --porcelain -- api config charts; echo "untracked generated files: run 'make manifests generate' and commit"; exit 1; }

.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
	go vet -tags iceberg ./sinkworker/

.PHONY: test
test: tools cluster-deps test-deps vet ## Unit, envtest and worker integration tests against real servers.
	go test $(GO_TEST_FLAGS) -timeout 20m ./...
	# The Iceberg table sink is built only with -tags iceberg (bin/sinkworker-iceberg): its tests run again with the tag.
	go test $(GO_TEST_FLAGS) -tags iceberg -timeout 5m -run 'TestTable' ./sinkworker/

# bench is long (about 15 minutes) and stays out of make test; its smoke
# version (hack/bench's test) runs there. BENCH_FLAGS passes flags through,
# e.g. BENCH_FLAGS="-events 200000 -sinks 100".
.PHONY: bench
bench: build ## Throughput, memory and controller benchmarks against the ceilings measured in the same run.
	$(TOOLS) etcd kube-apiserver versitygw nats
	go run ./hack/bench $(BENCH_FLAGS)

# faults is the fault matrix on real processes (about 10 minutes): each
# case breaks S3, NATS, the consumer, the DLQ or the worker itself under
# live traffic and reads every Parquet object and the DLQ back to count
# lost, duplicated and dead-lettered events (the 10* cases read the Iceberg
# table through its catalog instead). FAULTS_FLAGS passes flags
# through, e.g. FAULTS_FLAGS="-case 4a -v".
.PHONY: faults
faults: test-deps build ## The fault matrix on real nats-server, versitygw, toxiproxy and sinkworker processes.
	$(TOOLS) versitygw nats-server toxiproxy
	go run ./hack/faults $(FAULTS_FLAGS)

##@ Build

.PHONY: build
build: ## Build bin/manager, bin/sinkworker and bin/sinkworker-iceberg (the worker with Iceberg tables).
	CGO_ENABLED=0 go build -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -o $(BIN)/sinkworker ./cmd/sinkworker
	CGO_ENABLED=0 go build -tags iceberg -o $(BIN)/sinkworker-iceberg ./cmd/sinkworker

##@ Local stack

.PHONY: demo
demo: tools cluster-deps build ## Run the whole product on a local single-node Kubernetes: events in, Parquet out (about a minute).
	go run ./hack/demo

.PHONY: localstack
localstack: tools cluster-deps build ## Start the local stack (a single-node Kubernetes, NATS, S3, the operator by helm) until Ctrl-C.
	go run ./hack/localstack

.PHONY: e2e
e2e: tools cluster-deps ## The end-to-end suite on the local stack (also part of make test; skipped, saying why, without root or containerd).
	go test $(GO_TEST_FLAGS) -timeout 15m -v ./test/e2e/...

.PHONY: docker-build
docker-build: ## Build the image (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
