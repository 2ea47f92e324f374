# Policies written in Python and JavaScript (included by mk/plugins.mk; `make
# plugins` runs `plugins-polyglot`).
#
#   make plugins-polyglot  install the toolchains (pinned), then build each
#                          Python and JavaScript policy into plugins/dist-polyglot/
#   make plugins-python    Python only: plugins/python/<name>/app.py ->
#                          plugins/dist-polyglot/<name>-py.wasm (componentize-py)
#   make plugins-js        JavaScript only: plugins/js/<name>/policy.js ->
#                          plugins/dist-polyglot/<name>-js.wasm (jco componentize)
#
# Why a folder of their own, not plugins/dist/ (which every gateway of the
# demo, the bench and the end-to-end suite loads whole): each component embeds
# its language's runtime (CPython ~18 MiB, SpiderMonkey ~12 MiB) and costs
# 15-20 s of CPU to compile, against milliseconds for a Rust plugin. Install
# one into a gateway's plugins folder to use it (write, then rename).
#
# Toolchains come from the package registries, pinned, into project-local
# folders, never system-wide: componentize-py (plugins/python/requirements.txt)
# into the project's virtualenv (.venv, the one `make setup` makes), jco and
# componentize-js (plugins/js/package.json + package-lock.json, `npm ci`) into
# plugins/js/node_modules. When a toolchain cannot install (no python3 or npm,
# no registry), its policies are skipped with a message saying why, and the
# target succeeds: the Rust plugins and the tests do not depend on them (the
# tests that need them skip, saying so, or fail under SWITCHYARD_REQUIRE_ALL=1
# as in CI). A policy that fails to build once its toolchain installed fails
# the target.
#
# Each component is built against the world `ranked-policy` of wit/policy.wit,
# or the world named in a file `world` beside its source. It is rebuilt when
# its source, the WIT or the pinned toolchain changes; installs write a
# temporary file and rename it into place, as the Rust plugins' do.

POLYGLOT_MK := $(abspath $(lastword $(MAKEFILE_LIST)))
POLYGLOT_DIST := $(PLUGINS_DIR)/dist-polyglot
POLYGLOT_WORLD := ranked-policy
POLYGLOT_WIT := $(PLUGINS_ROOT)/wit/policy.wit

PYTHON3 ?= python3
POLYGLOT_VENV ?= $(PLUGINS_ROOT)/.venv
POLYGLOT_PY_DIR := $(PLUGINS_DIR)/python
POLYGLOT_PY_REQUIREMENTS := $(POLYGLOT_PY_DIR)/requirements.txt
POLYGLOT_PY_STAMP := $(POLYGLOT_VENV)/.componentize-py-installed
POLYGLOT_PY_NAMES := $(patsubst $(POLYGLOT_PY_DIR)/%/app.py,%,$(wildcard $(POLYGLOT_PY_DIR)/*/app.py))
POLYGLOT_PY_WASM := $(foreach n,$(POLYGLOT_PY_NAMES),$(POLYGLOT_DIST)/$(n)-py.wasm)

NPM ?= npm
POLYGLOT_JS_DIR := $(PLUGINS_DIR)/js
POLYGLOT_JS_STAMP := $(POLYGLOT_JS_DIR)/node_modules/.installed
POLYGLOT_JS_NAMES := $(patsubst $(POLYGLOT_JS_DIR)/%/policy.js,%,$(wildcard $(POLYGLOT_JS_DIR)/*/policy.js))
POLYGLOT_JS_WASM := $(foreach n,$(POLYGLOT_JS_NAMES),$(POLYGLOT_DIST)/$(n)-js.wasm)

POLYGLOT_SUBMAKE := $(MAKE) --no-print-directory -f $(POLYGLOT_MK) PLUGINS_ROOT=$(PLUGINS_ROOT) \
	PLUGINS_DIR=$(PLUGINS_DIR)

.PHONY: plugins-polyglot plugins-python plugins-js

