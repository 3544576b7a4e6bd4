# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
# Each creates .venv and installs everything it needs on first use, then generates and compiles
# the kernels once (`mbrl-control compile`: generated code is cached, not checked in).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo sim test bench clean

# The vendored launch/ros2cli sources (../shared beside the checkout), when present.
ROS2_LAUNCH_VENDOR ?= ../shared/vendor/ros2_launch
OVERLAY_STAMP := $(VENV)/overlay/.complete

setup: $(STAMP) $(OVERLAY_STAMP)

$(STAMP): requirements.txt setup.py scripts/install_ros.sh scripts/install_ros_launch.sh scripts/make_overlay.py \
          $(wildcard $(ROS2_LAUNCH_VENDOR)/install_launch.sh)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	bash scripts/install_ros.sh $(PY)
	ROS2_LAUNCH_VENDOR=$(ROS2_LAUNCH_VENDOR) bash scripts/install_ros_launch.sh $(PY)
	touch $(STAMP)

# The ament overlay (.venv/overlay) links every data file of setup.py: rebuilt when one is added.
$(OVERLAY_STAMP): $(STAMP) $(wildcard launch/* config/*.yaml models/* sim/*)
	$(PY) scripts/make_overlay.py $(VENV)/overlay
	touch $(OVERLAY_STAMP)

demo: setup
	$(VENV)/bin/mbrl-control compile
	$(VENV)/bin/mbrl-control demo

test: setup
	$(VENV)/bin/mbrl-control compile
	$(PY) -m pytest -q -n 2 -m "not serial" test
	$(PY) -m pytest -q -m serial test

bench: setup
	$(VENV)/bin/mbrl-control bench --controller mppi --problem bicycle-track

clean:
	rm -rf $(VENV) runs build *.egg-info
