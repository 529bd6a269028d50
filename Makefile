# vmkit: `make lab` opens the kit in JupyterLab; `make test` runs every test.
#
# Everything Python goes into .venv at the exact versions of constraints.txt; system programs
# (graphviz's dot, GNU as, chromium, bubblewrap for the grader's sandbox) come from apt
# (`make sysdeps`).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vmkit-installed.stamp

# root installs directly; anyone else through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

# The whole test run in one place. --nbval runs every notebook under the paths given (the
# lecture notebooks in notebooks/, the homework solutions in solutions/ and the smoke notebook
# in tests/data/) and compares each
# cell's output with the stored one, after nbval_sanitize.cfg's masks; --dist loadfile keeps
# each notebook (one kernel) on one worker, and --no-loadscope-reorder hands the files out in
# the order conftest.py gives them (the longest first: LONG_FILES); --durations lists the
# slowest tests, to keep the suite's time in view.
# Extra arguments for one run: make test ARGS='-k asm'
TEST_CMD = $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=30 --nbval --nbval-sanitize-with nbval_sanitize.cfg \
	tests notebooks solutions
ARGS ?=

ORACLE_CASES ?= 100000

.PHONY: help venv sysdeps lab test test-live-slides oracle slides site notebooks bench constraints \
	clean distclean hub hub-proxy hub-env hub-test

help:
	@echo "make lab        open the kit in JupyterLab (installs what it needs first;"
	@echo "                LAB_DIR=exercises opens the homework; NBGRADER=1 turns"
	@echo "                nbgrader's instructor tools on)"
	@echo "make test       run every test"
	@echo "make test-live-slides  present notebook 01 with RISE in chromium, step the Stepper"
	@echo "make venv       create .venv with the pinned Python packages"
	@echo "make sysdeps    apt-get install graphviz, binutils, chromium, npm, bubblewrap, git where missing"
	@echo "make oracle     larger differential sweep against unicorn ($(ORACLE_CASES) cases)"
	@echo "make slides     lecture notebooks -> build/slides/ (reveal.js, works offline)"
	@echo "make hub        a course's JupyterHub on this server (root; see README, hub/)"
	@echo "make hub-test   two students on a real hub in chromium (root; creates users)"
	@echo "make site       the course website -> build/site/ (lectures, exercises, docs,"
	@echo "                search; works offline: open build/site/index.html)"
	@echo "make notebooks  re-execute every notebook and save it in place (repeatable)"
	@echo "make bench      run benchmarks/*.py"
	@echo "make constraints  re-pin constraints.txt to what PyPI serves now"
	@echo "make clean      remove build output and caches (distclean: also .venv)"

# --- installation -----------------------------------------------------------------------------

venv: $(STAMP)

# The stamp lives inside .venv, so removing .venv reinstalls; editing pyproject.toml or
# constraints.txt reinstalls into the existing venv.
$(STAMP): pyproject.toml constraints.txt
	@if [ ! -x $(PY) ]; then \
	  rm -rf $(VENV); \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    echo "make: '$(PYTHON) -m venv' failed; installing python3-venv"; \
	    rm -rf $(VENV); \
	    $(SUDO) apt-get update && $(APT_INSTALL) python3-venv && $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[test,hub]'
	$(PY) -m vmkit.labsetup
	$(PY) -m vmkit.rise notebooks
	@touch $@

sysdeps:
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v as  >/dev/null 2>&1 || missing="$$missing binutils"; \
	[ -x /usr/bin/chromium ]       || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing$$missing"; \
	  $(SUDO) apt-get update && $(APT_INSTALL) $$missing; \
	fi

# --- using the kit ----------------------------------------------------------------------------

LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)

# The folder JupyterLab opens: the course notebooks; `make lab LAB_DIR=exercises` for homework.
LAB_DIR ?= notebooks
# nbgrader's Lab and server extensions (Validate, Formgrader, ...) are for the instructor:
# off unless `make lab NBGRADER=1`. vmkit.labsetup writes the kit's Lab settings (widget state
# saved with the notebook; nbgrader on or off) into .venv/etc/jupyter before Lab starts.
NBGRADER ?= 0
LABSETUP_FLAGS := $(if $(filter 1 yes true on,$(NBGRADER)),--instructor)

lab: venv sysdeps
	$(PY) -m vmkit.labsetup $(LABSETUP_FLAGS)
	$(PY) -m vmkit.rise notebooks
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) $(LAB_DIR)/

test: venv sysdeps
	$(TEST_CMD) $(ARGS)

