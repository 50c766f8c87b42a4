# vdlearn: the two commands are `make lab` and `make test`.
# Both create the virtual environment in .venv on first use.
#
#   TORCH_SPEC   which torch to install first (default: the newest release pip finds)
#   TORCH_INDEX  an extra index for torch, e.g. https://download.pytorch.org/whl/cpu
#                for a small CPU-only install
#   PYTHON       the interpreter used to create the environment (3.11 or newer)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.2
TORCH_INDEX ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.vdlearn-installed

.PHONY: lab test setup clean-venv strip

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "vdlearn needs Python 3.11 or newer, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/00_welcome.ipynb

test: $(STAMP)
	VDLEARN_SMOKE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=600 $(PYTEST_ARGS)

strip:
	$(BIN)/nbstripout notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
