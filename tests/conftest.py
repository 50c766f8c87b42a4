"""Shared test settings: one thread per test process (the suite runs two processes on two cores)."""

import os

os.environ.setdefault("VDLEARN_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

torch.set_num_threads(1)
