"""Tiny offline tokenizers for the test models, trained in-process on a built-in ECG-flavoured corpus.

The Hub is unreachable, so no real Qwen or Vicuna tokenizer can be downloaded. These stand-ins keep the
properties the pipeline depends on: Qwen's byte-level BPE with its ChatML / vision special tokens, and
Llama's Metaspace BPE with ``<0x00>``..``<0xFF>`` byte fallback plus ``<image>``. Training takes a few
milliseconds; the trained vocab/merges are cached per process so every builder call is cheap.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaTokenizer, Qwen2Tokenizer

from evl_kd_trainer.data.templates import LLAVA_V1_SYSTEM

QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
LLAMA_IMAGE_TOKEN = "<image>"

# Words the tiny models will see in tests and demos: ECG findings, lead names, option letters, digits,
# and the fixed parts of both chat templates, so that common strings become few tokens.
_LEADS = "I II III aVR aVL aVF V1 V2 V3 V4 V5 V6"
_CORPUS: tuple[str, ...] = (
    LLAVA_V1_SYSTEM,
    "USER: ASSISTANT: user assistant system",
    f"The leads are {_LEADS}. Lead II rhythm strip.",
    "sinus rhythm, sinus bradycardia, sinus tachycardia, atrial fibrillation, atrial flutter.",
    "normal ECG, abnormal ECG, myocardial infarction, ST elevation, ST depression, T wave inversion.",
    "left bundle branch block, right bundle branch block, first degree AV block, premature ventricular contraction.",
    "What is the rhythm of this ECG? Which leads show ST elevation? Is this ECG normal or abnormal?",
    "Options: A. sinus rhythm B. bradycardia C. tachycardia D. atrial fibrillation. Answer: A",
    "The heart rate is 0 1 2 3 4 5 6 7 8 9 10 45 60 72 88 100 120 150 bpm. QRS 90 ms, QT 400 ms, PR 160 ms.",
    "Please interpret this 12-lead electrocardiogram image and give a diagnosis.",
    "NORM MI STTC CD HYP AF I-AVB LBBB RBBB PAC PVC STD STE 1dAVb SB ST",
)


def _corpus(extra: tuple[str, ...] = ()) -> list[str]:
    # Repeating the corpus makes the trainer's pair counts reach min_frequency for whole words.
    return list(_CORPUS + tuple(extra)) * 4


@lru_cache(maxsize=4)
def _train_byte_level_bpe(vocab_size: int, extra: tuple[str, ...] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(extra), trainer=trainer)
    return _vocab_and_merges(tok)


@lru_cache(maxsize=4)
def _train_metaspace_bpe(vocab_size: int, extra: tuple[str, ...] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    # ids 0..2 = <unk> <s> </s>, then the 256 byte-fallback tokens, as in Llama's sentencepiece model.
    reserved = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=reserved, show_progress=False)
    tok.train_from_iterator(_corpus(extra), trainer=trainer)
    return _vocab_and_merges(tok)


def _vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def byte_level_bpe_vocab(
    vocab_size: int = 512, extra_corpus: tuple[str, ...] = ()
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE ``(vocab, merges)`` trained on the built-in corpus (plus ``extra_corpus``), cached per
    process: the base of every byte-level tiny tokenizer (Qwen's here, a new family's builder in its own file)."""
    vocab, merges = _train_byte_level_bpe(vocab_size, tuple(extra_corpus))
    return dict(vocab), list(merges)


def build_tiny_qwen_tokenizer(vocab_size: int = 512, extra_corpus: tuple[str, ...] = ()) -> Qwen2Tokenizer:
    """A byte-level BPE ``Qwen2Tokenizer`` with Qwen's ChatML and vision special tokens.

    ``extra_corpus`` adds training texts (e.g. a dataset's questions) so that they become few tokens: the
    demo uses it to keep sequences short on CPU.

    ``<|im_end|>`` is eos and ``<|endoftext|>`` pad, as in the Qwen-VL Instruct releases. Special tokens
    are appended after the trained vocabulary, so ``len(tokenizer)`` is the model's vocab size.
    """
    vocab, merges = _train_byte_level_bpe(vocab_size, tuple(extra_corpus))
    vocab = dict(vocab)
    # Put the specials in the vocab in Qwen's order (<|endoftext|>, <|im_start|>, <|im_end|>, ...).
    for token in QWEN_SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_llama_tokenizer(vocab_size: int = 400, extra_corpus: tuple[str, ...] = ()) -> LlamaTokenizer:
    """A Metaspace BPE ``LlamaTokenizer`` with byte fallback and ``<image>``; pad = ``<unk>``.

    ``extra_corpus``: as in :func:`build_tiny_qwen_tokenizer`.

    bos ``<s>`` = 1 and eos ``</s>`` = 2 lie inside the vocabulary, as in Vicuna; ``<image>`` is the
    last id.
    """
    vocab, merges = _train_metaspace_bpe(vocab_size, tuple(extra_corpus))
    tokenizer = LlamaTokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token="<unk>", add_bos_token=True, add_eos_token=False
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [LLAMA_IMAGE_TOKEN]})
    tokenizer.padding_side = "left"
    return tokenizer


@lru_cache(maxsize=4)
def train_tiny_sentencepiece_model(vocab_size: int = 400) -> bytes:
    """A serialized SentencePiece BPE model set up like Llama's ``tokenizer.model`` (what PULSE-7B ships).

    Llama's settings: BPE, ``<unk>`` / ``<s>`` / ``</s>`` = 0 / 1 / 2, no pad, byte fallback (``\\n`` is
    ``<0x0A>``), digits split, identity normalisation, whitespace kept as it is and a dummy ``▁`` prefix.
    Trained offline on the built-in corpus; needs the ``sentencepiece`` package (imported here only).
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()
