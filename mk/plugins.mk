# Switchyard policy plugins (included by the root Makefile; also usable alone:
# `make -f mk/plugins.mk plugins`).
#
#   make plugins        build every plugin crate for wasm32-wasip2 (release) and
#                       install plugins/dist/<crate-name>.wasm
#   make plugins-test   build the test plugins (plugins-test-wasm), then run
#                       the unit tests of every plugin crate natively
#   make plugins-test-wasm
#                       build the hostile test plugins plugins/tests/<crate>/
#                       for wasm32-wasip2 (release) and install
#                       plugins/dist-test/<crate-name>.wasm, for
#                       policy-host/tests/plugins/sandbox_plugins.rs
#   make plugins-clean  remove plugins/dist, dist-test and dist-polyglot (not plugins/target)
#   make plugins-polyglot
#                       the policies written in Python and JavaScript
#                       (mk/polyglot.mk), into plugins/dist-polyglot/;
#                       `plugins` runs it, and it skips, saying why, when
#                       their toolchains cannot install
#
# A plugin is any folder plugins/<crate>/ holding a Cargo.toml whose package
# name is <crate> (folders dist, dist-test, target and tests are skipped). A new
# plugin needs only its folder and an entry in `members` of plugins/Cargo.toml.
# Only crates whose crate-type lists "cdylib" are installed; a library crate
# there (plugins/policy-sdk) is unit-tested by plugins-test, never installed.
#
# Test plugins live in plugins/tests/<crate>/ (members of the same workspace)
# and are installed into plugins/dist-test/ only: never into plugins/dist/,
# which the gateway loads.
#
# Installs write a temporary file in the target folder and rename it into
# place, so a gateway watching the folder never loads a half-written component.

CARGO ?= cargo

# Absolute repo root, from this file's location (mk/..), so the targets work
# from any working directory.
PLUGINS_ROOT := $(patsubst %/,%,$(dir $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))))
PLUGINS_DIR := $(PLUGINS_ROOT)/plugins
PLUGINS_MANIFEST := $(PLUGINS_DIR)/Cargo.toml
PLUGINS_TARGET := wasm32-wasip2
PLUGINS_DIST := $(PLUGINS_DIR)/dist
PLUGINS_SKIP := dist dist-test target tests
PLUGINS_CRATES := $(filter-out $(PLUGINS_SKIP),$(patsubst $(PLUGINS_DIR)/%/Cargo.toml,%,$(wildcard $(PLUGINS_DIR)/*/Cargo.toml)))
PLUGINS_OUT := $(PLUGINS_DIR)/target/$(PLUGINS_TARGET)/release
# The crates `plugins` builds and installs: those declaring a cdylib.
PLUGINS_WASM_CRATES := $(foreach c,$(PLUGINS_CRATES),$(if $(shell grep -ls 'crate-type.*"cdylib"' $(PLUGINS_DIR)/$(c)/Cargo.toml),$(c)))
PLUGINS_TEST_DIR := $(PLUGINS_DIR)/tests
PLUGINS_TEST_DIST := $(PLUGINS_DIR)/dist-test
PLUGINS_TEST_CRATES := $(patsubst $(PLUGINS_TEST_DIR)/%/Cargo.toml,%,$(wildcard $(PLUGINS_TEST_DIR)/*/Cargo.toml))

# $(call plugins_install,CRATES,DIR): copies each crate's built component to
# DIR/<crate>.wasm, writing a temporary file and renaming it into place.
define plugins_install
	@mkdir -p $(2)
	@set -e; for crate in $(1); do \
		src="$(PLUGINS_OUT)/$$(echo $$crate | tr - _).wasm"; \
		dst="$(2)/$$crate.wasm"; \
		test -f "$$src" || { echo "missing $$src (is $$crate a cdylib?)" >&2; exit 1; }; \
		tmp="$(2)/.$$crate.wasm.tmp.$$$$"; \
		cp "$$src" "$$tmp" && mv -f "$$tmp" "$$dst"; \
		echo "installed $$dst ($$(wc -c < "$$dst") bytes)"; \
	done
endef

.PHONY: plugins plugins-test plugins-test-wasm plugins-clean

plugins: plugins-polyglot
	@test -n "$(PLUGINS_WASM_CRATES)" || { echo "no plugin crates under $(PLUGINS_DIR)" >&2; exit 1; }
	cd $(PLUGINS_ROOT) && $(CARGO) build --manifest-path $(PLUGINS_MANIFEST) \
		--target $(PLUGINS_TARGET) --release $(addprefix -p ,$(PLUGINS_WASM_CRATES))
	$(call plugins_install,$(PLUGINS_WASM_CRATES),$(PLUGINS_DIST))

plugins-test-wasm:
	@test -n "$(PLUGINS_TEST_CRATES)" || { echo "no test plugin crates under $(PLUGINS_TEST_DIR)" >&2; exit 1; }
	cd $(PLUGINS_ROOT) && $(CARGO) build --manifest-path $(PLUGINS_MANIFEST) \
		--target $(PLUGINS_TARGET) --release $(addprefix -p ,$(PLUGINS_TEST_CRATES))
	$(call plugins_install,$(PLUGINS_TEST_CRATES),$(PLUGINS_TEST_DIST))

plugins-test: plugins-test-wasm
	cd $(PLUGINS_ROOT) && $(CARGO) test --manifest-path $(PLUGINS_MANIFEST) \
		$(addprefix -p ,$(PLUGINS_CRATES) $(PLUGINS_TEST_CRATES))

plugins-clean:
	rm -rf $(PLUGINS_DIST) $(PLUGINS_TEST_DIST) $(POLYGLOT_DIST)

include $(PLUGINS_ROOT)/mk/polyglot.mk
