"""Original LLaVA's tokenization of a prompt with images: the text between images tokenized piece by piece.

LLaVA's training code (PULSE-7B's) never shows the image placeholder to the tokenizer: ``tokenizer_image_token``
splits the prompt at ``<image>``, tokenizes each piece with its own ``tokenizer(piece)`` call, keeps the first
piece's bos, drops the bos of the others and puts one image index between consecutive pieces. A SentencePiece
Llama tokenizer begins every call with the word-boundary piece ``▁``, so the text after an image starts with
``▁`` (29871 in Llama's vocabulary) before its ``\\n`` (13). A processor tokenizes the whole prompt, with
``<image>`` a special token, and gives ``<image>, \\n`` instead: a sequence the model never saw in training.

:func:`encode_image_pieces` reproduces LLaVA's sequence from a processor: the processor still does the image
work and says how many tokens each image expands to; the text is re-tokenized piece by piece, and the labels are
the tokens overlapping the template's ``{% generation %}`` spans, located through each piece's offsets (so the
tokenizer must be a fast one, as ``return_assistant_tokens_mask`` already requires).
"""

from __future__ import annotations

from typing import Any

import torch


def _image_runs(input_ids: torch.Tensor, image_token_id: int) -> list[int]:
    """Lengths of the maximal runs of ``image_token_id`` in ``input_ids``, in order."""
    runs: list[int] = []
    previous = False
    for is_image in (input_ids == image_token_id).tolist():
        if is_image and previous:
            runs[-1] += 1
        elif is_image:
            runs.append(1)
        previous = is_image
    return runs


def _images_of(messages: list[dict[str, Any]]) -> list[Any]:
    return [
        part["image"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image" and part.get("image") is not None
    ]


def encode_image_pieces(processor: Any, messages: list[dict[str, Any]], chat_template: str) -> dict[str, Any]:
    """``processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
    return_assistant_tokens_mask=True)`` with the text tokenized as original LLaVA's ``tokenizer_image_token`` does.

    ``messages`` carry their decoded images in the image parts (``{"type": "image", "image": PIL}``). Returns the
    processor's outputs (``pixel_values``, ``image_sizes``, ...) with ``input_ids``, ``attention_mask`` and
    ``assistant_masks`` of shape ``(1, L)`` for the re-tokenized sequence.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    tokenizer = processor.tokenizer
    image_token = processor.image_token
    image_token_id = int(processor.image_token_id)
    prompts, generation_spans = render_jinja_template(
        conversations=[messages],
        chat_template=chat_template,
        return_assistant_tokens_mask=True,
        **tokenizer.special_tokens_map,
    )
    prompt, spans = prompts[0], generation_spans[0]
    images = _images_of(messages)
    output = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    if "token_type_ids" in output:
        raise ValueError(f"cannot re-tokenize the {type(processor).__name__} output: it has token_type_ids")
    # The processor's whole-prompt sequence tells how many tokens each image became. Two images with no text
    # between them form one run there, and get no text between them here either.
    runs = iter(_image_runs(output["input_ids"][0], image_token_id))

    pieces = prompt.split(image_token)
    ids: list[int] = []
    labelled: list[bool] = []
    drop_first = 0  # LLaVA drops the first token of every later piece when the first piece began with bos
    start = 0  # character offset of the current piece in the prompt
    pending_image = False
    for index, piece in enumerate(pieces):
        if index:
            pending_image = True
            start += len(image_token)
        if pending_image and (piece or index == len(pieces) - 1):
            count = next(runs, None)
            if count is None:
                raise ValueError("the processor expanded fewer images than the prompt has placeholders")
            ids += [image_token_id] * count
            labelled += [False] * count
            pending_image = False
        encoded = tokenizer(piece, return_offsets_mapping=True)
        piece_ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
        if index == 0:
            drop_first = int(bool(piece_ids) and piece_ids[0] == tokenizer.bos_token_id)
        else:
            piece_ids, offsets = piece_ids[drop_first:], offsets[drop_first:]
        for token, (token_start, token_end) in zip(piece_ids, offsets):
            ids.append(token)
            # As transformers' assistant masks: every token overlapping a generation span (bos is zero-width).
            first, last = start + token_start, start + token_end
            labelled.append(any(first < span_end and last > span_start for span_start, span_end in spans))
        start += len(piece)
    if next(runs, None) is not None:
        raise ValueError("the processor expanded more images than the prompt has placeholders")

    input_ids = torch.tensor([ids], dtype=torch.long)
    output["input_ids"] = input_ids
    output["attention_mask"] = torch.ones_like(input_ids)
    output["assistant_masks"] = torch.tensor([labelled], dtype=torch.long)
    if "mm_token_type_ids" in output:
        output["mm_token_type_ids"] = (input_ids == image_token_id).long()
    return output
