"""Arguments of the example scripts that are not trainer fields: where the data is."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    """Where the training data lives.

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
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training records."})

    min_pixels: int | None = field(default=None, metadata={"help": "Student image processor's min pixels."})
    max_pixels: int | None = field(default=None, metadata={"help": "Student image processor's max pixels."})

    def __post_init__(self) -> None:
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"`max_train_samples` must be >= 1, got {self.max_train_samples}.")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"`min_pixels` ({self.min_pixels}) must not exceed `max_pixels` ({self.max_pixels}).")
