"""The evaluation run behind ``evl-kd evaluate``: read and check every split, then per model generate, parse,
score and write the outputs.

All records are read and every gold answer is parsed before the first model loads, so a bad file, a missing
column or image, or a gold answer the scorer cannot read fails in seconds, not after hours of generation.
Models are loaded one at a time and released before the next.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import re
from typing import TYPE_CHECKING, Any

from evl_kd_trainer.eval.metrics import REFERENCE_SCORING_ORDER, REFERENCE_SEED, parse_samples, scores_from_parsed
from evl_kd_trainer.eval.records import SplitRecords, read_split
from evl_kd_trainer.eval.report import markdown_table, plot_per_class, write_json, write_predictions

if TYPE_CHECKING:
    from evl_kd_trainer.eval.arguments import EvalArguments
    from evl_kd_trainer.eval.generate import BatchGenerator, Generation

logger = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PER_CLASS_PNG = "per_class.png"
PREDICTIONS_DIR = "predictions"


def load_split(
    split: str,
    path: str,
    *,
    image_root: str | None = None,
    max_samples: int | None = None,
    missing_images: str = "error",
    reference_compat: bool = False,
) -> SplitRecords:
    """Read one split and check that each gold answer parses (raises naming the file / sample)."""
    loaded = read_split(path, image_root=image_root, max_samples=max_samples, missing_images=missing_images)
    references = [record.reference for record in loaded.records]
    prompts = [record.prompt for record in loaded.records]
    try:
        parse_samples(split, [""] * len(references), references, prompts, reference_compat=reference_compat)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error
    return loaded


def load_splits(args: EvalArguments) -> dict[str, SplitRecords]:
    """Read every split of ``args`` with :func:`load_split`."""
    return {
        split: load_split(
            split,
            path,
            image_root=args.image_root,
            max_samples=args.max_samples,
            missing_images=args.missing_images,
            reference_compat=args.reference_compat,
        )
        for split, path in zip(args.splits, args.data_files)
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _load(args: EvalArguments, index: int) -> BatchGenerator:
    import torch

    from evl_kd_trainer.eval.generate import BatchGenerator, resolve_chat_template
    from evl_kd_trainer.models.loading import load_model, load_processor
    from evl_kd_trainer.models.pixels import apply_pixel_budget

    path = args.model_name_or_path[index]
    kwargs: dict[str, Any] = {"dtype": args.dtype}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    model = load_model(path, **kwargs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    processor = apply_pixel_budget(load_processor(path), args, only_where_supported=True)
    template = resolve_chat_template(model.config.model_type, processor, args.chat_template_for(index))
    return BatchGenerator(
        model,
        processor,
        template,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        unreadable_images=args.missing_images,
    )


def score_split(
    split: str,
    loaded: SplitRecords,
    generations: list[Generation | None],
    skipped: list[tuple[str, str]],
    *,
    reference_compat: bool,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores of one split for one model, and its per-sample rows for the predictions JSONL."""
    pairs = [(record, generation) for record, generation in zip(loaded.records, generations) if generation is not None]
    all_skipped = loaded.skipped + skipped
    rows = []
    if pairs:
        parsed = parse_samples(
            split,
            [generation.text for _, generation in pairs],
            [record.reference for record, _ in pairs],
            [record.prompt for record, _ in pairs],
            reference_compat=reference_compat,
            rng=rng,
        )
        scores = scores_from_parsed(split, parsed, reference_compat=reference_compat)
        for (record, generation), sample in zip(pairs, parsed):
            rows.append(
                {
                    "id": record.id,
                    "prompt": record.prompt,
                    "reference": record.reference,
                    "prediction": generation.text,
                    "num_tokens": generation.num_tokens,
                    "hit_max_new_tokens": generation.hit_max_new_tokens,
                    **sample.to_dict(),
                }
            )
    else:
        scores = {"split": split, "n": 0, "unparsed": 0, "error": "no record left to score (all skipped)"}
    scores["hit_max_new_tokens"] = sum(generation.hit_max_new_tokens for _, generation in pairs)
    scores["skipped"] = len(all_skipped)
    scores["skipped_records"] = [{"id": record_id, "reason": reason} for record_id, reason in all_skipped]
    return scores, rows


def run_evaluation(args: EvalArguments) -> dict[str, Any]:
    """Evaluate every model on every split and write the outputs to ``args.output_dir``; returns the results."""
    _check_pixel_budget(args)
    splits = load_splits(args)
    os.makedirs(args.output_dir, exist_ok=True)
    names = args.display_names()
    generated: dict[str, dict[str, tuple[list[Generation | None], list[tuple[str, str]]]]] = {}
    for index, name in enumerate(names):
        generator = _load(args, index)
        generated[name] = {
            split: generator(loaded.records, desc=f"{name} | {split}", progress=args.progress)
            for split, loaded in splits.items()
        }
        del generator
        gc.collect()
        _empty_cache()

    # Scored after all generation, split by split in the reference scorer's order and, within a split, model by
    # model: PULSE's script scores every result file of a split in one process from one `random.seed(42)`
    # stream, so under `reference_compat` this draws its guesses when the models are listed in the order its
    # directory walk finds their files (always, for a single model).
    rng = random.Random(REFERENCE_SEED)
    order = sorted(splits, key=lambda s: REFERENCE_SCORING_ORDER.index(s) if s in REFERENCE_SCORING_ORDER else 99)
    scored: dict[tuple[str, str], dict[str, Any]] = {}
    for split in order:
        for name in names:
            generations, skipped = generated[name][split]
            scores, rows = score_split(
                split, splits[split], generations, skipped, reference_compat=args.reference_compat, rng=rng
            )
            folder = os.path.join(args.output_dir, PREDICTIONS_DIR, _slug(name))
            os.makedirs(folder, exist_ok=True)
            predictions_file = os.path.join(folder, f"{split}.jsonl")
            write_predictions(predictions_file, rows)
            scores["predictions_file"] = os.path.relpath(predictions_file, args.output_dir)
            scored[name, split] = scores
            logger.info("%s on %s: %s", name, split, {key: scores.get(key) for key in ("n", "unparsed")})
    results: dict[str, Any] = {
        name: {
            "model_name_or_path": args.model_name_or_path[index],
            "splits": {split: scored[name, split] for split in splits},
        }
        for index, name in enumerate(names)
    }
    payload = {
        "reference_compat": args.reference_compat,
        "max_new_tokens": args.max_new_tokens,
        "data_files": dict(zip(args.splits, args.data_files)),
        "models": results,
    }
    write_json(os.path.join(args.output_dir, RESULTS_JSON), payload)
    table = markdown_table(results, reference_compat=args.reference_compat)
    with open(os.path.join(args.output_dir, RESULTS_MD), "w", encoding="utf-8") as handle:
        handle.write(table)
    plot_per_class(results, os.path.join(args.output_dir, PER_CLASS_PNG))
    print(table)
    return payload


def _check_pixel_budget(args: EvalArguments) -> None:
    """``min_pixels`` / ``max_pixels`` must apply to at least one model (processors only: cheap to load)."""
    if args.min_pixels is None and args.max_pixels is None:
        return
    from evl_kd_trainer.models.loading import load_processor
    from evl_kd_trainer.models.pixels import has_pixel_budget

    if not any(has_pixel_budget(load_processor(path)) for path in args.model_name_or_path):
        raise ValueError(
            "`min_pixels` / `max_pixels` apply to Qwen-VL models, and none of the models evaluated is one: "
            f"{', '.join(args.model_name_or_path)}."
        )


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
