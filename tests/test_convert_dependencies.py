"""``pip install evl_kd_trainer`` can convert a checkpoint that ships only ``tokenizer.model`` (as PULSE-7B does).

The declared dependency set is read from ``setup.py`` (``INSTALL_REQUIRES``) and closed over the installed
distributions' own requirements, which is what a fresh virtual environment would hold. The slow test runs the
conversion in an interpreter that sees only those distributions (no site-packages, a folder of links to them).
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from evl_kd_trainer.convert import convert_llava_checkpoint
from evl_kd_trainer.models import load_processor

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
from tests.test_pulse_tokenization import write_sentencepiece_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def install_requires() -> list[str]:
    """``INSTALL_REQUIRES`` of setup.py, read without running it."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INSTALL_REQUIRES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no INSTALL_REQUIRES list")


def dependency_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions ``pip install`` of ``requirements`` brings in (no extras)."""
    todo = [Requirement(r) for r in requirements]
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in names or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        names.add(name)
        todo += [Requirement(r) for r in metadata.distribution(requirement.name).requires or []]
    return names


def test_the_default_install_declares_what_reading_tokenizer_model_needs(tmp_path):
    declared = {canonicalize_name(Requirement(r).name) for r in install_requires()}
    assert {"sentencepiece", "protobuf"} <= declared
    # and such a checkpoint converts into a folder whose tokenizer needs neither any more
    write_sentencepiece_checkpoint(tmp_path / "src")
    convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "tokenizer.json").is_file()
    tokenizer = load_processor(tmp_path / "dst").tokenizer
    assert tokenizer("sinus rhythm").input_ids[0] == tokenizer.bos_token_id == 1


def _fresh_site(folder: Path, distributions: set[str]) -> Path:
    """A folder holding links to the files of ``distributions`` only: a stand-in for a fresh environment."""
    folder.mkdir()
    for name in sorted(distributions):
        dist = metadata.distribution(name)
        for top in sorted({file.parts[0] for file in dist.files or [] if file.parts[0] not in ("..", "__pycache__")}):
            link = folder / top
            if not link.exists():
                link.symlink_to(dist.locate_file(top))
    return folder


CONVERT = (
    "import sys; from evl_kd_trainer.convert import convert_llava_checkpoint;"
    "convert_llava_checkpoint(sys.argv[1], sys.argv[2]); print('converted')"
)


def _convert_in(site: Path, src: Path, dst: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "PYTHONNOUSERSITE": "1"}
    # -S: no site-packages, so only the linked distributions (and the repository) can be imported.
    command = [sys.executable, "-S", "-c", CONVERT, str(src), str(dst)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=site, timeout=300)


@pytest.mark.slow
def test_a_fresh_environment_of_the_declared_dependencies_converts_it(tmp_path):
    write_sentencepiece_checkpoint(tmp_path / "src")
    closure = dependency_closure(install_requires()) - {"evl-kd-trainer"}
    result = _convert_in(_fresh_site(tmp_path / "site", closure), tmp_path / "src", tmp_path / "dst")
    assert result.returncode == 0 and "converted" in result.stdout, result.stderr[-3000:]
    assert (tmp_path / "dst" / "tokenizer.json").is_file()
    # the stand-in environment does hide what it lacks: without sentencepiece the same conversion fails clearly
    lacking = _fresh_site(tmp_path / "site-without", closure - {"sentencepiece"})
    result = _convert_in(lacking, tmp_path / "src", tmp_path / "dst2")
    assert result.returncode != 0 and "pip install sentencepiece protobuf" in result.stderr, result.stderr[-3000:]
