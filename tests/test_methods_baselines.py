"""The baseline method classes on a synthetic DistillFeatures: terms, gradients and loss mixing."""

import pytest
import torch
from torch import nn

import evl_kd_trainer.methods.dskd  # noqa: F401  (registers the methods)
import evl_kd_trainer.methods.emkd  # noqa: F401
import evl_kd_trainer.methods.multilevel_ot  # noqa: F401
import evl_kd_trainer.methods.sft  # noqa: F401
import evl_kd_trainer.methods.uld  # noqa: F401
from evl_kd_trainer.losses.uld import uld_loss
from evl_kd_trainer.methods.base import DistillFeatures, ModelDims, get_method
from evl_kd_trainer.testing.method_args import method_args

B, LS, LT, DS, DT, VS, VT = 2, 9, 11, 8, 12, 40, 30
STUDENT, TEACHER = ModelDims(DS, DS, VS), ModelDims(DT, DT, VT)


def _positions(batch: int, length: int, rows: list[list[int]]) -> torch.Tensor:
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, positions in enumerate(rows):
        mask[b, positions] = True
    return mask


def _features(seed: int = 0) -> DistillFeatures:
    g = torch.Generator().manual_seed(seed)
    student_head, teacher_head = nn.Linear(DS, VS, bias=False), nn.Linear(DT, VT, bias=False)
    teacher_head.requires_grad_(False)
    s_hidden = torch.randn(B, LS, DS, generator=g).requires_grad_(True)
    t_hidden = torch.randn(B, LT, DT, generator=g)
    s_resp = torch.zeros(B, LS, dtype=torch.bool)
    s_resp[0, 4:8], s_resp[1, 3:9] = True, True
    t_resp = torch.zeros(B, LT, dtype=torch.bool)
    t_resp[0, 5:11], t_resp[1, 6:9] = True, True
    return DistillFeatures(
        student_hidden=s_hidden,
        student_attention_mask=torch.ones(B, LS, dtype=torch.bool),
        student_response_mask=s_resp,
        teacher_hidden=t_hidden,
        teacher_attention_mask=torch.ones(B, LT, dtype=torch.bool),
        teacher_response_mask=t_resp,
        student_input_ids=torch.randint(0, VS, (B, LS), generator=g),
        teacher_input_ids=torch.randint(0, VT, (B, LT), generator=g),
        student_visual=torch.randn(B, 5, DS, generator=g).requires_grad_(True),
        student_visual_mask=torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool),
        teacher_visual=torch.randn(B, 7, DT, generator=g),
        teacher_visual_mask=torch.tensor([[1] * 7, [1] * 6 + [0]], dtype=torch.bool),
        student_image_mask=_positions(B, LS, [[0, 1, 2, 3], [1, 2, 3, 4, 5]]),
        teacher_image_mask=_positions(B, LT, [[0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5]]),
        student_logits=student_head(s_hidden),
        teacher_logits=teacher_head(t_hidden),
        student_lm_head=student_head,
        teacher_lm_head=teacher_head,
        # Tied input embeddings (as Qwen3-VL-2B's), frozen as DSKD reads them.
        student_embed_tokens=nn.Embedding.from_pretrained(student_head.weight.detach()),
        teacher_embed_tokens=nn.Embedding.from_pretrained(teacher_head.weight.detach()),
    )


EXPECTED_TERMS = {
    "uld": {"uld_loss"},
    "multilevel_ot": {"mlot_token_loss", "mlot_seq_loss"},
    "dskd": {"dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss"},
    "emkd": {"vsd_loss", "vlad_loss"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TERMS))
