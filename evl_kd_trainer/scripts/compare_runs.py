"""The runs of a comparison: one ``evl-kd distill`` and one ``evl-kd evaluate`` per (method, seed), through the
scripts' own ``run()`` (no second training path), each in ``runs/<method>/seed<s>/``.

A run is finished when its marker (``done.json``) exists: it is written last, atomically, after training and
scoring, with the run's settings, timings, scores and the paths of its per-question results. A rerun keeps a
finished run; a folder without a marker (a killed run) is deleted and the run done again. A marker whose settings
differ from the current ones (another recipe content, other overrides) is an error: its results would not belong
in the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evl_kd_trainer.compare.methods import MethodSpec
from evl_kd_trainer.errors import UserError

MARKER = "done.json"
MODEL_DIR = "model"
EVAL_DIR = "eval"
# What `keep_models=False` deletes from a scored run's model folder (logs and configs stay).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def file_digest(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    """One (method, seed): where it lives, the two command lines, and the settings its marker must match."""

    method: MethodSpec
    seed: int
    folder: Path
    distill_argv: tuple[str, ...]
    eval_argv: tuple[str, ...]
    identity: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.method.name}/seed{self.seed}"

    @property
    def model_name(self) -> str:
        """The run's row name in its evaluation."""
        return f"{self.method.name}-seed{self.seed}"

    @property
    def marker(self) -> Path:
        return self.folder / MARKER


def make_run(
    method: MethodSpec,
    seed: int,
    output_dir: Path,
    distill_base: list[str],
    eval_base: list[str],
    settings: dict[str, Any],
) -> Run:
    """``distill_base`` / ``eval_base``: the recipe and the overrides every run shares; ``settings``: what, beside
    the method and the seed, a finished run must have been made with (recipe digests, overrides)."""
    folder = output_dir / "runs" / method.name / f"seed{seed}"
    distill_argv = [*distill_base, *method.argv(), "--kd_method", method.kd_method, "--seed", str(seed)]
    distill_argv += ["--output_dir", str(folder / MODEL_DIR)]
    name = f"{method.name}-seed{seed}"
    eval_argv = [*eval_base, "--model_name_or_path", str(folder / MODEL_DIR), "--model_names", name]
    eval_argv += ["--output_dir", str(folder / EVAL_DIR)]
    identity = {
        **settings,
        "method": method.name,
        "kd_method": method.kd_method,
        "method_overrides": [list(pair) for pair in method.overrides],
        "seed": seed,
    }
    # JSON round trip, so that it compares equal to what a marker reads back
    identity = json.loads(json.dumps(identity))
    return Run(method, seed, folder, tuple(distill_argv), tuple(eval_argv), identity)


def read_marker(run: Run) -> dict[str, Any] | None:
    """The marker of a finished run, ``None`` when the run must be (re)done; raises :class:`UserError` when the
    finished run was made with other settings."""
    if not run.marker.is_file():
        return None
    try:
        marker = json.loads(run.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: treated as unfinished (the marker is written atomically, so this is rare)
    if marker.get("identity") != run.identity:
        old, new = marker.get("identity") or {}, run.identity
        changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
        raise UserError(
            f"{run.folder}: this finished run was made with other settings ({', '.join(changed)} differ); use "
            "another --output_dir, or delete the folder to redo it"
        )
    files = marker.get("predictions", {}).values()
    if not files or not all((run.folder / path).is_file() for path in files):
        return None
    return marker


def _delete_weights(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            path.unlink()


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute(run: Run, keep_models: bool = True) -> dict[str, Any]:
    """Train and score ``run`` from scratch (a stale folder is removed first); returns the marker written."""
    from evl_kd_trainer.scripts import distill, evaluate

    if run.folder.exists():
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True)
    started = time.perf_counter()
    if distill.run(list(run.distill_argv)):
        raise RuntimeError(f"{run.key}: evl-kd distill failed")
    trained = time.perf_counter()
    if evaluate.run(list(run.eval_argv)):
        raise RuntimeError(f"{run.key}: evl-kd evaluate failed")
    scored = time.perf_counter()
    results = json.loads((run.folder / EVAL_DIR / "results.json").read_text(encoding="utf-8"))
    splits = results["models"][run.model_name]["splits"]
    marker = {
        "identity": run.identity,
        "train_seconds": round(trained - started, 3),
        "eval_seconds": round(scored - trained, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "distill_argv": list(run.distill_argv),
        "eval_argv": list(run.eval_argv),
        "scores": {
            split: {key: value for key, value in scores.items() if isinstance(value, (int, float)) or value is None}
            for split, scores in splits.items()
        },
        # relative to the run folder, so that the whole comparison folder can be moved
        "predictions": {split: f"{EVAL_DIR}/{scores['predictions_file']}" for split, scores in splits.items()},
    }
    if not keep_models:
        _delete_weights(run.folder / MODEL_DIR)
    _release_memory()  # the next run loads its own models in this process
    tmp = run.marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run.marker)
    return marker
