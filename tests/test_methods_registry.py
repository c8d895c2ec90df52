"""The method registry: one folder per method, found by scanning, its fields joined into the config once."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from trl import SFTConfig

from evl_kd_trainer.methods import (
    DistillationMethod,
    builtin_method_names,
    get_method,
    method_config_classes,
    method_names,
)
from evl_kd_trainer.scripts.recipe import RecipeArgumentParser
from evl_kd_trainer.testing.method_args import method_args
from evl_kd_trainer.trainer import EVLDistillConfig

METHODS_DIR = Path(__file__).resolve().parent.parent / "evl_kd_trainer" / "methods"
# What each built-in method logs besides ce_loss: the independent check of each method's own declaration.
BUILTIN_TERMS = {
    "evl": {"mhca_loss", "rel_loss", "ot_loss"},
    "sft": set(),
    "uld": {"uld_loss"},
    "multilevel_ot": {"mlot_token_loss", "mlot_seq_loss"},
    "dskd": {"dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss"},
    "emkd": {"vsd_loss", "vlad_loss"},
}


def test_builtin_methods_are_the_folders_of_the_package():
    folders = {p.name for p in METHODS_DIR.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert set(builtin_method_names()) == folders
    assert set(BUILTIN_TERMS) <= folders and builtin_method_names()[0] == "evl"
    assert set(builtin_method_names()) <= set(method_names())
    for name in builtin_method_names():
        assert (METHODS_DIR / name / "config.py").is_file() and (METHODS_DIR / name / "method.py").is_file()
        cls = get_method(name)
        assert issubclass(cls, DistillationMethod) and cls.title and cls.label
        assert cls.config_class in method_config_classes()


@pytest.mark.parametrize("name", sorted(BUILTIN_TERMS))
def test_declared_terms_of_the_builtin_methods(name):
    assert set(get_method(name).terms) == BUILTIN_TERMS[name]


def test_every_method_field_joins_the_config_once_with_docs_help_and_default():
    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    config_fields = {f.name: f for f in dataclasses.fields(EVLDistillConfig)}
    seen: set[str] = set()
    for config_class in method_config_classes():
        for field in dataclasses.fields(config_class):
            assert field.name not in seen and field.name not in sft_fields, field.name  # one owner per field
            seen.add(field.name)
            joined = config_fields[field.name]
            assert joined.default == field.default and joined.metadata["help"] == field.metadata["help"]
            assert re.search(rf"^\s+{field.name} \(`", EVLDistillConfig.__doc__, re.M), field.name
    # the distillation fields of the core config are documented too
    for name in set(config_fields) - sft_fields:
        assert re.search(rf"^\s+{name} \(`", EVLDistillConfig.__doc__, re.M), name
        assert config_fields[name].metadata.get("help"), name


def test_method_fields_parse_flat_on_the_command_line():
    parser = RecipeArgumentParser([EVLDistillConfig])
    args = parser.parse_args_into_dataclasses(
        ["--output_dir", "/tmp/x", "--use_cpu", "true", "--bf16", "false", "--lambda_ot", "0.3", "--uld_lambda", "2"]
    )[0]
    assert args.lambda_ot == 0.3 and args.uld_lambda == 2.0 and args.mlot_topk == 50


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lambda_ot", -1.0, "lambda_ot"),
        ("uld_lambda", -0.5, "uld_lambda"),
        ("mlot_topk", 0, "mlot_topk"),
        ("dskd_alpha", 1.5, "dskd_alpha"),
        ("emkd_cross_vocab", "nope", "emkd_cross_vocab"),
        ("mhca_reduction", "max", "mhca_reduction"),
    ],
)
def test_each_method_checks_its_own_ranges(field, value, message):
    with pytest.raises(ValueError, match=message):
        EVLDistillConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, **{field: value})


def test_logit_methods_refuse_intermediate_layers_before_any_model_loads():
    for name in ("uld", "dskd", "emkd"):
        with pytest.raises(ValueError, match="student_hidden_layer"):
            EVLDistillConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, kd_method=name, student_hidden_layer=0)


def test_requests_say_what_each_method_reads():
    args = method_args()
    assert get_method("evl").request(args).visual and not get_method("evl").request(method_args(lambda_ot=0.0)).visual
    assert get_method("sft").request(args).teacher is False
    dskd = get_method("dskd").request(args)
    assert dskd.student_logits and dskd.teacher_logits and dskd.lm_heads and dskd.embeddings
    emkd = get_method("emkd").request(args)
    assert emkd.lm_heads and not (emkd.teacher_logits or emkd.embeddings or emkd.visual)


def test_model_card_settings_come_from_the_method_config():
    args = method_args(uld_lambda=2.5)
    assert get_method("uld").card_settings(args) == {"uld_lambda": 2.5}
    evl = get_method("evl").card_settings(args)
    assert evl["alpha"] == 0.3 and evl["lambda_ot"] == 0.1 and "uld_lambda" not in evl


def test_no_method_repeats_a_default():
    """Methods read their fields from the config (`args.x`), never `getattr(args, "x", default)`: each default is
    written once, in the method's config dataclass."""
    offenders = []
    for path in METHODS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "getattr"
                and len(node.args) == 3
                and getattr(node.args[0], "id", None) == "args"
            ):
                offenders.append(f"{path.relative_to(METHODS_DIR)}:{node.lineno}")
    assert offenders == []
