"""Compressed caches keep their documented error bounds (measured against a lossless fp32 cache of the same
batches), top-k log-probs match the live logits, visual centroids keep their tokens' mass, and the size report adds up."""

from __future__ import annotations

import json

import pytest
import torch

from evl_kd_trainer.cache import TeacherCacheReader, build_teacher_cache, run_fingerprint
from evl_kd_trainer.cache.centroids import weighted_centroids
from evl_kd_trainer.cache.manifest import ECGINSTRUCT_SAMPLES, MANIFEST, SHARD_DIR
from evl_kd_trainer.methods import logits_at, next_token_positions
from evl_kd_trainer.models import get_adapter
from tests.teacher_cache_helpers import live_teacher, make_args, tiny_world

IDS = [f"rec-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=8)


@pytest.fixture(scope="module")
def caches(world, tmp_path_factory):
    """One cache per compression of the same 8 records (EVL: every position, visual tokens)."""
    root = tmp_path_factory.mktemp("compression")
    args = make_args(root)
    built = {}
    for compression in ("fp32", "bf16", "fp8", "pca:8", "pca:96"):
        directory = root / compression.replace(":", "-")
        build_teacher_cache(
            directory, world["dataset"], world["teacher"], world["teacher_processor"], args,
            student_processor=world["student_processor"], compression=compression, batch_size=4, pca_fit_samples=8,
            progress=False,
        )  # fmt: skip
        built[compression] = directory
    return built


def rows(batch, stream):
    if stream == "hidden":
        return batch.hidden[batch.hidden_mask].float()
    return batch.visual[batch.visual_mask].float()


@pytest.mark.parametrize("stream", ["hidden", "visual"])
def test_fp8_error_is_within_the_e4m3_bound(caches, stream):
    exact = rows(TeacherCacheReader(caches["fp32"]).batch(IDS), stream)
    reader = TeacherCacheReader(caches["fp8"], dtype=torch.float32)
    approx = rows(reader.batch(IDS), stream)
    scale = exact.abs().amax(-1, keepdim=True) / 448.0
    bound = torch.maximum(exact.abs() * 2**-4, scale * 2**-10)
    error = (approx - exact).abs()
    assert bool((error <= bound * (1 + 1e-6)).all()), float((error / bound).max())
    measured = float((error.pow(2).sum() / exact.pow(2).sum()).sqrt())
    assert 0 < measured < 2**-4
    # the manifest reports the same number, measured while the cache was written
    assert reader.errors[stream]["relative_rms_error"] == pytest.approx(measured, rel=1e-3)
    assert reader.errors[stream]["rows"] == exact.shape[0]


@pytest.mark.parametrize("stream", ["hidden", "visual"])
def test_pca_error_is_the_optimal_rank_r_truncation(caches, stream):
    exact = rows(TeacherCacheReader(caches["fp32"]).batch(IDS), stream).double()
    reader = TeacherCacheReader(caches["pca:8"], dtype=torch.float32)
    approx = rows(reader.batch(IDS), stream).double()
    centered = exact - exact.mean(0)
    singular = torch.linalg.svdvals(centered)  # an independent rank-8 optimum of the same rows
    optimal = float(singular[8:].pow(2).sum() / singular.pow(2).sum())
    measured = float((approx - exact).pow(2).sum() / centered.pow(2).sum())
    assert 0.001 < optimal < 0.9  # rank 8 of 96 drops a real part of the variance here
    assert measured == pytest.approx(optimal, rel=0.01, abs=1e-4)  # the fit saw all 8 records: it is optimal
    assert reader.errors[stream]["retained_variance"] == pytest.approx(1 - measured, abs=1e-3)
    full = rows(TeacherCacheReader(caches["pca:96"], dtype=torch.float32).batch(IDS), stream).double()
    assert float(((full - exact).pow(2).sum() / exact.pow(2).sum()).sqrt()) <= 2**-8  # bf16 coefficients only


def test_pca_coefficients_feed_a_projected_linear_map(caches):
    reader = TeacherCacheReader(caches["pca:8"], dtype=torch.float32, pca_output="both")
    batch = reader.batch(IDS[:3])
    assert batch.hidden_coeffs.shape == (*batch.hidden_mask.shape, 8) and batch.visual_coeffs.shape[-1] == 8
    linear = torch.nn.Linear(96, 16)
    weight, bias = reader.pca["hidden"].project_linear(linear.weight.detach(), linear.bias.detach())
    mask = batch.hidden_mask
    direct = linear(batch.hidden[mask])
    projected = batch.hidden_coeffs[mask] @ weight.T + bias
    torch.testing.assert_close(projected, direct.detach(), rtol=1e-4, atol=1e-4)
    only = TeacherCacheReader(caches["pca:8"], pca_output="coefficients").batch(IDS[:3])
    assert only.hidden is None and torch.equal(only.hidden_coeffs, batch.hidden_coeffs.to(only.hidden_coeffs.dtype))


def test_sizes_add_up_and_shrink_with_compression(caches, world, capsys):
    per_sample = {}
    for compression, directory in caches.items():
        manifest = json.loads((directory / MANIFEST).read_text())
        size, records = manifest["size"], manifest["records"]
        files = sum(p.stat().st_size for p in (directory / SHARD_DIR).iterdir())
        assert size["shard_bytes"] == files and size["records"] == len(records) == 8
        assert size["bytes_per_sample"] == pytest.approx(files / 8)
        assert size["extrapolated_samples"] == ECGINSTRUCT_SAMPLES
        assert size["extrapolated_bytes"] == pytest.approx(
            size["bytes_per_sample"] * ECGINSTRUCT_SAMPLES + size["shared_bytes"]
        )
        per_sample[compression] = size["bytes_per_sample"]
        # The payload, from the per-record lengths: 4 + 1 + 1 + 1 bytes per token, then the rows' bytes.
        width = {"fp32": 96 * 4, "bf16": 96 * 2, "fp8": 96 + 4, "pca:8": 8 * 2, "pca:96": 96 * 2}[compression]
        payload = sum(
            7 * tokens + width * (hidden + visual) + 64 for _, _, tokens, hidden, visual, _ in records.values()
        )
        assert payload <= files <= payload + 2000 * len(manifest["shards"])  # + the safetensors headers
    assert per_sample["pca:8"] < per_sample["fp8"] < per_sample["bf16"] < per_sample["fp32"]
    assert per_sample["bf16"] / per_sample["fp8"] > 1.6


def test_the_size_report_is_printed(world, tmp_path, capsys):
    build_teacher_cache(
        tmp_path / "c", world["dataset"].select(range(2)), world["teacher"], world["teacher_processor"],
        make_args(tmp_path), progress=False,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "per sample" in out and f"{ECGINSTRUCT_SAMPLES:,} samples" in out and "2 records" in out


def test_top_k_log_probs_are_the_live_logits_top_k(world, tmp_path):
    args = make_args(tmp_path, kd_method="uld")
    directory = tmp_path / "cache"
    build_teacher_cache(
        directory, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], logits_topk=5, batch_size=4, progress=False,
    )  # fmt: skip
    reader = TeacherCacheReader(directory)
    assert reader.lm_head is None and not reader.features.stores_hidden  # the compressed alternative: no states
    inputs, store, ids = live_teacher(world, args, [4, 5, 6, 7])  # one of the build's batches
    teacher = world["teacher"]
    head = get_adapter(teacher).get_lm_head(teacher)
    logits, mask = logits_at(head, store.hidden, next_token_positions(inputs["response_mask"]))
    values, indices = torch.log_softmax(logits.float(), -1).topk(5, dim=-1)
    cached = reader.batch(ids)
    assert torch.equal(cached.topk_mask, mask)
    assert torch.equal(cached.topk_indices[mask], indices[mask])
    assert torch.equal(cached.topk_logprobs[mask], values[mask])
    dense, dense_mask = cached.logits(vocab_size=reader.dims.vocab_size)
    assert dense.shape == logits.shape and torch.equal(dense_mask, mask)
    probs = dense.softmax(-1)[mask]
    torch.testing.assert_close(probs.topk(5, dim=-1).values, values[mask].exp(), rtol=1e-5, atol=1e-6)
    # a ULD run accepts it in place of the hidden states and head; DSKD (which applies the head itself) cannot use it
    TeacherCacheReader.open(directory, expected_fingerprint=run_fingerprint(args, teacher, world["teacher_processor"],
                                                                            world["student_processor"]))  # fmt: skip
    with pytest.raises(ValueError, match="reads more than its logits"):
        build_teacher_cache(directory, world["dataset"], teacher, world["teacher_processor"],
                            make_args(tmp_path, kd_method="dskd"), logits_topk=5, progress=False)  # fmt: skip


def test_visual_centroids_keep_the_tokens_mass(world, tmp_path):
    args = make_args(tmp_path)
    directory = tmp_path / "cache"
    build_teacher_cache(
        directory, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], compression="fp32", visual_centroids=6, batch_size=4,
        progress=False,
    )  # fmt: skip
    _, store, ids = live_teacher(world, args, [0, 1, 2, 3])
    live, live_mask = store.padded_visual()
    cached = TeacherCacheReader(directory).batch(ids)
    assert cached.visual.shape[1] <= 6 < int(live_mask.sum(1).min())
    weights = cached.visual_weights
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    assert bool((weights[~cached.visual_mask] == 0).all()) and bool((weights[cached.visual_mask] > 0).all())
    for b in range(4):  # k-means centroids weighted by their shares average to the tokens' mean
        tokens = live[b][live_mask[b]]
        centre = (weights[b][:, None] * cached.visual[b]).sum(0)
        torch.testing.assert_close(centre, tokens.mean(0), rtol=1e-4, atol=1e-5)
    few = torch.randn(4, 8)
    centroids, uniform = weighted_centroids(few, 6)  # no more tokens than centroids: kept as they are
    assert torch.equal(centroids, few) and torch.equal(uniform, torch.full((4,), 0.25))
