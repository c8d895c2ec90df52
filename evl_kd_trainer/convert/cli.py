"""``evl-kd convert-llava SRC DST``: convert an original-LLaVA checkpoint (PULSE-7B) for our teacher loaders."""

from __future__ import annotations

import argparse
import sys

_DTYPES = ("float16", "bfloat16", "float32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evl-kd convert-llava",
        description=(
            "Convert an original-LLaVA checkpoint folder (config.json with mm_* fields, safetensors shards, "
            "tokenizer) into a transformers LLaVA-NeXT folder with processor and llava_v1 chat template. "
            "mm_patch_merge_type is kept: 'flat' (LLaVA's default, PULSE) loads with our flat class."
        ),
    )
    parser.add_argument("src", help="original-LLaVA checkpoint folder")
    parser.add_argument("dst", help="output folder (must be empty or absent unless --overwrite)")
    parser.add_argument(
        "--vision-tower",
        metavar="PATH",
        help="local CLIP folder (e.g. openai/clip-vit-large-patch14-336); needed when SRC lacks the tower weights",
    )
    parser.add_argument("--dtype", choices=_DTYPES, help="cast weights to this dtype (default: keep SRC's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    parser.add_argument("--max-shard-size-gb", type=float, default=4.0, help="output shard size limit (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the conversion; 0 on success, 1 on a conversion error (message on stderr), 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    import torch

    from evl_kd_trainer.convert.llava import ConversionError, convert_llava_checkpoint

    if args.max_shard_size_gb <= 0:
        print("evl-kd convert-llava: error: --max-shard-size-gb must be positive", file=sys.stderr)
        return 2
    try:
        result = convert_llava_checkpoint(
            args.src,
            args.dst,
            vision_tower=args.vision_tower,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            overwrite=args.overwrite,
            max_shard_bytes=int(args.max_shard_size_gb * 1024**3),
        )
    except ConversionError as err:
        print(f"evl-kd convert-llava: error: {err}", file=sys.stderr)
        return 1
    print(
        f"Converted {args.src} -> {result.dst}: mm_patch_merge_type={result.merge_type}, "
        f"<image> id {result.image_token_id}, vocab {result.source_vocab_size} -> {result.vocab_size}, "
        f"vision weights from {result.vision_weights}"
        + (f", dropped {len(result.dropped_keys)} unused tensor(s)" if result.dropped_keys else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
