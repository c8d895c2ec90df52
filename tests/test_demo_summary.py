"""The demo's summary file and the README paragraph quoted from it (one duration, scores of the same run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evl_kd_trainer.demo.summary import README_BLOCK, compare_runs_losses, readme_block, update_readme, write_summary

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "demo_summary.json"
NAMES = {"teacher": "T", "sft": "S", "evl": "E", "sft_continued": "C"}


def test_summary_reads_the_evaluation_and_readme_block_quotes_it(tmp_path):
    (tmp_path / "eval").mkdir()
    models = {name: {"splits": {"synthetic": {"accuracy": acc}}} for name, acc in zip("TSEC", (86.0, 51.0, 83.25, 87))}
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"models": models}))
    path = write_summary(tmp_path, {"a": 1.26, "b": 2.0}, 330.0, 0.81, NAMES, n_questions=100, chance=25.0)
    summary = json.loads(path.read_text())
    assert summary["accuracy"] == {"teacher": 86.0, "sft": 51.0, "evl": 83.25, "sft_continued": 87}
    assert summary["stages_s"] == {"a": 1.3, "b": 2.0} and summary["total_s"] == 330.0
    block = readme_block(summary)
    assert "**5.5 min**" in block and "0.81 GiB" in block
    assert "teacher 86, SFT student 51, EVL-ECG student 83, SFT control with the same extra steps 87" in block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-results:start (x) -->\nold text\n<!-- demo-results:end -->\nrest\n")
    assert update_readme(readme, path)
    text = readme.read_text()
    assert "old text" not in text and block in text and text.startswith("intro\n") and text.endswith("rest\n")
    (tmp_path / "plain.md").write_text("no block")
    assert not update_readme(tmp_path / "plain.md", path)


def test_readme_quotes_the_committed_demo_run():
    """README's demo duration and scores are the committed run's, word for word (`--update_readme` writes both)."""
    match = README_BLOCK.search((ROOT / "README.md").read_text())
    assert match is not None
    assert match.group(2) == readme_block(json.loads(COMMITTED.read_text()))


def _run(path: Path, losses: list[float], final: float) -> Path:
    history = [{"step": i + 1, "loss": v, "ce_loss": v / 2, "ot_loss": v / 4} for i, v in enumerate(losses)]
    history.append({"step": len(losses), "ce_loss": final, "train_loss": final})  # the run's summary entry
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return path


def test_cached_run_check_reads_every_logged_loss(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text(json.dumps({"size": {"bytes_per_sample": 1234}}))
    live = _run(tmp_path / "live", [1.0, 0.5], 0.4)
    same = _run(tmp_path / "same", [1.0, 0.5], 0.4)
    off = _run(tmp_path / "off", [1.0, 0.5 + 1e-3], 0.4)
    assert compare_runs_losses(live, same, cache) == {"max_abs_loss_diff": 0.0, "steps": 2, "bytes_per_sample": 1234}
    assert compare_runs_losses(live, off, cache)["max_abs_loss_diff"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="logged steps"):
        compare_runs_losses(live, _run(tmp_path / "short", [1.0], 0.4), cache)
