"""The demo report's pictures: per-term loss curves, a Sinkhorn transport plan (paper Figure 2) and the
singular-value spectra of teacher and student features (paper Figure 3).

Each figure is computed from what the demo's runs saved (``trainer_state.json``, the checkpoints and the
aligner file), so the pictures show the trained models, not a re-run.
"""

from __future__ import annotations

import enum
import importlib
import json
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the demo runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from evl_kd_trainer.data.collator import DualViewCollator  # noqa: E402
from evl_kd_trainer.losses import sinkhorn_plan  # noqa: E402
from evl_kd_trainer.methods import get_method, load_builtin_methods  # noqa: E402
from evl_kd_trainer.models.base import get_adapter  # noqa: E402
from evl_kd_trainer.models.capture import capture_features, teacher_features  # noqa: E402
from evl_kd_trainer.models.loading import load_model, load_processor  # noqa: E402

TERMS = ("ce_loss", "loss", "mhca_loss", "rel_loss", "ot_loss")
KD_TERMS = ("mhca_loss", "rel_loss", "ot_loss")
PANEL_TITLES = {"ce_loss": "cross-entropy (every run)", "loss": "weighted total objective (distilled runs)"}
# Packages whose configuration classes (dataclasses and enums only) a saved `training_args.bin` may name.
_ARGS_PACKAGES = ("transformers.", "trl.", "accelerate.", "evl_kd_trainer.", "torch.")
# `TrainingArguments` also pickles its cached accelerate state (not a dataclass); it is rebuilt without running code.
_ARGS_EXTRA_CLASSES = ("accelerate.state.PartialState",)


def training_logs(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step log entries of a run (``trainer_state.json`` written by the example scripts)."""
    state = Path(run_dir) / "trainer_state.json"
    if not state.is_file():
        raise FileNotFoundError(f"{state} not found: the run did not finish or did not save its state.")
    return [entry for entry in json.loads(state.read_text())["log_history"] if "loss" in entry and "step" in entry]


def loss_panels(logs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """term -> run -> (step, value) points of the loss figure; the weighted total only for distilled runs."""
    distilled = {name for name, entries in logs.items() if any(t in e for e in entries for t in KD_TERMS)}
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for term in TERMS:
        lines = {
            name: [(e["step"], e[term]) for e in entries if term in e]
            for name, entries in logs.items()
            if term != "loss" or name in distilled
        }
        lines = {name: points for name, points in lines.items() if points}
        if lines:
            panels[term] = lines
    return panels


def plot_loss_curves(runs: dict[str, str | Path], out: str | Path) -> Path:
    """One panel per logged term; one line per run that logged it.

    Like is plotted beside like: cross-entropy for every run; the weighted total only for runs with distillation
    terms (an SFT run's ``loss`` is its cross-entropy, a different quantity from EVL's weighted sum).
    """
    panels = loss_panels({name: training_logs(path) for name, path in runs.items()})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (term, lines) in zip(axes[0], panels.items()):
        for name, points in lines.items():
            ax.plot(*zip(*points), label=name, marker=".")
        ax.set_title(PANEL_TITLES.get(term, term), fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def _method_from_run(run_dir: Path, student: Any, teacher: Any) -> torch.nn.Module:
    """Rebuild the run's KD method (aligner + projector) and load its trained weights."""
    load_builtin_methods()
    args = load_training_args(run_dir / "training_args.bin")
    method = get_method(args.kd_method)(args, get_adapter(student).dims, get_adapter(teacher).dims)
    aligner_file = run_dir / "_evl_aligner.safetensors"
    if not aligner_file.is_file():
        raise FileNotFoundError(f"{aligner_file} not found: the distilled run saved no aligner.")
    method.load_state_dict(load_file(str(aligner_file)))
    return method.eval()


def load_training_args(path: str | Path) -> Any:
    """The config a run saved in ``training_args.bin``, loaded with ``torch.load(weights_only=True)``.

    The pickle may only name configuration classes (dataclasses and enums) of the training packages, which are
    allowed for this load alone; anything else (a function such as ``os.system``, an unknown class) is refused.
    """
    allowed: list[Any] = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module_name, _, attribute = name.rpartition(".")
        target = None
        if name.startswith(_ARGS_PACKAGES):
            try:
                target = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError):
                target = None
        config_class = isinstance(target, type) and (is_dataclass(target) or issubclass(target, enum.Enum))
        if not (config_class or (isinstance(target, type) and name in _ARGS_EXTRA_CLASSES)):
            raise ValueError(f"{path}: refusing to load it: it pickles {name}, which is no training configuration.")
        allowed.append(target)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


