"""Every method's terms from a lossless (fp32) cache equal its terms from the live teacher, on one batch of the
training collator (both views): the cache stores exactly what each method reads, and the trainer's feature
assembly needs nothing but the cached tensors and modules in place of the teacher's."""

from __future__ import annotations

import pytest
import torch

from evl_kd_trainer.cache import TeacherCacheReader, build_teacher_cache
from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.methods import get_method, load_builtin_methods
from evl_kd_trainer.models import capture_features, get_adapter, teacher_features
from evl_kd_trainer.trainer.features import TeacherSide, build_features
from tests.teacher_cache_helpers import make_args, tiny_world

METHODS = {
    "evl": {"lambda_rel": 0.5},
    "evl_response_scope": {"kd_method": "evl", "kd_token_scope": "response", "lambda_ot": 0.0},
    "uld": {},
    "multilevel_ot": {},
    "dskd": {},
    "emkd": {},
}


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=6)


def assemble(method, student_store, s_inputs, teacher_side, t_inputs, s_adapter, student):
    """The trainer's own feature assembly, with the teacher side live or from the cache."""
    masks = {
        "student_attention_mask": s_inputs["attention_mask"].bool(),
        "student_response_mask": s_inputs["response_mask"].bool(),
        "student_input_ids": s_inputs["input_ids"],
        "teacher_attention_mask": t_inputs["attention_mask"].bool(),
        "teacher_response_mask": t_inputs["response_mask"].bool(),
        "teacher_input_ids": t_inputs["input_ids"],
    }
    return build_features(method, method.request(method.args), student_store, student, s_adapter, teacher_side, masks)


@pytest.mark.parametrize("case", list(METHODS))
def test_terms_from_the_cache_equal_the_live_teachers(world, tmp_path, case):
    overrides = dict(METHODS[case])
    name = overrides.pop("kd_method", case)
    args = make_args(tmp_path, kd_method=name, **overrides)
    teacher, student = world["teacher"], world["student"]
    build_teacher_cache(
        tmp_path / "cache", world["dataset"], teacher, world["teacher_processor"], args,
        student_processor=world["student_processor"], compression="fp32", batch_size=3, progress=False,
    )  # fmt: skip
    reader = TeacherCacheReader(tmp_path / "cache")
    stored = reader.features
    assert (reader.lm_head is not None) == stored.lm_head and (reader.embed_tokens is not None) == stored.embed_tokens

    # One training batch, both views. It holds the records of one of the build's batches, so the teacher's kernels
    # see the same padded shapes and the equality is exact (another composition moves the states by ~1e-7, see
    # test_teacher_cache.py, which EM-KD's Hungarian matching can turn into a different match).
    collator = DualViewCollator(
        world["student_processor"], teacher_processor=world["teacher_processor"], return_record_ids=True,
        teacher_max_length=reader.fingerprint["teacher_max_length"],
    )  # fmt: skip
    batch = collator([world["dataset"][i] for i in (3, 4, 5)])
    t_inputs = {k[len("teacher_") :]: v for k, v in batch.items() if k.startswith("teacher_")}
    s_inputs = {k: v for k, v in batch.items() if not k.startswith("teacher_") and k != "record_ids"}
    load_builtin_methods()
    s_adapter, t_adapter = get_adapter(student), get_adapter(teacher)
    torch.manual_seed(0)
    method = get_method(name)(args, s_adapter.dims, t_adapter.dims)
    request = method.request(args)
    with capture_features(student, s_adapter, visual=request.visual) as student_store:
        student(**{k: v for k, v in s_inputs.items() if k != "response_mask"})

    live = teacher_features(teacher, t_adapter, t_inputs, hidden_layer=args.teacher_hidden_layer, visual=True)
    cached = reader.batch(batch["record_ids"])
    for key in ("input_ids", "attention_mask", "response_mask"):  # the cache renders the training view
        assert torch.equal(cached.teacher_inputs()[key], t_inputs[key]), key
    live_side = TeacherSide(
        hidden=live.hidden, adapter=t_adapter, lm_head=t_adapter.get_lm_head(teacher),
        embed_tokens=teacher.get_input_embeddings(),
    )  # fmt: skip
    cached_side = TeacherSide(
        hidden=cached.hidden, adapter=reader.adapter, lm_head=reader.lm_head, embed_tokens=reader.embed_tokens
    )
    if request.visual:
        live_side.visual, live_side.visual_mask = live.padded_visual()
        cached_side.visual, cached_side.visual_mask = cached.padded_visual()
    live_terms = method(assemble(method, student_store, s_inputs, live_side, t_inputs, s_adapter, student))
    cached_terms = method(
        assemble(method, student_store, s_inputs, cached_side, cached.teacher_inputs(), s_adapter, student)
    )
    assert set(cached_terms) == set(live_terms) and len(live_terms) >= 2
    assert float(live_terms["kd_loss"].detach()) != 0.0  # the comparison is not between two zeros
    for term, value in live_terms.items():
        assert torch.isfinite(value), term
        assert torch.equal(cached_terms[term], value), (term, float(cached_terms[term]), float(value))
    # and the cache holds no more than the method reads: the stored positions are a strict subset where they can be
    total = int(t_inputs["attention_mask"].sum())
    if stored.hidden_positions in ("next_token", "response", "image_or_response"):
        assert int(cached.hidden_mask.sum()) < total
