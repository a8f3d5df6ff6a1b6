# Set-up and the two everyday commands. `make demo` and `make test` each build
# the virtual environment first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pins that pip installs on this kind of machine; override
# with e.g. `make TORCH_PINS="torch torchvision" test` elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench lint clean

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_features.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sktransfer tests examples benchmarks
	$(VENV)/bin/ruff format --check sktransfer tests examples benchmarks

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