# Live slides (tests/browser/test_rise.py's browser test: JupyterLab, RISE, a kernel; about a minute,
# so not in `make test`; .ci/run runs it after `make test`)
test-live-slides: venv sysdeps
	VMKIT_LIVE_SLIDES=1 $(PY) -m pytest -n 0 tests/browser/test_rise.py $(ARGS)

oracle: venv sysdeps
	VMKIT_ORACLE_CASES=$(ORACLE_CASES) $(PY) -m pytest -n 2 tests/isa/test_oracle.py $(ARGS)

# Every lecture notebook (notebooks/NN-*.ipynb) as build/slides/NN-*.slides.html, with the
# reveal.js, require.js and MathJax of share/slides/package-lock.json (npm ci into build/npm)
# copied to build/slides/assets/: open the decks from disk, no network needed.
slides: venv sysdeps
	$(VENV)/bin/vmkit slides --output-dir build/slides

# Re-execute every notebook in place (vmkit.nbtools.execute_notebook: fixed hash seed, no
# timestamps, stable widget ids), so that a second run changes no byte. Then `make test`.
# (solutions/ too: `vmkit release` strips the outputs again, so exercises/ does not change)
NOTEBOOK_FILES = $(wildcard notebooks/*.ipynb) $(wildcard solutions/*.ipynb) $(wildcard tests/data/*.ipynb)
notebooks: venv sysdeps
	$(PY) -m vmkit.nbtools execute $(NOTEBOOK_FILES)

# The course website (vmkit.site; `vmkit site DIR` does the same): a page per lecture (stored
# outputs, widgets as their static pictures), per exercise (exercises/: no solutions) and per
# docs/*.md, an index, previous/next links and search; MathJax and require.js from the same
# pinned npm packages as the decks, copied to build/site/assets/.
site: venv sysdeps
	$(PY) -m vmkit.site --output-dir build/site

bench: venv sysdeps
	@shopt -s nullglob; for f in benchmarks/*.py; do \
	  echo "== $$f"; $(PY) "$$f" || exit 1; \
	done

# Re-pin every direct and transitive dependency to what PyPI serves now (then `make test`).
constraints:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install --disable-pip-version-check -q -e '.[test,hub]' && \
	{ grep '^#' constraints.txt; \
	  "$$tmp/venv/bin/pip" freeze --all --exclude-editable | grep -iv '^vmkit\b\|^pip=='; } > "$$tmp/c.txt" && \
	mv "$$tmp/c.txt" constraints.txt && echo "make: constraints.txt re-pinned"

# --- a course on JupyterHub (hub/) ---------------------------------------------------------------

# configurable-http-proxy, at the version of hub/package-lock.json, into hub/node_modules
HUB_PROXY := hub/node_modules/.bin/configurable-http-proxy
hub-proxy: $(HUB_PROXY)
$(HUB_PROXY): hub/package.json hub/package-lock.json
	@command -v npm >/dev/null 2>&1 || $(MAKE) sysdeps
	cd hub && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

# The users' environment: a venv every student can read, with the kit's wheel and nbgitpuller
# at the pins of constraints.txt (a Docker image or conda environment does the same: README).
HUB_USERS_ENV ?= /opt/vmkit-hub/env
hub-env: venv
	rm -rf build/hub-dist
	$(PY) -m pip wheel --no-build-isolation --no-deps -q -w build/hub-dist .
	[ -x $(HUB_USERS_ENV)/bin/python ] || $(PYTHON) -m venv $(HUB_USERS_ENV)
	$(HUB_USERS_ENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt \
	  "$$(ls build/hub-dist/vmkit-*.whl)[hub]"
	cd / && $(abspath $(HUB_USERS_ENV))/bin/python -m vmkit.labsetup  # the installed kit
	chmod -R a+rX $(HUB_USERS_ENV)

# The hub itself (root: it starts each student's server as that student's system user).
# VMKIT_HUB_* settings: hub/jupyterhub_config.py. E.g.
#   make hub VMKIT_HUB_STUDENTS=alice,bob VMKIT_HUB_COURSE_REPO=https://github.com/me/course
hub: venv sysdeps hub-proxy hub-env
	VMKIT_HUB_USERS_ENV=$(HUB_USERS_ENV) $(VENV)/bin/jupyterhub -f hub/jupyterhub_config.py

# Two students on a real hub, in chromium (tests/browser/test_hub.py): root, a few minutes.
hub-test: venv sysdeps hub-proxy
	VMKIT_HUB_TEST=1 $(PY) -m pytest -n 0 tests/browser/test_hub.py $(ARGS)

# --- cleaning ---------------------------------------------------------------------------------

clean:
	rm -rf build/ .pytest_cache/ *.egg-info/ vmkit.egg-info/ hub/node_modules/
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) \
	  -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
