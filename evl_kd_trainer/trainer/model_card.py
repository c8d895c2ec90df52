"""Model card of a distilled student: what a reader needs to reproduce or trust it."""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from evl_kd_trainer import __version__
from evl_kd_trainer.methods import get_method
from evl_kd_trainer.models.base import unwrap_model


def _model_id(model: Any) -> str | None:
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return name


def _hub_id(name: str | None) -> str | None:
    """A Hub id (not a local folder) or None: local paths are meaningless to a reader of the card."""
    if not name or os.path.isdir(name) or os.path.isabs(name):
        return None
    return name


def _latest_eval_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    for entry in reversed(log_history):
        metrics = {k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        if metrics:
            return metrics
    return {}


def _dataset_names(trainer: Any, dataset_name: str | None) -> list[str]:
    names = [dataset_name] if dataset_name else []
    info = getattr(getattr(trainer, "train_dataset", None), "info", None)
    for attr in ("dataset_name", "builder_name"):
        value = getattr(info, attr, None)
        if value and value not in names and value not in {"json", "generator", "parquet"}:
            names.append(value)
    return names


def _hub_dataset_ids(names: list[str]) -> list[str]:
    """The names that can be Hub dataset ids: the card's ``datasets:`` metadata links them, local files it cannot."""
    local_suffixes = (".json", ".jsonl", ".parquet", ".csv", ".arrow")
    return [
        name
        for name in names
        if not os.path.exists(name) and not os.path.isabs(name) and not name.lower().endswith(local_suffixes)
    ]


def build_model_card(trainer: Any, model_name: str, dataset_name: str | None = None, tags: Any = None) -> ModelCard:
    """Build the card of ``trainer``'s student: base student, teacher (name and revision), method and its
    weights, datasets, evaluation metrics when present, tags."""
    args = trainer.args
    method = args.kd_method
    student = unwrap_model(trainer.model)
    base_student = _model_id(student)
    teacher = unwrap_model(trainer.teacher_model) if trainer.teacher_model is not None else None
    teacher_name = (_model_id(teacher) if teacher is not None else None) or trainer._teacher_name
    teacher_name = teacher_name or args.teacher_model_name_or_path
    teacher_kwargs = args.teacher_model_init_kwargs if isinstance(args.teacher_model_init_kwargs, dict) else {}
    teacher_revision = teacher_kwargs.get("revision") or getattr(getattr(teacher, "config", None), "_commit_hash", None)

    tag_set = set(trainer._tag_names)
    if isinstance(tags, str):
        tag_set.add(tags)
    elif tags:
        tag_set.update(tags)
    if method != "evl":
        tag_set.add(f"kd-{method}")
    datasets = _dataset_names(trainer, dataset_name)
    metrics = _latest_eval_metrics(trainer.state.log_history)

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=_hub_id(base_student),
        datasets=_hub_dataset_ids(datasets) or None,
        tags=sorted(tag_set),
        model_name=model_name,
    )
    method_cls = get_method(method)
    weights = method_cls.card_settings(args)
    lines = [
        f"# {model_name}",
        "",
        f"This model is a student distilled with [evl_kd_trainer](https://pypi.org/project/evl-kd-trainer/) "
        f"{__version__}.",
        "",
        "## Distillation",
        "",
        f"- **Student (base model):** {base_student or 'a model built in-process'}",
        f"- **Teacher:** {teacher_name or 'none'}" + (f" (revision `{teacher_revision}`)" if teacher_revision else ""),
        f"- **Method:** `{method}`: {method_cls.title or method}",
    ]
    cache = getattr(trainer, "teacher_cache", None)
    if cache is not None:
        lines.append(f"- **Teacher features:** {cache.card_line()}")
    if weights:
        lines.append("- **Method settings:** " + ", ".join(f"`{k}={v}`" for k, v in weights.items()))
    lines += [
        f"- **Training:** learning rate {args.learning_rate}, aligner learning rate {args.aligner_learning_rate}, "
        f"epochs {args.num_train_epochs}, per-device batch {args.per_device_train_batch_size}, "
        f"gradient accumulation {args.gradient_accumulation_steps}",
        f"- **Datasets:** {', '.join(datasets) if datasets else 'not recorded'}",
        "",
        "## Evaluation",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("No evaluation was run during training.")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f'model = AutoModelForImageTextToText.from_pretrained("{getattr(args, "hub_model_id", None) or model_name}")',
        "```",
        "",
        "The cross-attention aligner and projectors used during distillation are not part of this model.",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)
