"""The cases of the training-step benchmark: how each trainer is built, timed and its memory read.

Cases (``CASES``):

- ``sft_trl``: TRL's own ``SFTTrainer`` on the student (the reference step);
- ``teacher_forward``: the teacher's forward alone, exactly as ``EVLDistillTrainer`` runs it (no grad, no LM
  head, hidden states and visual tokens captured), on the teacher view of the same batches;
- every registered ``kd_method`` (``evl``, ``sft``, ``uld``, ...): ``EVLDistillTrainer`` with that method
  at its paper defaults;
- ``<method>_cached`` for every method that reads a teacher (``step_cache.CACHED_CASES``, with ``--cached``): the
  same trainer reading the teacher's features from a cache built before the run (``teacher_cache_dir``): no teacher
  is built or run in that process;
- ``gold``: TRL's GOLD trainer (``trl.experimental.gold``), the peer that does the same job: cross-tokenizer,
  cross-architecture VLM distillation with ULD. It runs off-policy (``lmbda=0``: no student generation, as our
  methods) with positional ULD (``use_extended_uld=False``: its byte-offset alignment needs ByteLevel tokenizers
  and Vicuna's is SentencePiece) and ``CE + 1.5 * ULD`` (our ULD baseline's weights), on the same models and
  samples (as prompt/completion rows, the format it reads).

Timing: a callback stamps the start and end of every optimizer step; a step spans the data loading and
collation of its batch (image processing of both views), the forward and backward passes, clipping, the
optimizer and the previous step's logging, as a training run pays them. Both wall time and the process's CPU
time are recorded: on a shared CPU machine CPU time is the steadier of the two. The first ``warmup`` steps
(lazy initialisation, optimizer state allocation) are not timed. The breakdown times named parts of the step
by wrapping methods of the trainer instance (CPU time on CPU; wall time with CUDA synchronised around them).
With a :class:`StepGate` the steps of several worker processes are interleaved, one step at a time.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps (absolute, weights, optimizer state
and activations included, like the paper's Table 7) and the reserved peak. On CPU the process's peak resident
set over the timed steps (``VmHWM`` reset through ``/proc/self/clear_refs`` after the warm-up), absolute,
interpreter and libraries included; ``before_mib`` is the resident set once the models are built.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from step_cache import CACHED_CASES, cache_dir_of, live_method
from step_configs import StepConfig, build_student, build_teacher, make_dataset, to_prompt_completion
from transformers import TrainerCallback

from evl_kd_trainer.methods import builtin_method_names, get_method

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

REFERENCE_CASES = ("sft_trl", "teacher_forward")
# Every registered method (EVL-ECG first), then the peer; the cached twins last (``--cached``).
METHODS = (*builtin_method_names(), "gold")
CASES = REFERENCE_CASES + METHODS + CACHED_CASES
LABELS = {
    "sft_trl": "SFT (TRL SFTTrainer)",
    "teacher_forward": "teacher forward alone",
    **{name: get_method(name).label for name in builtin_method_names()},
    "gold": "TRL GOLD (ULD, off-policy)",
    **{case: f"{get_method(live_method(case)).label}, cached teacher" for case in CACHED_CASES},
}


@dataclass(frozen=True)
class RunSettings:
    """What every case of one benchmark run shares."""

    config: StepConfig
    steps: int
    warmup: int
    device: torch.device
    cache_root: str | None = None  # where the cached cases' caches were built (``step_cache.cache_dir_of``)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def samples_per_step(self) -> int:
        return self.config.batch_size * self.config.grad_accum


# ----------------------------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory over a window: CUDA allocator peaks, or the process's resident-set high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_reset_ok = False

    def current_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return _proc_status_mib("VmRSS")

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            self.cpu_reset_ok = True
        except OSError:
            self.cpu_reset_ok = False

    def peaks(self) -> dict[str, float | None]:
        if self.device.type == "cuda":
            return {
                "peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(self.device) / 2**20,
            }
        return {"peak_mib": _proc_status_mib("VmHWM") if self.cpu_reset_ok else None}


class Buckets:
    """Per-name time totals of wrapped methods; ``wrap`` replaces an instance attribute by a timed call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        # CPU: process CPU time (what other processes on a shared machine disturb least); CUDA: wall time.
        self.clock = time.perf_counter if device.type == "cuda" else time.process_time
        self.totals: dict[str, float] = defaultdict(float)
        self.last_end: float | None = None

    def clear(self) -> None:
        self.totals.clear()

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        original = getattr(obj, attr, None)
        if original is None:
            return
        buckets = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(buckets.device)
            start = buckets.clock()
            try:
                return original(*args, **kwargs)
            finally:
                _sync(buckets.device)
                buckets.last_end = buckets.clock()
                buckets.totals[name] += buckets.last_end - start

        setattr(obj, attr, timed)


