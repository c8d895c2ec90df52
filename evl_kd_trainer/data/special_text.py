"""Literal control-token text in a record (``<|im_end|>``, ``</s>``, ``<|image_pad|>``, ``<image>``) stays text.

A tokenizer matches its added special tokens anywhere in the text it is given, so an answer that *mentions*
``</s>`` would otherwise put a real end-of-sequence id into the labels, and a stray ``<|image_pad|>`` or
``<image>`` would claim image features that do not exist. The collator renders every sample through the chat
templates, which insert the real control tokens; the record's own text is escaped before that by putting a
zero-width space after the first character of every such string (``<\u200b|im_end|>``), in both views alike.
Both tokenizers then encode it as ordinary text (byte-level BPE, or Llama's byte fallback).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from evl_kd_trainer.data.messages import IMAGE_PLACEHOLDER

SPECIAL_TEXT_MODES = ("escape", "skip", "error")
ZERO_WIDTH_SPACE = "\u200b"


def special_token_strings(processors: Iterable[Any]) -> tuple[str, ...]:
    """Every string the processors' tokenizers would turn into a special token, plus their image tokens and
    LLaVA's ``<image>`` placeholder; longest first, so the longest match wins."""
    strings = {IMAGE_PLACEHOLDER}
    for processor in processors:
        tokenizer = getattr(processor, "tokenizer", processor)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        strings.update(token.content for token in added.values() if getattr(token, "special", False))
        strings.update(getattr(tokenizer, "all_special_tokens", []) or [])
        for name in ("image_token", "video_token"):
            token = getattr(processor, name, None)
            if isinstance(token, str):
                strings.add(token)
    return tuple(sorted((s for s in strings if len(s) > 1), key=lambda s: (-len(s), s)))


class SpecialTextEscaper:
    """Find and escape the special-token strings ``strings`` in the text parts of TRL messages."""

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings = tuple(strings)
        self._pattern = re.compile("|".join(map(re.escape, self.strings))) if self.strings else None

    def find(self, messages: list[dict[str, Any]]) -> list[str]:
        """The special-token strings in the messages' text, in order of appearance."""
        if self._pattern is None:
            return []
        return [match.group(0) for text in _texts(messages) for match in self._pattern.finditer(text)]

    def escape_text(self, text: str) -> str:
        if self._pattern is None:
            return text
        # One pass breaks every match it finds; a second catches a match that overlapped an earlier one
        # (`<<s>s>`-like text). No special token contains the zero-width space, so no pass can create a match.
        for _ in range(4):
            if not self._pattern.search(text):
                return text
            text = self._pattern.sub(lambda match: match.group(0)[0] + ZERO_WIDTH_SPACE + match.group(0)[1:], text)
        raise ValueError(f"special-token text could not be escaped: {text[:80]!r}")

    def escape(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A copy of ``messages`` whose text parts (and string contents) are escaped; images are left as they are."""
        escaped = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                content = self.escape_text(content)
            elif isinstance(content, list):
                content = [
                    {**part, "text": self.escape_text(part["text"])}
                    if part.get("type") == "text" and isinstance(part.get("text"), str)
                    else part
                    for part in content
                ]
            escaped.append({**message, "content": content})
        return escaped


def _texts(messages: list[dict[str, Any]]) -> Iterable[str]:
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    yield part["text"]
