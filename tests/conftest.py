"""Shared test settings: one thread per test process (the suite runs two processes on two cores).

Training runs of the notebooks and of the tests go to a temporary ``$VDLEARN_RUNS`` that is
deleted when the session ends, so a test run leaves nothing behind in the checkout.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("VDLEARN_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# one thread per process, notebook kernels included (they inherit it): two test processes with two
# threads each on two cores spin against each other and run several times slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "VDLEARN_RUNS" not in os.environ:  # the notebooks' kernels inherit it
    _runs = tempfile.mkdtemp(prefix="vdlearn-test-runs-")
    os.environ["VDLEARN_RUNS"] = _runs
    atexit.register(shutil.rmtree, _runs, ignore_errors=True)

import torch

torch.set_num_threads(1)