class StepGate:
    """Lets an orchestrating process interleave the steps of several worker processes (``--interleave``).

    Disabled, it does nothing. Enabled, each call prints a sync line and blocks until a ``go`` line arrives
    on stdin: only one case computes at a time, and every case's steps fall in the same time windows, so a
    neighbour's load on a shared machine slows all cases alike instead of a few of them.
    """

    SYNC_LINE = "BENCH_STEP_SYNC"

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def __call__(self) -> None:
        if not self.enabled:
            return
        print(self.SYNC_LINE, flush=True)
        command = sys.stdin.readline().strip()
        if command != "go":
            raise SystemExit(f"bench_step worker: expected 'go' on stdin, got {command!r}")


class StepClock(TrainerCallback):
    """Start and end stamps (wall and process CPU time) of every optimizer step.

    A step ends at ``on_step_end`` and the next one starts right after it (after the gate, and after the
    memory/breakdown reset that follows the warm-up), so waiting and resetting are never timed. Between two
    stamps lie the data loading and collation of the step, forward, backward, clipping, optimizer and logging.
    """

    def __init__(self, warmup: int, total: int, buckets: Buckets, probe: MemoryProbe, gate: StepGate) -> None:
        self.warmup, self.total = warmup, total
        self.buckets, self.probe, self.gate = buckets, probe, gate
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.losses: list[float] = []

    def start(self) -> None:
        """Call right before ``trainer.train()``."""
        self.gate()
        self._stamp(self.starts)

    def _stamp(self, stamps: list[tuple[float, float]]) -> None:
        _sync(self.buckets.device)
        stamps.append((time.perf_counter(), time.process_time()))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Clipping + optimizer: from the end of the step's last backward to the end of `optimizer.step()`.
        _sync(self.buckets.device)
        if self.buckets.last_end is not None:
            self.buckets.totals["clip + optimizer"] += self.buckets.clock() - self.buckets.last_end

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stamp(self.ends)
        if len(self.ends) >= self.total:
            return
        self.gate()
        if len(self.ends) == self.warmup:
            self.probe.reset()
            self.buckets.clear()
        self._stamp(self.starts)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def step_times(self, cpu: bool = False) -> list[float]:
        """Durations of the timed (post-warm-up) steps."""
        k = 1 if cpu else 0
        pairs = list(zip(self.starts, self.ends))[self.warmup :]
        return [end[k] - start[k] for start, end in pairs]


def summarise(times: list[float], cpu_times: list[float]) -> dict[str, Any]:
    """Wall-clock and process-CPU-time statistics of the timed steps (seconds)."""
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "cpu_times_s": cpu_times,
        "cpu_median_s": statistics.median(cpu_times),
        "cpu_mean_s": statistics.fmean(cpu_times),
    }


# -------------------------------------------------------------------------------------------------- trainers
def _common_args(settings: RunSettings, output_dir: str) -> dict[str, Any]:
    config = settings.config
    return {
        "output_dir": output_dir,
        "max_steps": settings.total_steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "bf16": config.mixed_bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "use_cpu": settings.device.type == "cpu",
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-5,
        "seed": 0,
        "disable_tqdm": True,
        "max_length": config.max_length,
        "dataloader_num_workers": 0,
        # The same batches in the same order for every case (GOLD's own sampler still shuffles).
        "train_sampling_strategy": "sequential",
    }


def _sft_trainer(settings: RunSettings, workdir: str, dataset_n: int, callbacks: list) -> Any:
    from trl import SFTConfig, SFTTrainer

    from evl_kd_trainer.data.collator import DualViewCollator

    config = settings.config
    student, processor = build_student(config, settings.device)
    dataset = make_dataset(config, dataset_n, processor.tokenizer)
    return SFTTrainer(
        student,
        args=SFTConfig(**_common_args(settings, workdir)),
        train_dataset=dataset,
        processing_class=processor,
        data_collator=DualViewCollator(processor, max_length=config.max_length),
        callbacks=callbacks,
    )


