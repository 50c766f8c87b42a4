# vdlearn: the two commands are `make lab` and `make test`.
# Both create the virtual environment in .venv on first use.
#
#   TORCH_SPEC   which torch to install first (default: the newest release pip finds)
#   TORCH_INDEX  where torch comes from: "auto" (default) takes the small CPU build on a Linux
#                machine without an NVIDIA GPU (no nvidia-smi) and the CUDA build from PyPI
#                otherwise; "cpu" or "pypi" choose one; any other value is used as the index URL
#   ARGS         extra options for `jupyter lab`, e.g. make lab ARGS="--no-browser --port 8899"
#   PYTHON       the interpreter used to create the environment (3.11 or newer)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.2
TORCH_INDEX ?= auto
PYTEST_ARGS ?=
ARGS ?=
CPU_INDEX := https://download.pytorch.org/whl/cpu

# auto: CPU build where there is no NVIDIA GPU on Linux (macOS wheels on PyPI are CPU/MPS builds)
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(TORCH_INDEX),auto)
  TORCH_URL := $(if $(HAS_NVIDIA),,$(if $(filter Linux,$(shell uname -s)),$(CPU_INDEX),))
else ifeq ($(TORCH_INDEX),cpu)
  TORCH_URL := $(CPU_INDEX)
else ifeq ($(TORCH_INDEX),pypi)
  TORCH_URL :=
else
  TORCH_URL := $(TORCH_INDEX)
endif
# JupyterLab refuses to start as root (Docker, cloud VMs) unless told it may
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

BIN := $(VENV)/bin
STAMP := $(VENV)/.vdlearn-installed

.PHONY: lab test setup clean-venv strip

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "vdlearn needs Python 3.11 or newer, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	@echo "torch: $(TORCH_SPEC) from $(if $(TORCH_URL),$(TORCH_URL),PyPI) (TORCH_INDEX=$(TORCH_INDEX))"
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_URL),--index-url $(TORCH_URL),)
	$(BIN)/python -m pip install -e ".[dev]"
	-@git rev-parse --git-dir >/dev/null 2>&1 && $(BIN)/nbstripout --install && echo "git filter nbstripout installed: notebook outputs never reach a commit"
	touch $(STAMP)

# the lab's file browser opens at the course folder; runs and their checkpoints go to runs/ beside it
lab: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab 00_welcome.ipynb $(ROOT_FLAG) $(ARGS)

test: $(STAMP)
	VDLEARN_SMOKE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=600 $(PYTEST_ARGS)

strip:
	$(BIN)/nbstripout notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
