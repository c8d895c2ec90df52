"""`EvalArguments`: what `evl-kd evaluate` scores, on what, and how (a recipe's keys are its fields)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from evl_kd_trainer.eval.splits import get_split, split_names

DTYPES = ("auto", "bfloat16", "float16", "float32")
IMAGE_POLICIES = ("error", "skip")


@dataclass
class EvalArguments:
    """What to evaluate, on what, and how.

    Parameters:
        model_name_or_path (`list[str]`):
            Model folders (or Hub ids) to evaluate, one table row each: Qwen-VL students, LLaVA(-NeXT) teachers
            such as a converted PULSE-7B, anything `evl_kd_trainer.models.loading.load_model` loads.
        model_names (`list[str]`, *optional*):
            Display names of the models in the table, one per model; default: the folder names.
        chat_templates (`list[str]`, *optional*):
            Prompt format per model (one value applies to all): `"auto"` (llava_v1 for LLaVA models, else the
            processor's own template), `"processor"`, `"llava_v1"`, `"qwen_vl"` or Jinja text. Default `"auto"`.
        splits (`list[str]`):
            Split names, one per data file: `ptb-xl-super`, `code15`, `ecgqa`, `cpsc2018`, `csn`, `g12ec`,
            `mmmu-ecg`, `synthetic` (ECG-Bench's names such as `ptb-test` also work).
        data_files (`list[str]`):
            The split files (`.parquet`, `.json`, `.jsonl`) with `id`, `image`, `conversations`, one per split.
        image_root (`str`, *optional*):
            Folder relative image paths start from; default: each data file's folder.
        output_dir (`str`, *optional*, defaults to `"eval_results"`):
            Where results, the table, the chart and the per-sample predictions are written.
        batch_size (`int`, *optional*, defaults to `8`):
            Questions per generation batch (left-padded).
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Generation budget per answer (PULSE's evaluation default). Answers that reach it are counted.
        max_samples (`int`, *optional*):
            Evaluate only the first N records of each split (smoke runs).
        reference_compat (`bool`, *optional*, defaults to `False`):
            Score as PULSE's reference scorer (substring label matching, NaN macro AUC for single-valued
            classes, random letter for unparseable choices), to compare with published numbers.
        missing_images (`str`, *optional*, defaults to `"error"`):
            `"error"`: a missing or unreadable image stops the run naming the record; `"skip"`: such records
            are left out of the scores and counted in the report.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Model weights dtype: `auto`, `bfloat16`, `float16` or `float32`.
        attn_implementation (`str`, *optional*):
            Attention kernel passed to `from_pretrained` (`sdpa`, `eager`, `flash_attention_2`).
        device (`str`, *optional*):
            Device to run on; default: `cuda` when available, else `cpu`.
        min_pixels (`int`, *optional*):
            Override the Qwen-VL image processor's smallest image area (the paper: 784). Applies to the Qwen-VL
            models only; LLaVA models keep their processor's crops.
        max_pixels (`int`, *optional*):
            Override the Qwen-VL image processor's largest image area (the paper: 50176); Qwen-VL models only.
        progress (`bool`, *optional*, defaults to `True`):
            Show progress bars during generation.
    """

    model_name_or_path: list[str] | None = field(default=None, metadata={"help": "Model folder(s) or Hub id(s)."})
    model_names: list[str] | None = field(default=None, metadata={"help": "Display name per model (table rows)."})
    chat_templates: list[str] | None = field(
        default=None, metadata={"help": "Per model: auto, processor, llava_v1, qwen_vl or Jinja text."}
    )
    splits: list[str] | None = field(default=None, metadata={"help": f"Split names: {', '.join(split_names())}."})
    data_files: list[str] | None = field(default=None, metadata={"help": "Split files (.parquet/.json/.jsonl)."})
    image_root: str | None = field(default=None, metadata={"help": "Folder that image paths are relative to."})
    output_dir: str = field(default="eval_results", metadata={"help": "Where outputs are written."})
    batch_size: int = field(default=8, metadata={"help": "Questions per generation batch."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per answer."})
    max_samples: int | None = field(default=None, metadata={"help": "Only the first N records of each split."})
    reference_compat: bool = field(default=False, metadata={"help": "Score as PULSE's reference scorer."})
    missing_images: str = field(
        default="error", metadata={"help": "Missing/unreadable images: error or skip.", "choices": list(IMAGE_POLICIES)}
    )
    dtype: str = field(default="auto", metadata={"help": "Model dtype.", "choices": list(DTYPES)})
    attn_implementation: str | None = field(default=None, metadata={"help": "Attention kernel (sdpa, eager, ...)."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda if available, else cpu)."})
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL image processor's min pixels."})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL image processor's max pixels."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ValueError("`model_name_or_path` is required: one or several model folders (recipe or command line).")
        models = len(self.model_name_or_path)
        if self.model_names is not None:
            if len(self.model_names) != models:
                raise ValueError(f"`model_names` has {len(self.model_names)} name(s) for {models} model(s).")
            if len(set(self.model_names)) != models:
                raise ValueError(f"`model_names` must be unique, got {self.model_names}.")
        if self.chat_templates is not None and len(self.chat_templates) not in (1, models):
            raise ValueError(
                f"`chat_templates` needs 1 value or one per model ({models}), got {len(self.chat_templates)}."
            )
        if not self.splits:
            raise ValueError(f"`splits` is required: one or several of {', '.join(split_names())}.")
        self.splits = [get_split(name).name for name in self.splits]  # unknown names raise here, listing the known
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"`splits` lists a split twice: {self.splits}.")
        if not self.data_files or len(self.data_files) != len(self.splits):
            count = len(self.data_files or [])
            raise ValueError(f"`data_files` needs one file per split: {len(self.splits)} split(s), {count} file(s).")
        for name in ("batch_size", "max_new_tokens", "max_samples", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"`min_pixels` ({self.min_pixels}) must not exceed `max_pixels` ({self.max_pixels}).")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}.")
        if self.missing_images not in IMAGE_POLICIES:
            raise ValueError(f"`missing_images` must be one of {IMAGE_POLICIES}, got {self.missing_images!r}.")

    def display_names(self) -> list[str]:
        """The models' table names: ``model_names``, else folder names (full paths where those collide)."""
        if self.model_names is not None:
            return list(self.model_names)
        names = [os.path.basename(os.path.normpath(path)) or path for path in self.model_name_or_path]
        return names if len(set(names)) == len(names) else list(self.model_name_or_path)

    def chat_template_for(self, index: int) -> str:
        if not self.chat_templates:
            return "auto"
        return self.chat_templates[0] if len(self.chat_templates) == 1 else self.chat_templates[index]