def _evl_trainer(
    method: str, settings: RunSettings, workdir: str, dataset_n: int, callbacks: list, cache_dir: str | None = None
) -> Any:
    """``EVLDistillTrainer`` with ``method``; with ``cache_dir`` it reads the teacher's features from that cache and
    no teacher is built (its weights would count in the memory)."""
    from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer

    config = settings.config
    student, processor = build_student(config, settings.device)
    args = EVLDistillConfig(
        **_common_args(settings, workdir),
        kd_method=method,
        teacher_max_length=config.teacher_max_length,
        teacher_cache_dir=cache_dir,
    )
    teacher, teacher_processor = (None, None)
    if get_method(method).request(args).teacher and cache_dir is None:  # no teacher read, none built
        teacher, teacher_processor = build_teacher(config, settings.device)
    # A cache looks records up by id: the cached cases' samples carry one (the same samples otherwise).
    dataset = make_dataset(config, dataset_n, processor.tokenizer, with_ids=cache_dir is not None)
    return EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        teacher_processing_class=teacher_processor,
        callbacks=callbacks,
    )


def _gold_trainer(settings: RunSettings, workdir: str, dataset_n: int, callbacks: list) -> Any:
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    config = settings.config
    student, processor = build_student(config, settings.device)
    teacher, teacher_processor = build_teacher(config, settings.device)
    # GOLD reloads the teacher's processor from `teacher.config._name_or_path`: give it a saved copy.
    processor_dir = os.path.join(workdir, "teacher_processor")
    teacher_processor.save_pretrained(processor_dir)
    teacher.config._name_or_path = processor_dir
    dataset = to_prompt_completion(make_dataset(config, dataset_n, processor.tokenizer))
    args = GOLDConfig(
        **_common_args(settings, workdir),
        lmbda=0.0,
        use_uld_loss=True,
        use_extended_uld=False,
        uld_crossentropy_weight=1.0,
        uld_distillation_weight=1.5,
    )
    return GOLDTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=callbacks,
    )


def _instrument(case: str, trainer: Any, buckets: Buckets) -> None:
    """Wrap the parts of a step whose time the breakdown reports (nested parts are subtracted later)."""
    buckets.wrap(trainer, "compute_loss", "loss forward")
    buckets.wrap(trainer.accelerator, "backward", "backward")
    if case == "gold":
        buckets.wrap(trainer, "_build_teacher_vlm_inputs", "teacher inputs")
        buckets.wrap(trainer.teacher_model, "forward", "teacher forward")
        if trainer.uld_loss_fn is not None:
            buckets.wrap(trainer.uld_loss_fn, "_compute_distillation_loss", "KD terms forward")
    elif live_method(case) is not None:
        # The shard reads happen in the collator (data loading, part of "other"); the rest in the loss forward.
        buckets.wrap(trainer.data_collator.reader, "batch", "cache read (in other)")
        buckets.wrap(trainer, "_teacher_forward", "teacher from cache")
        buckets.wrap(trainer, "_build_features", "features (+ logits)")
        buckets.wrap(trainer.kd_method, "forward", "KD terms forward")
    elif case != "sft_trl":
        buckets.wrap(trainer, "_teacher_forward", "teacher forward")
        buckets.wrap(trainer, "_build_features", "features (+ logits)")
        if trainer.kd_method.is_active():
            buckets.wrap(trainer.kd_method, "forward", "KD terms forward")


def breakdown(totals: dict[str, float], steps: int) -> dict[str, float]:
    """Per-step means; ``student forward`` is the loss forward minus the nested teacher/feature/KD parts."""
    per_step = {name: value / steps for name, value in totals.items()}
    nested = ("teacher inputs", "teacher forward", "teacher from cache", "features (+ logits)", "KD terms forward")
    if "loss forward" in per_step:
        per_step["student forward (+ CE)"] = per_step["loss forward"] - sum(per_step.get(n, 0.0) for n in nested)
    return per_step


