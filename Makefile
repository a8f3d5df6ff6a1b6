# Set-up and the everyday commands. Each builds the virtual environment first
# when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pins that pip installs on this kind of machine; override
# with e.g. `make TORCH_PINS="torch torchvision" test` elsewhere. On a machine
# without a GPU, `make TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu test`
# installs the CPU-only build instead of the CUDA one (~3 GB less).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX_URL ?=
# The gallery runs on the photos and weights of a `shared` folder beside the
# project; the site is written to $(DOCS_OUT)/html.
SHARED ?= ../shared
DOCS_OUT ?= build/docs
SPHINXOPTS ?= -W --keep-going -E
LINT_PATHS := sktransfer tests examples benchmarks docs/conf.py docs/sphinxext

.PHONY: demo test bench lint docs docs-clean clean

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py --verbose 1

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_features.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

docs: $(VENV)/.docs-installed
	@test -d $(SHARED)/data && test -f $(SHARED)/weights/mobilenet_v2-imagenet.pth || \
		{ echo "make docs: the gallery needs $(SHARED)/data and" \
		"$(SHARED)/weights/mobilenet_v2-imagenet.pth (see docs/install.rst)"; exit 1; }
	rm -rf docs/generated  # API stubs of names that no longer exist would stay
	MPLBACKEND=Agg $(PY) -m sphinx $(SPHINXOPTS) -b html docs $(DOCS_OUT)/html
	@echo "The site is in $(DOCS_OUT)/html/index.html"

docs-clean:
	rm -rf $(DOCS_OUT) docs/generated docs/auto_examples docs/sg_execution_times.rst

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

clean: docs-clean
	rm -rf $(VENV) .pytest_cache build *.egg-info
