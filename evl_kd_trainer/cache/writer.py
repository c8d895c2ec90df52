"""Build a teacher-feature cache: the teacher runs once over a dataset, in its training view, and what the run's
``kd_method`` reads is written to safetensors shards (see :mod:`evl_kd_trainer.cache.manifest` for the layout).

Several processes (``accelerate launch``) split the records that are not cached yet (record ``i`` of the to-do list
goes to process ``i % num_processes``), and each writes its own shards. A rerun keeps every finished shard and
caches only the rest; a folder holding a cache of another fingerprint is refused, naming the differing field.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evl_kd_trainer.cache.compression import RowCodec, parse_compression
from evl_kd_trainer.cache.extract import run_teacher, split_records, teacher_inputs_of
from evl_kd_trainer.cache.fingerprint import canonical_json, compare_fingerprints
from evl_kd_trainer.cache.ids import content_hash, dataset_record_ids
from evl_kd_trainer.cache.manifest import (
    CACHE_CONFIG,
    MANIFEST,
    PCA_FILE,
    SHARD_DIR,
    TEACHER_DIR,
    TEACHER_MODULES,
    finished_shards,
    read_json,
    remove_leftovers,
    shard_name,
    write_json_atomic,
)
from evl_kd_trainer.cache.modules import save_teacher_modules
from evl_kd_trainer.cache.pca import PCABasis, PCAFitter
from evl_kd_trainer.cache.request import TeacherFeatureSet, features_for
from evl_kd_trainer.cache.settings import run_fingerprint, teacher_init_kwargs
from evl_kd_trainer.cache.shards import ShardBuffer
from evl_kd_trainer.cache.summary import merge_manifest, size_lines
from evl_kd_trainer.cache.view import teacher_view_collator

logger = logging.getLogger(__name__)


@dataclass
class CacheBuildResult:
    """What a build did: ``records`` cached in all (this and earlier runs), ``written`` by this process now,
    ``dropped`` (id -> reason) by the teacher view, the ``size`` report and the per-stream ``errors``."""

    directory: Path
    records: int
    written: int
    dropped: dict[str, str] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fingerprint).encode()).hexdigest()[:32]


def _check_options(features: TeacherFeatureSet, spec: Any, visual_centroids: int) -> None:
    if features.logits_topk and features.hidden_layer != -1:
        raise ValueError("`logits_topk` reads the teacher's logits, which come from the final layer: leave "
                         "`teacher_hidden_layer` at -1.")  # fmt: skip
    if visual_centroids and not features.visual:
        raise ValueError(
            "`visual_centroids` reduces the teacher's visual tokens, but this kd_method does not read them."
        )


def check_resumable(directory: Path, fingerprint: dict[str, Any]) -> None:
    """``ValueError`` when ``directory`` holds a cache of another fingerprint (naming the first differing field)."""
    config_path = directory / CACHE_CONFIG
    if config_path.is_file():
        compare_fingerprints(fingerprint, read_json(config_path)["fingerprint"], str(directory))
    elif any((directory / SHARD_DIR).glob("*.safetensors")):
        raise ValueError(f"{directory}: holds shards but no {CACHE_CONFIG}: not a cache this tool can resume.")


def cache_fingerprint(
    args: Any, teacher: str | nn.Module, teacher_processor: Any, student_processor: Any | None, *, compression: str,
    logits_topk: int, visual_centroids: int, kmeans_iterations: int, pca_fit_samples: int, truncation: str,
    special_token_text: str,
) -> dict[str, Any]:  # fmt: skip
    """The run's fingerprint (:func:`run_fingerprint`) plus the cache's own storage choices."""
    spec = parse_compression(compression)
    fingerprint = run_fingerprint(
        args, teacher, teacher_processor, student_processor, truncation=truncation,
        special_token_text=special_token_text, logits_topk=logits_topk,
    )  # fmt: skip
    fingerprint.update({"compression": str(spec), "visual_centroids": visual_centroids})
    if visual_centroids:
        fingerprint["kmeans_iterations"] = kmeans_iterations
    if spec.kind == "pca":
        fingerprint["pca_fit_samples"] = pca_fit_samples
    return fingerprint


def _prepare_directory(directory: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """(main process) Refuse or clear a cache of another fingerprint; write ``cache_config.json``; clean leftovers."""
    config_path = directory / CACHE_CONFIG
    try:
        check_resumable(directory, fingerprint)
    except ValueError:
        if not overwrite:
            raise
        logger.warning("Replacing the cache in %s (overwrite=True): it was built with other settings.", directory)
        for name in (SHARD_DIR, TEACHER_DIR, MANIFEST, TEACHER_MODULES, PCA_FILE, CACHE_CONFIG):
            path = directory / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (directory / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    removed = remove_leftovers(directory)
    if removed:
        logger.info("Removed %d unfinished file(s) a killed run left in %s.", removed, directory)
    write_json_atomic(config_path, {"fingerprint": fingerprint, "fingerprint_hash": fingerprint_hash(fingerprint)})


def _unique_rows(dataset: Any) -> tuple[list[str], list[int]]:
    """Every row's id and the first row of each id; one id on records of different content is an error."""
    ids = dataset_record_ids(dataset)
    first: dict[str, int] = {}
    unique: list[int] = []
    for row, rid in enumerate(ids):
        if rid not in first:
            first[rid] = row
            unique.append(row)
        elif content_hash(dataset[row]) != content_hash(dataset[first[rid]]):
            raise ValueError(
                f"record id {rid!r} names two different records (rows {first[rid]} and {row}): cached features are "
                "looked up by id, so ids must be unique (drop the `id` field to key records by their content)."
            )
    return ids, unique