def test_forward_gives_finite_named_terms_and_backward_works(name):
    feats = _features()
    method = get_method(name)(method_args(alpha=0.5), STUDENT, TEACHER)
    terms = method(feats)
    assert set(terms) == EXPECTED_TERMS[name] | {"kd_loss"}
    assert all(key.endswith("_loss") and torch.isfinite(v) and v.dim() == 0 for key, v in terms.items())
    assert terms["kd_loss"].item() > 0
    total = method.total_loss(torch.tensor(2.0), terms)
    total.backward()
    grads = [feats.student_hidden.grad, feats.student_lm_head.weight.grad]
    grads += [p.grad for p in method.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert feats.student_hidden.grad.abs().sum() > 0


def test_uld_method_uses_next_token_positions_and_ce_plus_lambda():
    feats = _features(1)
    method = get_method("uld")(method_args(uld_lambda=1.5), STUDENT, TEACHER)
    terms = method(feats)
    # By hand: positions i whose *next* token is an answer token, i-th with i-th, truncated.
    per_sample = []
    for b in range(B):
        s_pos = [i for i in range(LS - 1) if feats.student_response_mask[b, i + 1]]
        t_pos = [j for j in range(LT - 1) if feats.teacher_response_mask[b, j + 1]]
        n = min(len(s_pos), len(t_pos))
        s = feats.student_logits[b, s_pos[:n]].unsqueeze(0)
        t = feats.teacher_logits[b, t_pos[:n]].unsqueeze(0)
        per_sample.append(uld_loss(s, t).item())
    assert terms["uld_loss"].item() == pytest.approx(sum(per_sample) / B, rel=1e-6)
    ce = torch.tensor(0.7)
    assert method.total_loss(ce, terms).item() == pytest.approx(0.7 + 1.5 * terms["kd_loss"].item(), rel=1e-6)


def test_logit_methods_ignore_non_answer_positions():
    for name in ("uld", "multilevel_ot"):
        feats = _features(2)
        method = get_method(name)(method_args(), STUDENT, TEACHER)
        before = {k: v.item() for k, v in method(feats).items()}
        logits = feats.student_logits.detach().clone()
        logits[0, :3] = 25.0  # positions 0..2 predict prompt tokens 1..3 of sample 0
        logits[:, -1] = -25.0  # the last position predicts nothing
        feats.student_logits = logits
        after = {k: v.item() for k, v in method(feats).items()}
        assert after == pytest.approx(before), name


def test_multilevel_ot_mixing():
    method = get_method("multilevel_ot")(method_args(mlot_lambda=2.0, mlot_seq_weight=0.1), STUDENT, TEACHER)
    terms = method(_features(3))
    kd = terms["mlot_token_loss"] + 0.1 * terms["mlot_seq_loss"]
    assert terms["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    assert method.total_loss(torch.tensor(1.0), terms).item() == pytest.approx(1.0 + 2.0 * kd.item(), rel=1e-6)


def test_dskd_mixing_and_projectors():
    method = get_method("dskd")(method_args(dskd_alpha=0.5), STUDENT, TEACHER)
    assert (method.query_proj.in_features, method.query_proj.out_features) == (2 * DS, 2 * DT)
    assert (method.t2s_proj.in_features, method.t2s_proj.out_features) == (DT, DS)
    assert (method.s2t_proj.in_features, method.s2t_proj.out_features) == (DS, DT)
    assert all(isinstance(m, nn.Linear) for m in method.children())
    terms = method(_features(4))
    kd = sum(terms[k] for k in ("dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss"))
    assert terms["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    assert method.total_loss(torch.tensor(3.0), terms).item() == pytest.approx(1.5 + 0.5 * kd.item(), rel=1e-6)


def test_dskd_requires_input_ids():
    feats = _features()
    feats.student_input_ids = None
    with pytest.raises(ValueError, match="student_input_ids"):
        get_method("dskd")(method_args(), STUDENT, TEACHER)(feats)


def test_emkd_mixing_and_vocab_mode_check():
    method = get_method("emkd")(method_args(emkd_vsd_weight=0.5, emkd_vlad_weight=2.0), STUDENT, TEACHER)
    assert not method.request(method.args).visual  # it decodes the LM's own states at the image positions
    terms = method(_features(5))
    kd = 0.5 * terms["vsd_loss"] + 2.0 * terms["vlad_loss"]
    assert terms["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    assert method.total_loss(torch.tensor(1.0), terms).item() == pytest.approx(1.0 + kd.item(), rel=1e-6)
    with pytest.raises(ValueError, match="equal vocabularies"):
        get_method("emkd")(method_args(emkd_cross_vocab="same_vocab"), STUDENT, TEACHER)


def test_emkd_decodes_the_last_layer_states_at_the_image_positions():
    """VSD and VLAD read ``hidden[image_mask]`` (EM-KD's vision tokens), never the projector outputs."""
    from evl_kd_trainer.losses.alignment import align_response_spans
    from evl_kd_trainer.losses.emkd import match_vision_tokens, vlad_loss, vsd_loss

    feats = _features(7)
    feats.student_visual = feats.teacher_visual = None  # not read
    terms = get_method("emkd")(method_args(), STUDENT, TEACHER)(feats)
    s_text, t_text, text_mask = align_response_spans(
        feats.student_hidden, feats.student_response_mask, feats.teacher_hidden, feats.teacher_response_mask
    )
    vsd, vlad = [], []
    for b in range(B):
        s_vis = feats.student_hidden[b, feats.student_image_mask[b]]
        t_vis = feats.teacher_hidden[b, feats.teacher_image_mask[b]]
        s_logits, t_logits = feats.student_lm_head(s_vis), feats.teacher_lm_head(t_vis)
        t_idx, s_idx = match_vision_tokens(s_logits, t_logits, "sorted_probs", 64)
        vsd.append(vsd_loss(s_logits[s_idx], t_logits[t_idx], "sorted_probs", 64, 1.0))
        rows = text_mask[b]
        vlad.append(vlad_loss(s_text[b][rows], s_vis[s_idx], t_text[b][rows], t_vis[t_idx]))
    assert terms["vsd_loss"].item() == pytest.approx(torch.stack(vsd).mean().item(), rel=1e-6)
    assert terms["vlad_loss"].item() == pytest.approx(torch.stack(vlad).mean().item(), rel=1e-6)
    terms["kd_loss"].backward()
    # gradient reaches the student's states at image positions (VSD, VLAD) and answer positions (VLAD) only
    grad = feats.student_hidden.grad.abs().sum(-1)
    used = feats.student_image_mask | feats.student_response_mask
    assert bool((grad[~used] == 0).all()) and bool((grad[feats.student_image_mask] > 0).all())
    with pytest.raises(ValueError, match="student_hidden_layer"):
        get_method("emkd")(method_args(student_hidden_layer=3), STUDENT, TEACHER)


def test_emkd_samples_without_images_contribute_nothing():
    feats = _features(6)
    feats.student_image_mask = torch.zeros_like(feats.student_image_mask)
    terms = get_method("emkd")(method_args(), STUDENT, TEACHER)(feats)
    assert terms["vsd_loss"].item() == 0.0 and terms["vlad_loss"].item() == 0.0


def test_sft_method_is_plain_cross_entropy():
    # Never active and reading no teacher: the trainer runs SFTTrainer's own loss (test_trainer checks the values).
    cls = get_method("sft")
    args = method_args(kd_method="sft", alpha=0.5)
    assert cls.request(args).teacher is False
    assert cls.active_for(args) is False
    assert list(cls(args, STUDENT, TEACHER).parameters()) == []
