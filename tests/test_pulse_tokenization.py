"""The converted PULSE teacher's view is the token sequence PULSE-7B was trained on.

PULSE's training (original LLaVA, transformers 4.37) tokenized with the *slow* SentencePiece Llama tokenizer
(``legacy=False``) through LLaVA's ``tokenizer_image_token`` (the prompt split at ``<image>``, each piece
tokenized on its own) and labelled the answers with ``preprocess_v1``'s round-by-round length arithmetic. Both
are re-implemented here from their description, on a tiny SentencePiece model set up like Llama's and a tiny
checkpoint that ships only ``tokenizer.model`` (as PULSE does), converted with ``convert_llava_checkpoint``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig

from evl_kd_trainer.convert import convert_llava_checkpoint
from evl_kd_trainer.data import DualViewCollator
from evl_kd_trainer.data.messages import conversations_to_messages
from evl_kd_trainer.data.templates import LLAVA_V1_SYSTEM
from evl_kd_trainer.models import load_processor
from evl_kd_trainer.testing import build_tiny_qwen3_vl, make_ecg_like_image
from evl_kd_trainer.testing.tokenizers import train_tiny_sentencepiece_model
from tests.test_convert_llava import CROP, PINPOINTS_WH, SIDE, VISION, llava_best_resolution, write_llava_checkpoint

spm = pytest.importorskip("sentencepiece")
model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")  # needs protobuf

IGNORE = -100
LLAVA_IMAGE_INDEX = -200  # original LLaVA's out-of-vocabulary image id
UNDERLINE = "\u2581"

# --- transformers 4.37's slow LlamaTokenizer with legacy=False, on the sentencepiece model itself --------------


class SlowLlamaTokenizer:
    """What ``LlamaTokenizer(vocab_file, legacy=False)`` of transformers 4.37 returns for ``tokenizer(text).input_ids``.

    legacy=False: the model's dummy prefix is switched off; ``tokenize`` prepends one ``▁`` to the text, splits
    it at the special tokens, and each piece starting with ``▁``/space is encoded behind ``<unk>`` (whose pieces
    are then dropped) so that sentencepiece keeps that ``▁``; text right after a special token gets no ``▁``.
    """

    def __init__(self, model_proto: bytes) -> None:
        proto = model_pb2.ModelProto()
        proto.ParseFromString(model_proto)
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.specials = ("<unk>", "<s>", "</s>")
        self.bos_id = self.sp.piece_to_id("<s>")
        self.unk_pieces = len(self.sp.encode("<unk>", out_type=str))

    def _encode_piece(self, text: str) -> list[str]:
        if not text.startswith((UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        pieces = self.sp.encode("<unk>" + text, out_type=str)
        return pieces[self.unk_pieces :]

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        text = UNDERLINE + text.replace(UNDERLINE, " ")
        tokens: list[str] = []
        for piece in re.split("(" + "|".join(map(re.escape, self.specials)) + ")", text):
            if piece in self.specials:
                tokens.append(piece)
            elif piece:
                tokens += self._encode_piece(piece)
        if len(tokens) > 1 and tokens[0] == UNDERLINE and tokens[1] in self.specials:
            tokens = tokens[1:]
        return tokens

    def __call__(self, text: str) -> list[int]:
        return [self.bos_id] + [self.sp.piece_to_id(token) for token in self.tokenize(text)]


# --- original LLaVA's llava_v1 prompt, tokenizer_image_token and preprocess_v1 targets -------------------------


def llava_v1_prompt(conversations: list[dict[str, str]]) -> str:
    """conv_llava_v1.get_prompt() after preprocess_multimodal: "<image>\\n" + the stripped text of an image turn;
    SeparatorStyle.TWO: system, then "ROLE: message" followed by " " (USER) or "</s>" (ASSISTANT)."""
    text = LLAVA_V1_SYSTEM + " "
    for turn in conversations:
        value = turn["value"]
        if "<image>" in value:
            value = "<image>\n" + value.replace("<image>", "").strip()
        if turn["from"] == "human":
            text += f"USER: {value} "
        else:
            text += f"ASSISTANT: {value}</s>"
    return text


def tokenizer_image_token(prompt: str, tokenizer: SlowLlamaTokenizer) -> list[int]:
    """Every piece between images tokenized on its own; the first piece's bos kept, the others' dropped."""
    pieces = [tokenizer(piece) for piece in prompt.split("<image>")]
    skip = 1 if pieces[0][:1] == [tokenizer.bos_id] else 0
    ids = [tokenizer.bos_id] if skip else []
    for index, piece in enumerate(pieces):
        if index:
            ids.append(LLAVA_IMAGE_INDEX)
        ids += piece[skip:]
    return ids


def preprocess_v1_targets(prompt: str, ids: list[int], tokenizer: SlowLlamaTokenizer) -> list[int]:
    """preprocess_v1's labels: the prompt is cut into rounds at "</s>", each at " ASSISTANT: "; the instruction's
    length (its own tokenization minus bos and the trailing "▁") is masked, the rest of the round is kept.
    legacy=False: every round after the first loses one more token (no "▁" after "</s>")."""
    targets = list(ids)
    targets[0] = IGNORE
    position = 1
    for index, round_text in enumerate(prompt.split("</s>")):
        if not round_text:
            break
        parts = round_text.split(" ASSISTANT: ")
        assert len(parts) == 2, round_text
        round_len = len(tokenizer_image_token(round_text, tokenizer))
        instruction_len = len(tokenizer_image_token(parts[0] + " ASSISTANT: ", tokenizer)) - 2
        if index:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        targets[position : position + instruction_len] = [IGNORE] * instruction_len
        position += round_len
    targets[position:] = [IGNORE] * (len(targets) - position)
    # LLaVA masks the whole sample when its arithmetic misses the end ("tokenization mismatch"); with Llama's
    # vocabulary, as with this one, it lands exactly on it.
    assert position == len(ids), "the re-implemented LLaVA targets do not line up with the tokens"
    return targets


def expand_images(ids: list[int], targets: list[int], counts: list[int], image_id: int) -> tuple[list, list]:
    """Each LLaVA image index -> the converted model's ``count`` image tokens, unlabelled."""
    out_ids, out_targets, images = [], [], iter(counts)
    for token, target in zip(ids, targets):
        if token == LLAVA_IMAGE_INDEX:
            count = next(images)
            out_ids += [image_id] * count
            out_targets += [IGNORE] * count
        else:
            out_ids.append(token)
            out_targets.append(target)
    return out_ids, out_targets


