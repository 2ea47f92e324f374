# Switchyard policy plugins (included by the root Makefile; also usable alone:
# `make -f mk/plugins.mk plugins`).
#
#   make plugins        build every plugin crate for wasm32-wasip2 (release) and
#                       install plugins/dist/<crate-name>.wasm
#   make plugins-test   run the plugins' unit tests natively on the host
#   make plugins-clean  remove plugins/dist (not plugins/target)
#
# A plugin is any folder plugins/<crate>/ holding a Cargo.toml whose package
# name is <crate> (folders dist, dist-test, target and tests are skipped). A new
# plugin needs only its folder and an entry in `members` of plugins/Cargo.toml.
#
# Installs write a temporary file in plugins/dist/ and rename it into place, so
# a gateway watching the folder never loads a half-written component.

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

.PHONY: plugins plugins-test plugins-clean

plugins:
	@test -n "$(PLUGINS_CRATES)" || { echo "no plugin crates under $(PLUGINS_DIR)" >&2; exit 1; }
	cd $(PLUGINS_ROOT) && $(CARGO) build --manifest-path $(PLUGINS_MANIFEST) \
		--target $(PLUGINS_TARGET) --release $(addprefix -p ,$(PLUGINS_CRATES))
	@mkdir -p $(PLUGINS_DIST)
	@set -e; for crate in $(PLUGINS_CRATES); do \
		src="$(PLUGINS_OUT)/$$(echo $$crate | tr - _).wasm"; \
		dst="$(PLUGINS_DIST)/$$crate.wasm"; \
		test -f "$$src" || { echo "missing $$src (is $$crate a cdylib?)" >&2; exit 1; }; \
		tmp="$(PLUGINS_DIST)/.$$crate.wasm.tmp.$$$$"; \
		cp "$$src" "$$tmp" && mv -f "$$tmp" "$$dst"; \
		echo "installed $$dst ($$(wc -c < "$$dst") bytes)"; \
	done

plugins-test:
	cd $(PLUGINS_ROOT) && $(CARGO) test --manifest-path $(PLUGINS_MANIFEST) \
		$(addprefix -p ,$(PLUGINS_CRATES))

plugins-clean:
	rm -rf $(PLUGINS_DIST)
