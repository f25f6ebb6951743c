# Every target creates or refreshes .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-stamp
DEMO_DIR ?= .demo

.PHONY: venv demo view airflow test bench lint clean pychunkedgraph chromium

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m tools.airflow_demo --out $(DEMO_DIR)

# The example's meshes in neuroglancer: serves .demo (meshing it first when `make demo` has not),
# prints the viewer URL; VIEW_ARGS goes to `serve` (e.g. VIEW_ARGS="--port 8001").
VIEW_ARGS ?=
view: $(STAMP)
	$(PY) -m tools.view --out $(DEMO_DIR) -- $(VIEW_ARGS)

airflow: $(STAMP)
	$(PY) -m tools.airflow_serve

# The browser tests drive Debian's chromium (Playwright with executable_path): installed here when
# missing, so CI always runs them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) chromium
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) -m bench

# The PyChunkedGraph backend's extra, for labs with a CAVE deployment (never run by CI: its
# repository is not reachable from the machines that test this project). PyChunkedGraph pins
# numpy 1.26, cloud-volume 8, DracoPy 1.3 and the conda-only graph_tool, which conflict with this
# stack, so it goes in with --no-deps beside the few modules its read path imports.
PCG_COMMIT := c1b7740d00e0872ab6e31fdd332ed6dccf3a036f
pychunkedgraph: $(STAMP)
	$(PY) -m pip install -q '.[pychunkedgraph]'
	$(PY) -m pip install -q --no-deps 'pychunkedgraph @ git+https://github.com/seung-lab/PyChunkedGraph@$(PCG_COMMIT)'

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(DEMO_DIR) .airflow