# --- a PULSE-like checkpoint that ships tokenizer.model only ---------------------------------------------------

# LLaVA's training saved the slow tokenizer: tokenizer.model plus this config (pad = <unk>, legacy false).
SLOW_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<unk>",
    "legacy": False,
    "model_max_length": 4096,
    "padding_side": "right",
    "clean_up_tokenization_spaces": False,
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
}


def write_sentencepiece_checkpoint(folder: Path) -> bytes:
    """A tiny flat original-LLaVA checkpoint whose only vocabulary file is ``tokenizer.model``."""
    tower = folder.parent / "clip"  # the tiny CLIP's config (its weights are in the checkpoint)
    CLIPVisionConfig(**VISION).save_pretrained(tower)
    write_llava_checkpoint(folder, tower=str(tower))
    for file in folder.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens_map", "added_tokens")):
            file.unlink()
    model_proto = train_tiny_sentencepiece_model(400)  # as many pieces as the checkpoint's embedding rows
    (folder / "tokenizer.model").write_bytes(model_proto)
    (folder / "tokenizer_config.json").write_text(json.dumps(SLOW_TOKENIZER_CONFIG))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return model_proto


@pytest.fixture(scope="module")
def pulse_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm")
    model_proto = write_sentencepiece_checkpoint(root / "src")
    convert_llava_checkpoint(root / "src", root / "dst")
    return SlowLlamaTokenizer(model_proto), load_processor(root / "dst")


# ECGInstruct-shaped records: one image in the first human turn, multi-turn, answers starting with words, digits
# and punctuation, a newline inside an answer.
RECORDS = [
    {
        "id": "single",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is the rhythm of this ECG?"},
            {"from": "gpt", "value": "sinus rhythm"},
        ],
        "size": (80, 80),
    },
    {
        "id": "multi",
        "conversations": [
            {"from": "human", "value": "Please interpret this 12-lead electrocardiogram image.\n<image>"},
            {"from": "gpt", "value": "Sinus tachycardia, heart rate 120 bpm.\nST depression in V4 V5 V6."},
            {"from": "human", "value": "What is the heart rate?"},
            {"from": "gpt", "value": "120 bpm"},
            {"from": "human", "value": "Options: A. sinus rhythm B. tachycardia. Answer:"},
            {"from": "gpt", "value": "(B) tachycardia"},
        ],
        "size": (120, 40),
    },
]


