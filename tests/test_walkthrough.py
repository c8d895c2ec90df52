"""A newcomer's first hour, as a test: README's commands in order, on a fresh clone, with the Hub unreachable.

Slow (a fresh venv, the whole suite and the demo: about 20 minutes on 2 cores): `make test-slow`, or
`pytest tests/test_walkthrough.py -m slow`. It clones the committed HEAD, so commit before running it.
`EVL_WALKTHROUGH_SKIP="test demo"` leaves out the two long steps (install, CLI and error checks only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_readme_commands_on_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    skip = set(os.environ.get("EVL_WALKTHROUGH_SKIP", "").split())
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "EVL_KD_", "PYTEST"))}
    # The network is down: nothing answers at the Hub's address (package installs still use the registry).
    env.update(HF_ENDPOINT="http://127.0.0.1:9", XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))

    install = _run(["make", "install"], clone, env, timeout=1800)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]
    cli = str(clone / ".venv" / "bin" / "evl-kd")
    python = str(clone / ".venv" / "bin" / "python")

    version = _run([cli, "--version"], clone, env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("evl-kd (evl_kd_trainer) ")
    helped = _run([cli, "distill", "--help"], clone, env, timeout=300)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: evl-kd distill ")

    # The main job with no checkpoints and no network: one line naming the missing student, quickly.
    start = time.perf_counter()
    job = _run([python, "examples/distill.py", "--recipe", "recipes/pulse_to_qwen.yaml"], clone, env, timeout=300)
    elapsed = time.perf_counter() - start
    assert job.returncode == 2, job.stderr[-3000:]
    first_line = job.stderr.strip().splitlines()[0]
    assert first_line.startswith("evl-kd distill: error: `model_name_or_path`: no such model folder"), job.stderr
    assert "Traceback" not in job.stderr and elapsed < 120, elapsed

    if "test" not in skip:
        tests = _run(["make", "test"], clone, env, timeout=3600)
        assert tests.returncode == 0, tests.stdout[-4000:]
        assert " passed" in tests.stdout.strip().splitlines()[-1] and " failed" not in tests.stdout
    if "demo" not in skip:
        demo = _run(["make", "demo"], clone, env, timeout=3600)
        assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
        summary = json.loads((clone / "demo_output" / "summary.json").read_text())
        assert set(summary["accuracy"]) == {"teacher", "sft", "evl", "sft_continued"}
        assert all(0 <= value <= 100 for value in summary["accuracy"].values())
        assert (clone / "demo_output" / "report.md").is_file()