def _save_teacher_files(directory: Path, teacher: nn.Module, processor: Any, adapter: Any, features: Any) -> None:
    folder = directory / TEACHER_DIR
    folder.mkdir(exist_ok=True)
    teacher.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    if (features.lm_head or features.embed_tokens) and not (directory / TEACHER_MODULES).is_file():
        save_teacher_modules(
            directory / TEACHER_MODULES,
            adapter.get_lm_head(teacher) if features.lm_head else None,
            teacher.get_input_embeddings() if features.embed_tokens else None,
        )


class _Collate:
    """The teacher-view collator, telling which records of a batch it dropped and why."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict], ids: list[str]) -> tuple[dict | None, dict[str, str]]:
        before = dict(self.collator.stats)
        try:
            batch = self.collator(examples)
        except ValueError:
            if self.collator.stats.get("dropped", 0) - before.get("dropped", 0) < len(examples):
                raise  # not the "every sample was dropped" case: a real error
            batch = None
        kept = set(batch["record_ids"]) if batch is not None else set()
        reasons = [
            key[len("dropped_") :]
            for key, value in self.collator.stats.items()
            if key.startswith("dropped_") and value > before.get(key, 0)
        ]
        reason = reasons[0] if len(reasons) == 1 else "+".join(sorted(reasons)) or "dropped"
        return batch, {rid: reason for rid in ids if rid not in kept}


def _fit_pca(
    rows: Sequence[int], dataset: Any, collate: _Collate, ids: list[str], teacher: nn.Module, adapter: Any,
    features: TeacherFeatureSet, rank: int, batch_size: int, device: torch.device,
) -> dict[str, PCABasis]:  # fmt: skip
    """Fit one basis per stored stream on the teacher features of ``rows``."""
    fitters: dict[str, PCAFitter] = {}
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        batch, _ = collate([dataset[i] for i in chunk], [ids[i] for i in chunk])
        if batch is None:
            continue
        inputs = teacher_inputs_of(batch, device)
        store = run_teacher(teacher, adapter, inputs, features)
        for record in split_records(inputs, store, batch["record_ids"], features, adapter):
            for stream in ("hidden", "visual"):
                value = getattr(record, stream)
                if value is not None and value.shape[0]:
                    fitters.setdefault(stream, PCAFitter(value.shape[-1], rank)).update(value)
    return {stream: fitter.fit() for stream, fitter in fitters.items()}


def _barrier(state: Any) -> None:
    if state.num_processes > 1:
        state.wait_for_everyone()


def build_teacher_cache(
    output: str | Path,
    dataset: Any,
    teacher: str | nn.Module,
    teacher_processor: Any,
    args: Any,
    *,
    student_processor: Any | None = None,
    compression: str = "bf16",
    logits_topk: int = 0,
    visual_centroids: int = 0,
    kmeans_iterations: int = 25,
    pca_fit_samples: int = 64,
    batch_size: int = 4,
    shard_size: int = 64,
    max_shard_bytes: int = 2**31,
    truncation: str = "after_image",
    on_bad_image: str = "skip",
    special_token_text: str = "escape",
    overwrite: bool = False,
    progress: bool = True,
) -> CacheBuildResult:
    """Run ``teacher`` over ``dataset`` (map-style, TRL ``messages``/``images`` records) in the view the run ``args``
    (an ``EVLDistillConfig``) trains on, and cache what ``args.kd_method`` reads in ``output``.

    ``teacher`` is the teacher's folder (loaded with ``args.teacher_model_init_kwargs``) or the model itself;
    ``student_processor`` is the run's student processor (its special-token strings are escaped in the teacher's
    text as in training). The other options are :class:`~evl_kd_trainer.cache.arguments.CacheArguments`'.
    Returns a :class:`CacheBuildResult`; on the main process ``manifest.json`` holds the same numbers.
    """
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from evl_kd_trainer.models import get_adapter, load_model

    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError("cache-teacher needs an indexed dataset (not a streaming one): set `streaming` to false.")
    state = PartialState()
    directory = Path(output)
    spec = parse_compression(compression)
    features = features_for(args.kd_method, args, logits_topk=logits_topk)
    _check_options(features, spec, visual_centroids)
    source = teacher
    if isinstance(teacher, (str, Path)):
        teacher = load_model(str(teacher), **teacher_init_kwargs(args))
    device = args.device
    teacher = teacher.to(device).eval().requires_grad_(False)
    adapter = get_adapter(teacher)

    fingerprint = cache_fingerprint(
        args, source if isinstance(source, nn.Module) else str(source), teacher_processor, student_processor,
        compression=compression, logits_topk=logits_topk, visual_centroids=visual_centroids,
        kmeans_iterations=kmeans_iterations, pca_fit_samples=pca_fit_samples, truncation=truncation,
        special_token_text=special_token_text,
    )  # fmt: skip
    fp_hash = fingerprint_hash(fingerprint)
    if state.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        _prepare_directory(directory, fingerprint, overwrite)
        _save_teacher_files(directory, teacher, teacher_processor, adapter, features)
    _barrier(state)

    ids, unique = _unique_rows(dataset)
    done: set[str] = set()
    next_number = 0
    for info in finished_shards(directory):
        if info.fingerprint != fp_hash:
            raise ValueError(f"{directory / SHARD_DIR / info.name}: a shard of another cache (fingerprint differs).")
        done.update(info.record_ids, info.dropped)
        if info.rank == state.process_index:
            next_number = max(next_number, info.number + 1)
    _barrier(state)  # every process has listed the finished shards before any writes a new one

    collator = teacher_view_collator(
        teacher_processor, teacher.config, args, student_processor, truncation=truncation,
        on_bad_image=on_bad_image, special_token_text=special_token_text,
    )  # fmt: skip
    collate = _Collate(collator)
    bases: dict[str, PCABasis] = {}
    if spec.kind == "pca":
        pca_path = directory / PCA_FILE
        if state.is_main_process and not pca_path.is_file():
            fitted = _fit_pca(unique[:pca_fit_samples], dataset, collate, ids, teacher, adapter, features, spec.rank,
                              batch_size, device)  # fmt: skip
            tensors = {k: v for stream, basis in fitted.items() for k, v in basis.state_dict(stream).items()}
            save_file(tensors, str(pca_path.with_name(PCA_FILE + ".tmp")))
            pca_path.with_name(PCA_FILE + ".tmp").replace(pca_path)
        _barrier(state)
        saved = load_file(str(pca_path))
        bases = {  # on the teacher's device: each record is projected where its features are
            s: PCABasis.from_state_dict(saved, s).to(device) for s in ("hidden", "visual") if f"{s}.basis" in saved
        }
    codecs = {}
    if features.stores_hidden:
        codecs["hidden"] = RowCodec(spec, bases.get("hidden"))
    if features.visual:
        codecs["visual"] = RowCodec(spec, bases.get("visual"))
    lm_head = adapter.get_lm_head(teacher) if features.logits_topk else None

    todo = [row for row in unique if ids[row] not in done]
    mine = todo[state.process_index :: state.num_processes]
    buffer = ShardBuffer(codecs, fp_hash, measure_error=spec.kind in ("fp8", "pca"))
    written = 0
    bar = tqdm(total=len(mine), unit="sample", desc="cache-teacher", disable=not progress or not state.is_main_process)

    def flush() -> None:
        nonlocal next_number
        if not buffer.empty:
            buffer.write(directory / SHARD_DIR / shard_name(state.process_index, next_number))
            next_number += 1

    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        batch, dropped = collate([dataset[i] for i in chunk], [ids[i] for i in chunk])
        for rid, reason in dropped.items():
            buffer.add_dropped(rid, reason)
        if batch is not None:
            inputs = teacher_inputs_of(batch, device)
            store = run_teacher(teacher, adapter, inputs, features)
            records = split_records(
                inputs, store, batch["record_ids"], features, adapter, lm_head, visual_centroids, kmeans_iterations
            )
            for record in records:
                buffer.add(record)
            written += len(records)
        bar.update(len(chunk))
        if len(buffer) >= shard_size or buffer.nbytes >= max_shard_bytes:
            flush()
    flush()
    bar.close()
    _barrier(state)

    manifest = None
    if state.is_main_process:
        extra = {
            "features": features.to_dict(),
            "compression": str(spec),
            "teacher_dtype": fingerprint["teacher_dtype"],
            "pad_token_id": collator.views[0].pad_token_id,
            "pca_retained_variance_fit": {s: b.retained_variance for s, b in bases.items()},  # on the fit sample
        }
        config = read_json(directory / CACHE_CONFIG)
        manifest = merge_manifest(directory, config, extra)
        print(size_lines(manifest))
    _barrier(state)
    if manifest is None:
        manifest = read_json(directory / MANIFEST)
    return CacheBuildResult(
        directory=directory,
        records=len(manifest["records"]),
        written=written,
        dropped=dict(manifest["dropped"]),
        size=dict(manifest["size"]),
        errors=dict(manifest["errors"]),
    )
