# The two set-up commands of the README: `make demo` and `make test`.
# A user's own torch (CUDA build, say) is kept: when the Python that builds the venv can import
# torch, the venv sees it (--system-site-packages); otherwise the CPU pin below is installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all lint bench venv clean

$(PY):
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "agcl: using the torch that $(PYTHON) already has"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install $(TORCH_PIN)

venv: $(PY)

# the demo draws the paper's figures, so it installs the viz extra (matplotlib) too
$(VENV)/.agcl-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[viz]"
	@touch $@

$(VENV)/.agcl-dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	@touch $@

demo: $(VENV)/.agcl-installed
	$(PY) examples/btcv_full.py

# the linter first (ruff, from the dev extras): a style error fails the test command too
test: $(VENV)/.agcl-dev-installed
	$(PY) -m ruff check agcl tests benchmarks examples
	$(PY) -m pytest -m "not slow and not cuda" $(PYTEST_ARGS)

test-slow: $(VENV)/.agcl-dev-installed
	$(PY) -m pytest -m "slow and not cuda" $(PYTEST_ARGS)

test-all: $(VENV)/.agcl-dev-installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.agcl-dev-installed
	$(PY) -m ruff check agcl tests benchmarks examples

bench: $(VENV)/.agcl-dev-installed
	$(PY) -m pip install -e ".[bench]"
	$(PY) benchmarks/bench_loss.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
