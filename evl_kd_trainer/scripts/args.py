"""Arguments of the example scripts that are not trainer fields: where the data is and how bad data is handled."""

from __future__ import annotations

from dataclasses import dataclass, field

CHECK_IMAGES = ("header", "exists", "decode", "none")
ON_BAD_IMAGE = ("skip", "error")
SPECIAL_TOKEN_TEXT = ("escape", "skip", "error")


@dataclass
class DataArguments:
    """Where the training data lives, and what happens to records that cannot be trained on.

    Parameters:
        dataset_path (`str`):
            ECGInstruct / LLaVA JSON or JSONL file (or a TRL-format JSON with `messages`/`images`).
        eval_dataset_path (`str`, *optional*):
            Same format, evaluated every `eval_steps` when `eval_strategy` is not `"no"`.
        image_root (`str`, *optional*):
            Folder the records' `image` paths are relative to; defaults to the JSON file's folder.
        streaming (`bool`, *optional*, defaults to `False`):
            Stream the records instead of indexing them (for ECGInstruct's 1.1M records).
        skip_invalid (`bool`, *optional*, defaults to `False`):
            Skip (and count) invalid records instead of failing on the first one.
        check_images (`str`, *optional*, defaults to `"header"`):
            Image check at load time: `"header"` (read each image's header with PIL, no decoding: format, size,
            mode, pixel and aspect-ratio limits, truncated PNGs), `"exists"` (one stat), `"decode"` (decode every
            image: slow on 1.1M images) or `"none"`.
        on_bad_image (`str`, *optional*, defaults to `"skip"`):
            An image that fails to decode while a batch is collated: `"skip"` drops the sample (counted in the
            collator's `stats` as `dropped_bad_image`, logged with the record) or `"error"` stops the run.
        special_token_text (`str`, *optional*, defaults to `"escape"`):
            Literal special-token text in a record (`<|im_end|>`, `</s>`, `<|image_pad|>`, ...): `"escape"` keeps it
            text in both views, `"skip"` drops the sample (counted), `"error"` stops the run.
        allow_paths_outside_root (`bool`, *optional*, defaults to `False`):
            Accept absolute image paths and paths resolving (symlinks followed) outside `image_root`.
        max_train_samples (`int`, *optional*):
            Keep only the first N training records (smoke runs).
        min_pixels (`int`, *optional*):
            Smallest image area (pixels) the student's Qwen-VL image processor resizes to (784 in the paper).
        max_pixels (`int`, *optional*):
            Largest image area (pixels) the student's Qwen-VL image processor resizes to (50176 in the paper:
            at most 49 visual tokens for Qwen3-VL).
    """

    dataset_path: str | None = field(default=None, metadata={"help": "ECGInstruct/LLaVA JSON or JSONL training file."})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "Evaluation file, same format."})
    image_root: str | None = field(default=None, metadata={"help": "Folder that image paths are relative to."})
    streaming: bool = field(default=False, metadata={"help": "Stream the records (IterableDataset)."})
    skip_invalid: bool = field(default=False, metadata={"help": "Skip and count invalid records instead of failing."})
    check_images: str = field(
        default="header", metadata={"help": "Image check at load: 'header' (no decoding), 'exists', 'decode', 'none'."}
    )
    on_bad_image: str = field(
        default="skip", metadata={"help": "An image failing to decode at collation: 'skip' (counted) or 'error'."}
    )
    special_token_text: str = field(
        default="escape", metadata={"help": "Special-token text in a record: 'escape', 'skip' (counted), 'error'."}
    )
    allow_paths_outside_root: bool = field(
        default=False, metadata={"help": "Accept absolute image paths and paths resolving outside image_root."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training records."})

    min_pixels: int | None = field(default=None, metadata={"help": "Student image processor's min pixels."})
    max_pixels: int | None = field(default=None, metadata={"help": "Student image processor's max pixels."})

    def __post_init__(self) -> None:
        choices = {"check_images": CHECK_IMAGES, "on_bad_image": ON_BAD_IMAGE, "special_token_text": SPECIAL_TOKEN_TEXT}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"`max_train_samples` must be >= 1, got {self.max_train_samples}.")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"`min_pixels` ({self.min_pixels}) must not exceed `max_pixels` ({self.max_pixels}).")