def sample_features(student_dir: str | Path, teacher_dir: str | Path, examples: list[dict[str, Any]]) -> dict:
    """Visual tokens and last-layer hidden states of both models on ``examples`` (TRL messages + images)."""
    student, teacher = load_model(student_dir).eval(), load_model(teacher_dir).eval()
    student_processor, teacher_processor = load_processor(student_dir), load_processor(teacher_dir)
    batch = DualViewCollator(student_processor, teacher_processor=teacher_processor)(examples)
    student_adapter, teacher_adapter = get_adapter(student), get_adapter(teacher)
    with torch.no_grad(), capture_features(student, student_adapter) as store:
        student_adapter.base_model(student)(**student_adapter.filter_inputs(batch), use_cache=False)
    teacher_inputs = {k.removeprefix("teacher_"): v for k, v in batch.items() if k.startswith("teacher_")}
    teacher_store = teacher_features(teacher, teacher_adapter, teacher_inputs)
    return {
        "student": student,
        "teacher": teacher,
        "student_visual": store.visual,
        "teacher_visual": teacher_store.visual,
        "student_hidden": store.hidden[batch["attention_mask"].bool()],
        "teacher_hidden": teacher_store.hidden[teacher_inputs["attention_mask"].bool()],
    }


def plot_transport_plan(run_dir: str | Path, features: dict, out: str | Path, epsilon: float = 0.1) -> Path:
    """Figure 2: the Sinkhorn plan between the projected teacher and the student visual tokens of one sample."""
    method = _method_from_run(Path(run_dir), features["student"], features["teacher"])
    projector = getattr(method, "visual_projector", None)
    if projector is None:
        raise ValueError(f"{run_dir}: the run has no visual projector (lambda_ot = 0), so there is no plan to show.")
    with torch.no_grad():
        teacher_tokens = projector(features["teacher_visual"][0].float())
    plan = sinkhorn_plan(teacher_tokens, features["student_visual"][0].float(), epsilon=epsilon)
    fig, ax = plt.subplots(figsize=(4.8, 5))
    image = ax.imshow(plan.numpy() * plan.shape[0], aspect="auto", cmap="magma")
    ax.set_xlabel(f"student visual token (Qwen3-VL, {plan.shape[1]})")
    ax.set_ylabel(f"teacher visual token (LLaVA-NeXT flat, {plan.shape[0]})")
    ax.set_title("Sinkhorn transport plan (row-normalised)")
    per_crop = teacher_tokens_per_crop(features["teacher"])
    if per_crop and plan.shape[0] % per_crop == 0 and plan.shape[0] > per_crop:
        # Flat packing: the base view, then one block per anyres crop.
        for boundary in range(per_crop, plan.shape[0], per_crop):
            ax.axhline(boundary - 0.5, color="cyan", linewidth=0.8)
        for index in range(plan.shape[0] // per_crop):
            label = "base" if index == 0 else f"crop {index}"
            ax.text(plan.shape[1] - 0.6, index * per_crop + 0.5, label, color="cyan", fontsize=7, ha="right", va="top")
    bar = fig.colorbar(image, ax=ax, fraction=0.05)
    bar.set_label("plan mass x teacher tokens (each row sums to 1)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def teacher_tokens_per_crop(teacher: Any) -> int | None:
    """Visual tokens one crop gives a CLIP-towered LLaVA teacher ((image_size / patch_size)^2), else ``None``."""
    vision = getattr(getattr(teacher, "config", None), "vision_config", None)
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    if not isinstance(size, int) or not isinstance(patch, int) or patch <= 0:
        return None
    return (size // patch) ** 2


def singular_values(features: torch.Tensor) -> torch.Tensor:
    """Singular values of a centred (tokens, width) feature matrix, normalised by the largest."""
    centred = features.double() - features.double().mean(0, keepdim=True)
    values = torch.linalg.svdvals(centred)
    values = values / values[0]
    # Centring n tokens leaves rank n - 1 at most: drop the numerically zero tail, it is no feature.
    return values[values > 1e-10]


def plot_spectra(spectra: dict[str, torch.Tensor], out: str | Path) -> Path:
    """Figure 3: singular-value decay of each model's hidden-state features."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in spectra.items():
        ax.semilogy(range(1, len(values) + 1), values.numpy(), label=name)
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest")
    ax.set_title("Feature spectrum (SVD of last-layer hidden states)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