def _teacher_view(processor, records) -> dict[str, torch.Tensor]:
    examples = [
        {
            "id": record["id"],
            "messages": conversations_to_messages(record["conversations"]),
            "images": [make_ecg_like_image(seed=index, size=record["size"])],
        }
        for index, record in enumerate(records)
    ]
    batch = DualViewCollator(build_tiny_qwen3_vl()[1], processor)(examples)
    return {key[len("teacher_") :]: value for key, value in batch.items() if key.startswith("teacher_")}


def test_teacher_view_is_the_sequence_pulse_was_trained_on(pulse_like):
    slow, processor = pulse_like
    view = _teacher_view(processor, RECORDS)
    image_id = processor.image_token_id
    for row, record in enumerate(RECORDS):
        prompt = llava_v1_prompt(record["conversations"])
        ids = tokenizer_image_token(prompt, slow)
        targets = preprocess_v1_targets(prompt, ids, slow)
        width, height = record["size"]
        best_width, best_height = llava_best_resolution((width, height), PINPOINTS_WH)
        crops = 1 + (best_width // CROP) * (best_height // CROP)
        expected_ids, expected_labels = expand_images(ids, targets, [crops * SIDE * SIDE], image_id)

        length = int(view["attention_mask"][row].sum())
        assert view["input_ids"][row, :length].tolist() == expected_ids, record["id"]
        assert view["labels"][row, :length].tolist() == expected_labels, record["id"]
        assert torch.equal(view["response_mask"][row, :length], torch.tensor(expected_labels) != IGNORE)


def test_the_text_after_the_image_starts_with_a_word_boundary(pulse_like):
    """The one difference PULSE's real tokenizer showed: ``<image>, ▁, \\n`` (32000, 29871, 13), not ``<image>, \\n``."""
    slow, processor = pulse_like
    view = _teacher_view(processor, RECORDS[:1])
    ids = view["input_ids"][0].tolist()
    after = ids.index(processor.image_token_id) + SIDE * SIDE * 5
    underline, newline = slow.sp.piece_to_id(UNDERLINE), slow.sp.piece_to_id("<0x0A>")
    assert ids[after - 1 : after + 2] == [processor.image_token_id, underline, newline]
    # whole-prompt tokenization, what the processor itself gives, lacks the word boundary
    whole = processor.tokenizer("USER: <image>\nWhat").input_ids
    assert whole[whole.index(processor.image_token_id) + 1] == newline


def test_every_image_of_a_sample_is_followed_by_its_own_piece(pulse_like):
    """Two images in one turn (the template puts both first): each text piece after an image is tokenized on its
    own, and each image keeps its own token count."""
    slow, processor = pulse_like
    sizes = [(80, 40), (40, 120)]
    example = {
        "id": "two",
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "2 tracings, sinus rhythm"}]},
        ],
        "images": [make_ecg_like_image(seed=index, size=size) for index, size in enumerate(sizes)],
    }
    batch = DualViewCollator(build_tiny_qwen3_vl()[1], processor)([example])
    prompt = f"{LLAVA_V1_SYSTEM} USER: <image>\n<image>\nCompare. ASSISTANT: 2 tracings, sinus rhythm</s>"
    ids = tokenizer_image_token(prompt, slow)
    counts = []
    for width, height in sizes:
        best_width, best_height = llava_best_resolution((width, height), PINPOINTS_WH)
        counts.append((1 + (best_width // CROP) * (best_height // CROP)) * SIDE * SIDE)
    expected_ids, expected_labels = expand_images(
        ids, preprocess_v1_targets(prompt, ids, slow), counts, processor.image_token_id
    )
    assert batch["teacher_input_ids"][0].tolist() == expected_ids
    assert batch["teacher_labels"][0].tolist() == expected_labels
    assert counts[0] != counts[1]
