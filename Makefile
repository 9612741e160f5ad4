# Everything installs into a local virtual environment from nothing; versions CI tests are pinned
# in constraints.txt, while pyproject.toml states the ranges users may install.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= all,test

.PHONY: setup quickstart test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

quickstart: setup
	$(VENV)/bin/polydiff fit --config configs/image/digits.yaml

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info runs
