# Two commands on a fresh Linux machine (Python 3.11, root or sudo for system packages):
#   make demo   installs everything and runs the main job end to end
#   make test   installs everything and runs the test suite
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export RADIOLENS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup system-deps demo test test-all lint viewer image compose-images compose-secrets clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools

# torch/torchvision are pinned in pyproject.toml; installed first so the resolver takes the pinned files.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

demo: setup
	bash scripts/demo.sh

test: setup system-deps
	$(BIN)/python -m pytest -q

test-all: setup system-deps
	$(BIN)/python -m pytest -q -m ''

# The web viewer's bundle (Cornerstone3D, from web/package-lock.json); needs Node >= 20 and npm. Output committed.
viewer:
	bash scripts/build-viewer.sh

# The serving image (deploy/container/Dockerfile) with podman, on a Debian base made here (docs/deploy.md).
image:
	bash scripts/build-image.sh

# compose.yaml's images (radiolens, PostgreSQL, Orthanc, Prometheus) from Debian packages, and its secret files.
compose-images:
	bash scripts/build-compose-images.sh

compose-secrets:
	bash scripts/compose-secrets.sh

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