def run_trainer_case(case: str, settings: RunSettings, gate: StepGate) -> dict[str, Any]:
    """Train ``warmup + steps`` optimizer steps with one trainer and return its timings and memory."""
    buckets = Buckets(settings.device)
    probe = MemoryProbe(settings.device)
    clock = StepClock(settings.warmup, settings.total_steps, buckets, probe, gate)
    dataset_n = settings.total_steps * settings.samples_per_step
    with tempfile.TemporaryDirectory(prefix=f"bench_step_{case}_") as workdir:
        if case == "sft_trl":
            trainer = _sft_trainer(settings, workdir, dataset_n, [clock])
        elif case == "gold":
            trainer = _gold_trainer(settings, workdir, dataset_n, [clock])
        elif live_method(case) is not None:
            if settings.cache_root is None:
                raise ValueError(f"{case}: no cache root given (bench_step.py builds the caches with --cached).")
            cache_dir = str(cache_dir_of(settings.cache_root, settings.config, live_method(case)))
            trainer = _evl_trainer(live_method(case), settings, workdir, dataset_n, [clock], cache_dir=cache_dir)
        else:
            trainer = _evl_trainer(case, settings, workdir, dataset_n, [clock])
        _instrument(case, trainer, buckets)
        gc.collect()
        before = probe.current_mib()
        clock.start()
        trainer.train()
    times = clock.step_times()
    if len(times) != settings.steps:
        raise RuntimeError(f"{case}: expected {settings.steps} timed steps, got {len(times)}.")
    if not clock.losses or not all(math.isfinite(v) for v in clock.losses):
        raise FloatingPointError(f"{case}: non-finite or missing training loss: {clock.losses}.")
    result = {**summarise(times, clock.step_times(cpu=True)), **probe.peaks(), "before_mib": before}
    result["final_loss"] = clock.losses[-1]
    result["breakdown_s"] = breakdown(dict(buckets.totals), settings.steps)
    del trainer
    gc.collect()
    return result


def run_teacher_forward_case(settings: RunSettings, gate: StepGate) -> dict[str, Any]:
    """The teacher's forward alone on the teacher view of the same batches, as EVLDistillTrainer runs it."""
    from evl_kd_trainer.data.collator import DualViewCollator
    from evl_kd_trainer.models import get_adapter
    from evl_kd_trainer.models.capture import teacher_features

    config, device = settings.config, settings.device
    student, processor = build_student(config, "meta")  # only its processor is needed
    del student
    teacher, teacher_processor = build_teacher(config, device)
    teacher.eval()
    adapter = get_adapter(teacher)
    collator = DualViewCollator(processor, teacher_processor, config.max_length, config.teacher_max_length)
    dataset = make_dataset(config, settings.total_steps * settings.samples_per_step, processor.tokenizer)
    probe = MemoryProbe(device)
    gc.collect()
    before = probe.current_mib()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_bf16)
    lengths: dict[str, list[int]] = defaultdict(list)
    times: list[float] = []
    cpu_times: list[float] = []
    for step in range(settings.total_steps):
        gate()
        if step == settings.warmup:
            probe.reset()
        elapsed = cpu_elapsed = 0.0
        for micro in range(config.grad_accum):
            start = (step * config.grad_accum + micro) * config.batch_size
            batch = collator([dataset[i] for i in range(start, start + config.batch_size)])
            _record_lengths(lengths, batch, teacher.config.image_token_index)
            inputs = {k[len("teacher_") :]: v.to(device) for k, v in batch.items() if k.startswith("teacher_")}
            _sync(device)
            tick, cpu_tick = time.perf_counter(), time.process_time()
            with autocast:
                teacher_features(teacher, adapter, inputs, hidden_layer=-1, visual=True)
            _sync(device)
            elapsed += time.perf_counter() - tick
            cpu_elapsed += time.process_time() - cpu_tick
        if step >= settings.warmup:
            times.append(elapsed)
            cpu_times.append(cpu_elapsed)
    result = {**summarise(times, cpu_times), **probe.peaks(), "before_mib": before}
    result["tokens_per_sample"] = {k: statistics.fmean(v) for k, v in lengths.items()}
    return result


def _record_lengths(lengths: dict[str, list[int]], batch: dict[str, torch.Tensor], teacher_image_id: int) -> None:
    lengths["student"] += batch["attention_mask"].sum(1).tolist()
    lengths["teacher"] += batch["teacher_attention_mask"].sum(1).tolist()
    lengths["teacher visual"] += (batch["teacher_input_ids"] == teacher_image_id).sum(1).tolist()
    if "image_grid_thw" in batch:  # Qwen-VL: prod(t, h, w) / merge^2 visual tokens per image
        lengths["student visual"] += (batch["image_grid_thw"].prod(-1) // 4).tolist()


def run_case(case: str, settings: RunSettings, gate: StepGate | None = None) -> dict[str, Any]:
    """One case by name (see ``CASES``); ``gate`` is called before every step (see :class:`StepGate`)."""
    gate = gate or StepGate()
    if case not in CASES:
        raise ValueError(f"Unknown case {case!r}; choose from {CASES}.")
    torch.manual_seed(0)
    runner: Callable[[], dict[str, Any]]
    if case == "teacher_forward":
        runner = lambda: run_teacher_forward_case(settings, gate)  # noqa: E731
    else:
        runner = lambda: run_trainer_case(case, settings, gate)  # noqa: E731
    return {"case": case, "label": LABELS[case], **runner()}