plugins-polyglot: plugins-python plugins-js

# The toolchain's install decides whether to build: a failed install skips,
# a failed build fails.
plugins-python:
	@if [ -z "$(POLYGLOT_PY_NAMES)" ]; then echo "plugins-python: no policy under $(POLYGLOT_PY_DIR)"; \
	elif $(POLYGLOT_SUBMAKE) $(POLYGLOT_PY_STAMP); then \
		$(POLYGLOT_SUBMAKE) $(POLYGLOT_PY_WASM); \
	else \
		echo "plugins-python: SKIPPED the Python policies ($(POLYGLOT_PY_NAMES)): componentize-py did not install (the error is above); the tests that load them skip, or fail under SWITCHYARD_REQUIRE_ALL=1 (CI)"; \
	fi

plugins-js:
	@if [ -z "$(POLYGLOT_JS_NAMES)" ]; then echo "plugins-js: no policy under $(POLYGLOT_JS_DIR)"; \
	elif $(POLYGLOT_SUBMAKE) $(POLYGLOT_JS_STAMP); then \
		$(POLYGLOT_SUBMAKE) $(POLYGLOT_JS_WASM); \
	else \
		echo "plugins-js: SKIPPED the JavaScript policies ($(POLYGLOT_JS_NAMES)): jco did not install (the error is above); the tests that load them skip, or fail under SWITCHYARD_REQUIRE_ALL=1 (CI)"; \
	fi

$(POLYGLOT_PY_STAMP): $(POLYGLOT_PY_REQUIREMENTS)
	@command -v $(PYTHON3) >/dev/null || { echo "plugins-python: no $(PYTHON3) on PATH" >&2; exit 1; }
	$(PYTHON3) -m venv $(POLYGLOT_VENV)
	$(POLYGLOT_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(POLYGLOT_PY_REQUIREMENTS)
	touch $@

$(POLYGLOT_JS_STAMP): $(POLYGLOT_JS_DIR)/package.json $(POLYGLOT_JS_DIR)/package-lock.json
	@command -v $(NPM) >/dev/null || { echo "plugins-js: no $(NPM) on PATH" >&2; exit 1; }
	cd $(POLYGLOT_JS_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

# $(call polyglot_world,SOURCE_DIR): the world a policy is built against.
polyglot_world = $$(cat $(1)/world 2>/dev/null || echo $(POLYGLOT_WORLD))

$(POLYGLOT_DIST)/%-py.wasm: $(POLYGLOT_PY_DIR)/%/app.py $(POLYGLOT_WIT) $(POLYGLOT_PY_STAMP)
	@mkdir -p $(POLYGLOT_DIST)
	cd $(PLUGINS_ROOT) && $(POLYGLOT_VENV)/bin/componentize-py -d wit -w $(call polyglot_world,$(<D)) \
		componentize app -p $(<D) -o $(@D)/.$(@F).tmp.$$$$ && \
		mv -f $(@D)/.$(@F).tmp.$$$$ $@
	@echo "installed $@ ($$(wc -c < $@) bytes)"

# jco reads the WIT through a WASI view of the working directory: run it
# from the repository root with relative paths.
$(POLYGLOT_DIST)/%-js.wasm: $(POLYGLOT_JS_DIR)/%/policy.js $(POLYGLOT_WIT) $(POLYGLOT_JS_STAMP)
	@mkdir -p $(POLYGLOT_DIST)
	cd $(PLUGINS_ROOT) && $(POLYGLOT_JS_DIR)/node_modules/.bin/jco componentize \
		$(patsubst $(PLUGINS_ROOT)/%,%,$<) --wit wit -n $(call polyglot_world,$(<D)) --disable all \
		-o $(patsubst $(PLUGINS_ROOT)/%,%,$(@D))/.$(@F).tmp.$$$$ && \
		mv -f $(@D)/.$(@F).tmp.$$$$ $@
	@echo "installed $@ ($$(wc -c < $@) bytes)"
