"""The logit methods read logits only where they need them, with the same numbers as full-sequence logits.

On the tiny models' real hidden states (a collated two-sample batch), each method's terms and gradients are
computed twice: the old way (each LM head over the whole sequence, the method selecting the answer positions)
and the trainer's way (:func:`~evl_kd_trainer.methods.base.logits_at` at the method's ``logit_positions``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from evl_kd_trainer.data import DualViewCollator
from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.losses.emkd import match_vision_tokens, vlad_loss, vsd_loss
from evl_kd_trainer.methods import DistillFeatures, get_method, load_builtin_methods, logits_at, next_token_positions
from evl_kd_trainer.models import capture_features, get_adapter, teacher_features
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image
from evl_kd_trainer.testing.method_args import method_args

load_builtin_methods()
LOGIT_METHODS = ("uld", "multilevel_ot", "dskd")
# Answers of different lengths (padding inside the packed rows) and image sizes (different visual token counts).
RECORDS = [
    {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the rhythm?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [make_ecg_like_image(seed, size)],
    }
    for seed, (answer, size) in enumerate(
        [("sinus rhythm", (64, 48)), ("atrial fibrillation, heart rate 120 bpm, ST depression in V5", (96, 64))]
    )
]


@pytest.fixture(scope="module")
def captured():
    """Both models' last-layer states on one collated batch, and what the methods read beside them."""
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1, flat=True)
    batch = DualViewCollator(student_processor, teacher_processor)(RECORDS)
    student_inputs = {k: v for k, v in batch.items() if not k.startswith("teacher_") and k != "response_mask"}
    teacher_inputs = {k[len("teacher_") :]: v for k, v in batch.items() if k.startswith("teacher_")}
    teacher_inputs = {k: v for k, v in teacher_inputs.items() if k not in ("labels", "response_mask")}
    s_adapter, t_adapter = get_adapter(student), get_adapter(teacher)
    with torch.no_grad(), capture_features(student, s_adapter, hidden_layer=-1, visual=False) as store:
        student(**student_inputs)
    t_store = teacher_features(teacher, t_adapter, teacher_inputs, hidden_layer=-1, visual=False)
    for view in ("", "teacher_"):  # ragged answers and image counts in both views
        assert len(set(batch[f"{view}response_mask"].sum(1).tolist())) == 2
    return SimpleNamespace(
        student=student,
        teacher=teacher,
        batch=batch,
        student_hidden=store.hidden.detach(),
        teacher_hidden=t_store.hidden.detach(),
        student_image_mask=s_adapter.image_token_mask(batch["input_ids"]),
        teacher_image_mask=t_adapter.image_token_mask(batch["teacher_input_ids"]),
        dims=(s_adapter.dims, t_adapter.dims),
    )


def _features(c, student_hidden: torch.Tensor) -> DistillFeatures:
    b = c.batch
    return DistillFeatures(
        student_hidden=student_hidden,
        student_attention_mask=b["attention_mask"].bool(),
        student_response_mask=b["response_mask"],
        teacher_hidden=c.teacher_hidden,
        teacher_attention_mask=b["teacher_attention_mask"].bool(),
        teacher_response_mask=b["teacher_response_mask"],
        student_input_ids=b["input_ids"],
        teacher_input_ids=b["teacher_input_ids"],
        student_image_mask=c.student_image_mask,
        teacher_image_mask=c.teacher_image_mask,
        student_lm_head=c.student.lm_head,
        teacher_lm_head=c.teacher.lm_head,
        student_embed_tokens=c.student.get_input_embeddings(),
        teacher_embed_tokens=c.teacher.get_input_embeddings(),
    )


