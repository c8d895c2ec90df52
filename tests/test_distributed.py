"""Two CPU processes (torchrun, gloo) with DDP and DeepSpeed ZeRO-2 / ZeRO-3 against the one-process run.

Same global batch of 4: one process with 4 samples, or two processes with 2 each. The teacher is
prepared the way TRL prepares teachers (ZeRO-3 kept). Each run writes its logged losses and a checksum
of every aligner parameter per rank (tests/distributed_worker.py).

These tests run in their own target, `make test-distributed` (CI runs it after `make test`). Their subprocess
time limits are scaled to the machine: the one-process run is timed first and every multi-process run may take
`EVL_DIST_TIMEOUT_FACTOR` (default 20) times as long, never less than `EVL_DIST_TIMEOUT_MIN_S` (default 600 s).
A fixed limit failed on a busy machine (a DeepSpeed run that takes 56 s alone took over 300 s beside other work,
its first use also compiling DeepSpeed's shm op), while a hung rendezvous must still fail in bounded time.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
FSDP2_WORKER = Path(__file__).with_name("fsdp2_worker.py")
ROOT = WORKER.parent.parent
TERMS = ("loss", "ce_loss", "mhca_loss", "rel_loss", "ot_loss")
# The one-process reference gets the generous fixed limit; the others a multiple of the time it took.
SINGLE_TIMEOUT_S = float(os.environ.get("EVL_DIST_SINGLE_TIMEOUT_S", "1800"))
TIMEOUT_FACTOR = float(os.environ.get("EVL_DIST_TIMEOUT_FACTOR", "20"))
TIMEOUT_MIN_S = float(os.environ.get("EVL_DIST_TIMEOUT_MIN_S", "600"))
_measured: dict[str, float] = {}

pytestmark = pytest.mark.distributed


def free_port() -> int:
    # torchrun's static rendezvous hangs with `--master_port 0`; ask the OS for a free port instead.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_limit() -> float:
    """Seconds a multi-process run may take: scaled to the measured one-process run on this machine, now."""
    single = _measured.get("single")
    return SINGLE_TIMEOUT_S if single is None else max(TIMEOUT_MIN_S, TIMEOUT_FACTOR * single)


def torchrun(nproc: int, script: Path, *args: str) -> list[str]:
    port = str(free_port())
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", port,
            str(script), *args]  # fmt: skip


def launch(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    limit = time_limit()
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as err:
        pytest.fail(
            f"{what} did not finish in {limit:.0f} s (the one-process run took "
            f"{_measured.get('single', float('nan')):.1f} s); output:\n{(err.stdout or b'')[-3000:]!r}"
        )
    if what == "ddp with 1 process(es)":
        _measured.setdefault("single", time.monotonic() - start)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def run(out: Path, mode: str, nproc: int, batch: int, cache: Path | None = None) -> list[dict]:
    out.mkdir(parents=True)
    extra = [str(cache)] if cache is not None else []
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), mode, str(batch), *extra]
    else:
        cmd = torchrun(nproc, WORKER, str(out), mode, str(batch), *extra)
    launch(cmd, f"{mode} with {nproc} process(es)")
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    assert [r["world"] for r in results] == [nproc] * nproc
    # the run really used the backend asked for (accelerate falls back to DDP silently, e.g. for FSDP on CPU)
    assert {r["backend"] for r in results} == {"deepspeed" if mode.startswith("zero") else "ddp"}
    return results


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("single") / "run", "ddp", 1, 4)[0]


def check_against_single(ranks: list[dict], single: dict) -> None:
    # gradients of the student AND the aligners are synchronised: every rank ends with the same aligners
    assert ranks[0]["aligner"] == ranks[1]["aligner"]
    logs, ref = ranks[0]["logs"], single["logs"]
    assert len(logs) == len(ref) == 3
    # step 1, before any update: the same 4 samples. OT is a mean over samples (2 per rank): exact.
    assert logs[0]["ot_loss"] == pytest.approx(ref[0]["ot_loss"], rel=1e-5)
    # CE and MHCA/relational average per-rank token means, as SFTTrainer does for VLMs (it passes no global
    # token count to the loss), instead of one mean over all tokens: close, not equal
    for key in TERMS:
        assert logs[0][key] == pytest.approx(ref[0][key], rel=2e-2), key
        for step in (1, 2):
            # later steps follow slightly different updates (that averaging), so small terms drift a little more
            assert logs[step][key] == pytest.approx(ref[step][key], rel=1e-1, abs=1e-2), (step, key)
    for name, value in ranks[0]["aligner"].items():
        assert value == pytest.approx(single["aligner"][name], rel=5e-2, abs=5e-2), name


def test_ddp_two_processes_match_one(single, ddp_two):
    check_against_single(ddp_two, single)


@pytest.fixture(scope="module")
def ddp_two(tmp_path_factory) -> list[dict]:
    return run(tmp_path_factory.mktemp("ddp2") / "run", "ddp", 2, 2)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_processes_match_ddp_and_one(tmp_path, single, ddp_two, stage):
    """Same ranks and batches as DDP: DeepSpeed must follow the same trajectory, aligners included."""
    pytest.importorskip("deepspeed")
    ranks = run(tmp_path / stage, stage, 2, 2)
    check_against_single(ranks, single)
    for z, d in zip(ranks[0]["logs"], ddp_two[0]["logs"]):
        for key in TERMS:
            assert z[key] == pytest.approx(d[key], rel=1e-4), key
    for name, value in ranks[0]["aligner"].items():
        assert value == pytest.approx(ddp_two[0]["aligner"][name], rel=1e-4, abs=1e-5), name


@pytest.mark.parametrize("mode", ["ddp", "zero3"])
def test_training_from_a_teacher_cache_follows_the_live_teacher_run(tmp_path, ddp_two, mode):
    """Each rank reads its own samples' teacher features from the cache: the same trajectory as with the live
    teacher (DDP: the same ranks and batches), and no rank runs a teacher."""
    if mode == "zero3":
        pytest.importorskip("deepspeed")
    from evl_kd_trainer.cache import build_teacher_cache
    from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
    from evl_kd_trainer.trainer import EVLDistillConfig

    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    args = EVLDistillConfig(output_dir=str(tmp_path / "build"), use_cpu=True, bf16=False, report_to="none")
    cache = tmp_path / "cache"
    build_teacher_cache(
        cache, make_tiny_vlm_dataset(n=12, seed=0), teacher, teacher_processor, args,
        student_processor=build_tiny_qwen3_vl(seed=0)[1], compression="fp32", batch_size=2, progress=False,
    )  # fmt: skip
    ranks = run(tmp_path / mode, mode, 2, 2, cache=cache)
    assert ranks[0]["aligner"] == ranks[1]["aligner"]
    for cached, live in zip(ranks[0]["logs"], ddp_two[0]["logs"], strict=True):
        for key in TERMS:
            assert cached[key] == pytest.approx(live[key], rel=1e-4), key
    for name, value in ranks[0]["aligner"].items():
        assert value == pytest.approx(ddp_two[0]["aligner"][name], rel=1e-4, abs=1e-5), name


def test_ddp_with_label_smoothing_trains_the_aligners_on_every_rank(tmp_path, ddp_two):
    """The grad forward has no `loss` field then: the aligners must still be known to DDP as used."""
    ranks = run(tmp_path / "ls", "ddp_label_smoothing", 2, 2)
    assert ranks[0]["aligner"] == ranks[1]["aligner"]
    assert ranks[0]["aligner"] != ddp_two[0]["aligner"]  # a different objective, trained
    assert len(ranks[0]["logs"]) == 3 and all(math.isfinite(e["ot_loss"]) for e in ranks[0]["logs"])


def test_fsdp2_sharded_student_gives_the_same_loss_and_gradients(tmp_path, single):
    """FSDP2 (`fully_shard` on gloo) around the student with its aligners inside: the trainer's own compute_loss
    gives each rank's unsharded loss, and the sharded aligner gradients are the rank average of the unsharded ones.
    (accelerate runs FSDP only on accelerator devices, so the sharding is applied by hand; see README's limits.)"""
    out = tmp_path / "fsdp2"
    out.mkdir()
    launch(torchrun(2, FSDP2_WORKER, str(out)), "fsdp2 with 2 process(es)")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["loss_unsharded"] != ranks[1]["loss_unsharded"]  # different samples per rank
    for result in ranks:
        assert result["aligners_sharded"]
        assert result["loss_sharded"] == pytest.approx(result["loss_unsharded"], rel=1e-6)
        assert result["grad_gap"] <= 1e-5 * max(1.0, result["grad_scale"]), result
