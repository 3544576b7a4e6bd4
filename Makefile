# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
# Each creates .venv and installs everything it needs on first use, then generates and compiles
# the kernels once (`mbrl-control compile`: generated code is cached, not checked in).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo sim test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/install_ros.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	bash scripts/install_ros.sh $(PY)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mbrl-control compile
	$(VENV)/bin/mbrl-control demo

test: setup
	$(VENV)/bin/mbrl-control compile
	$(PY) -m pytest -q -n 2 test

bench: setup
	$(VENV)/bin/mbrl-control bench --controller mppi --problem bicycle-track

clean:
	rm -rf $(VENV) runs build *.egg-info