def _run(c, method, fill_logits, compute=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Terms (``method``'s, or ``compute``'s) and the gradients of ``method.total_loss`` w.r.t. the student's
    states, its LM head and the method's parameters."""
    hidden = c.student_hidden.clone().requires_grad_(True)
    c.student.zero_grad(set_to_none=True)
    method.zero_grad(set_to_none=True)
    features = _features(c, hidden)
    fill_logits(features)
    terms = (compute or method)(features)
    method.total_loss(torch.tensor(1.5), terms).backward()
    grads = {"student_hidden": hidden.grad, "student_lm_head": c.student.lm_head.weight.grad}
    grads.update({name: p.grad for name, p in method.named_parameters()})
    return {k: v.detach() for k, v in terms.items()}, grads


def _full_logits(c):
    def fill(features: DistillFeatures) -> None:
        features.student_logits = c.student.lm_head(features.student_hidden)
        with torch.no_grad():
            features.teacher_logits = c.teacher.lm_head(features.teacher_hidden)

    return fill


def _logits_at_method_positions(c, method, rows: dict[str, list[tuple[int, ...]]]):
    def fill(features: DistillFeatures) -> None:
        for side, model in (("student", c.student), ("teacher", c.teacher)):
            hook = model.lm_head.register_forward_hook(lambda m, i, o, side=side: rows[side].append(tuple(i[0].shape)))
            with torch.set_grad_enabled(side == "student"):
                logits, mask = logits_at(
                    model.lm_head, getattr(features, f"{side}_hidden"), method.logit_positions(features, side)
                )
            hook.remove()
            setattr(features, f"{side}_logits", logits)
            setattr(features, f"{side}_logits_mask", mask)

    return fill


def _assert_same(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    assert old.keys() == new.keys()
    for key in old:
        assert old[key] is not None and new[key] is not None, key
        torch.testing.assert_close(new[key], old[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_logits_at_the_answer_positions_give_the_full_sequence_numbers(captured, name):
    c = captured
    torch.manual_seed(0)
    method = get_method(name)(method_args(), *c.dims)
    old_terms, old_grads = _run(c, method, _full_logits(c))
    rows: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    new_terms, new_grads = _run(c, method, _logits_at_method_positions(c, method, rows))
    _assert_same(old_terms, new_terms)
    _assert_same(old_grads, new_grads)
    assert old_terms["kd_loss"] > 0 and new_grads["student_hidden"].abs().sum() > 0
    # each head ran once, on the positions predicting an answer token (left-packed), not on the sequence
    for side, view in (("student", ""), ("teacher", "teacher_")):
        counts = next_token_positions(c.batch[f"{view}response_mask"]).sum(1)
        assert rows[side] == [(2, int(counts.max()), getattr(c, f"{side}_hidden").shape[-1])], side
        assert int(counts.max()) < c.batch[f"{view}input_ids"].shape[1]


def test_emkd_decodes_only_the_image_positions_with_the_full_sequence_numbers(captured):
    """EM-KD reads no whole-sequence logits (it asks for none): it decodes the states at the image positions, which
    equals selecting those rows of full-sequence logits."""
    c = captured
    method = get_method("emkd")(method_args(), *c.dims)
    request = method.request(method.args)
    assert not (request.student_logits or request.teacher_logits)

    def full_then_select(features: DistillFeatures) -> dict[str, torch.Tensor]:
        s_full = c.student.lm_head(features.student_hidden)
        with torch.no_grad():
            t_full = c.teacher.lm_head(features.teacher_hidden)
        s_text, t_text, text_mask = align_response_spans(
            features.student_hidden,
            features.student_response_mask,
            features.teacher_hidden,
            features.teacher_response_mask,
        )
        vsd, vlad = [], []
        for b in range(2):
            s_rows, t_rows = c.student_image_mask[b], c.teacher_image_mask[b]
            s_logits, t_logits = s_full[b][s_rows], t_full[b][t_rows]
            torch.testing.assert_close(
                s_logits, c.student.lm_head(features.student_hidden[b][s_rows]), atol=1e-6, rtol=1e-5
            )
            # The Hungarian matching is an argmin: rounding differences of 1e-7 between an (L, D) and an (N, D)
            # product can flip a near-tie of these random models' costs, so the matching is taken from the rows
            # the method decodes; every loss value below comes from the full-sequence logits.
            with torch.no_grad():
                t_idx, s_idx = match_vision_tokens(
                    c.student.lm_head(features.student_hidden[b][s_rows]),
                    c.teacher.lm_head(features.teacher_hidden[b][t_rows]),
                    "sorted_probs",
                    method.top_k,
                )
            vsd.append(vsd_loss(s_logits[s_idx], t_logits[t_idx], "sorted_probs", method.top_k, method.temperature))
            s_vis, t_vis = features.student_hidden[b][s_rows], features.teacher_hidden[b][t_rows]
            rows = text_mask[b]
            vlad.append(vlad_loss(s_text[b][rows], s_vis[s_idx], t_text[b][rows], t_vis[t_idx]))
        vsd_value, vlad_value = torch.stack(vsd).mean(), torch.stack(vlad).mean()
        kd = method.vsd_weight * vsd_value + method.vlad_weight * vlad_value
        return {"vsd_loss": vsd_value, "vlad_loss": vlad_value, "kd_loss": kd}

    old_terms, old_grads = _run(c, method, lambda features: None, compute=full_then_select)
    rows: list[tuple[int, ...]] = []
    hook = c.student.lm_head.register_forward_hook(lambda m, i, o: rows.append(tuple(i[0].shape)))
    new_terms, new_grads = _run(c, method, lambda features: None)
    hook.remove()
    _assert_same(old_terms, new_terms)
    _assert_same(old_grads, new_grads)
    assert rows == [(int(mask.sum()), c.student_hidden.shape[-1]) for mask in c.student_image_mask]
