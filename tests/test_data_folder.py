"""data/: what the course ships stays small, and every set of weights says how it was made."""

import json

from vdlearn.io import data_dir

LIMIT_MB = 30  # the whole folder, in 10^6 bytes


def test_data_stays_under_the_size_limit():
    files = [p for p in data_dir().rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    biggest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:3]
    assert total < LIMIT_MB * 1e6, (f"data/ holds {total / 1e6:.1f} MB, over {LIMIT_MB} MB; the largest: "
                                    + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in biggest))


def test_every_set_of_weights_has_its_json_with_the_command_that_made_it():
    weights = sorted(data_dir().rglob("*.safetensors"))
    assert weights
    for path in weights:
        meta_path = path.with_suffix(".json")
        assert meta_path.exists(), f"{path} has no {meta_path.name}"
        meta = json.loads(meta_path.read_text())
        for key in ("config", "metrics", "commit", "command", "hardware"):
            assert key in meta, (path.name, key)
        if meta.get("stored_dtype"):  # a half-precision copy says how it was stored and measured again
            assert meta["ship"]["command"].startswith("vdlearn ship"), path.name
            assert meta["ship"]["dtype"] == meta["stored_dtype"], path.name
