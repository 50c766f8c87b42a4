"""How long does each notebook take? Runs every notebook top to bottom in a fresh kernel and prints a table.

    python benchmarks/notebook_times.py                 # smoke mode (VDLEARN_SMOKE=1), every notebook
    python benchmarks/notebook_times.py --full          # smoke and full mode
    python benchmarks/notebook_times.py --only 05 --full --json runs/notebook_times.json

Each notebook runs as a learner runs it: a new kernel, cells in order, in ``notebooks/``,
with ``VDLEARN_SMOKE`` set to 1 (smoke) or 0 (full) and training runs written to a temporary
``$VDLEARN_RUNS``. The table gives wall-clock seconds per notebook and mode, the machine
(cores, torch threads) and its load average before and after, because a busy machine
stretches every figure: with other work on the cores, give the kernels one thread each
(``--threads 1``; the tests do the same), or torch's threads spin against the other work and a
smoke run can take ten times longer. The README's course table and each notebook's first cell quote it.
Target (the first-hour issue): every smoke run <= 60 s on a quiet 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def cell_seconds(nb) -> list[tuple[int, float]]:
    """``(cell index, seconds)`` of every executed code cell, from nbclient's timing metadata."""
    from datetime import datetime

    out = []
    for i, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k])
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            out.append((i, (end - start).total_seconds()))
    return out


def run_notebook(path: Path, smoke: bool, timeout: int, slowest: int = 0) -> tuple[float, str | None]:
    """Execute one notebook in a fresh kernel; ``(seconds, error or None)``."""
    nb = nbformat.read(path, as_version=4)
    runs = tempfile.mkdtemp(prefix="vdlearn-nbtime-")
    saved = {k: os.environ.get(k) for k in ("VDLEARN_SMOKE", "VDLEARN_RUNS", "MPLBACKEND")}
    os.environ.update({"VDLEARN_SMOKE": "1" if smoke else "0", "VDLEARN_RUNS": runs, "MPLBACKEND": "Agg"})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 (a failing notebook is reported in the table, not hidden)
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:120]}"
    finally:
        seconds = time.perf_counter() - start
        for i, sec in sorted(cell_seconds(nb), key=lambda x: -x[1])[:slowest]:
            print(f"    cell {i}: {sec:.1f} s  {nb.cells[i].source.splitlines()[0][:70] if nb.cells[i].source else ''}",
                  file=sys.stderr)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(runs, ignore_errors=True)
    return seconds, error


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="also run full mode (minutes per notebook)")
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 03 05")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each kernel (OMP_NUM_THREADS; default: torch's choice, one per core)")
    p.add_argument("--slowest", type=int, default=0, help="also list this many slowest cells per notebook")
    p.add_argument("--json", default=None, help="also write the table as json to this file")
    a = p.parse_args(argv)

    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the kernels inherit it
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if a.only:
        paths = [q for q in paths if q.name[:2] in a.only]
    modes = ["smoke", "full"] if a.full else ["smoke"]
    load_before = os.getloadavg()
    rows = []
    for path in paths:
        row = {"notebook": path.stem}
        for mode in modes:
            seconds, error = run_notebook(path, mode == "smoke", a.timeout, a.slowest)
            row[mode] = round(seconds, 1)
            if error:
                row[f"{mode}_error"] = error
            print(f"  {path.stem} {mode}: {seconds:.0f} s{'  FAILED ' + error if error else ''}", file=sys.stderr)
        rows.append(row)
    load_after = os.getloadavg()

    import torch

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpu cores, torch {torch.__version__} "
          f"(kernel threads: {os.environ.get('OMP_NUM_THREADS', 'one per core')}); load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print("| notebook | " + " | ".join(f"{m} (s)" for m in modes) + " |")
    print("|---|" + "---|" * len(modes))
    for row in rows:
        cells = [f"{row[m]:.0f}" + (" FAILED" if f"{m}_error" in row else "") for m in modes]
        print(f"| `{row['notebook']}` | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "machine": platform.machine(), "cpus": os.cpu_count(),
                                            "load_before": load_before, "load_after": load_after}, indent=1))
    return 1 if any(k.endswith("_error") for r in rows for k in r) else 0


if __name__ == "__main__":
    raise SystemExit(main())
