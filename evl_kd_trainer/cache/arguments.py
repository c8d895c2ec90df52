"""`CacheArguments`: the options of ``evl-kd cache-teacher`` that are not fields of the distillation config."""

from __future__ import annotations

from dataclasses import dataclass, field

from evl_kd_trainer.cache.compression import parse_compression


@dataclass
class CacheArguments:
    """Where and how the teacher-feature cache is written.

    Parameters:
        output (`str`):
            Cache folder (default: the recipe's `teacher_cache_dir`); created if missing. A folder holding a cache of the same fingerprint is resumed (its
            finished shards are kept); one of another fingerprint is refused unless `overwrite`.
        compression (`str`, *optional*, defaults to `"bf16"`):
            Storage of the hidden states and visual tokens: `"fp32"` (exact), `"bf16"` (exact against a bf16
            teacher), `"fp8"` (e4m3 with per-token scales, relative error <= 2^-4 per element) or `"pca:R"` (rank-R
            basis fitted on `pca_fit_samples` records; the retained variance is reported).
        logits_topk (`int`, *optional*, defaults to `0`):
            For ULD / MultiLevelOT: store only the top-k teacher log-probabilities at the answer positions instead
            of the hidden states and LM head (smaller; the tail of each distribution is then flattened). `0`: exact.
        visual_centroids (`int`, *optional*, defaults to `0`):
            Reduce each sample's teacher visual tokens to at most this many k-means centroids, stored with their
            weights (the OT marginals). `0` keeps every token.
        kmeans_iterations (`int`, *optional*, defaults to `25`):
            Lloyd iterations of the centroid reduction (it stops earlier once no assignment changes).
        pca_fit_samples (`int`, *optional*, defaults to `64`):
            Records whose teacher features fit the PCA basis (`compression="pca:R"`).
        batch_size (`int`, *optional*, defaults to `4`):
            Records per teacher forward.
        shard_size (`int`, *optional*, defaults to `64`):
            Records per shard file (the unit a killed run loses at most, per process).
        max_shard_bytes (`int`, *optional*, defaults to `2147483648`):
            A shard is also closed once its data reaches this many bytes.
        overwrite (`bool`, *optional*, defaults to `False`):
            Delete a cache of another fingerprint found in `output` instead of refusing it.
    """

    output: str | None = field(
        default=None, metadata={"help": "Cache folder (resumed when it holds this cache); default: teacher_cache_dir."}
    )
    compression: str = field(
        default="bf16", metadata={"help": "Feature storage: 'fp32', 'bf16', 'fp8' (e4m3, per-token scales), 'pca:R'."}
    )
    logits_topk: int = field(
        default=0, metadata={"help": "ULD/MultiLevelOT: store top-k teacher log-probs only (0: exact hidden + head)."}
    )
    visual_centroids: int = field(
        default=0, metadata={"help": "Reduce visual tokens to at most C weighted k-means centroids (0: keep all)."}
    )
    kmeans_iterations: int = field(default=25, metadata={"help": "Lloyd iterations of the centroid reduction."})
    pca_fit_samples: int = field(default=64, metadata={"help": "Records that fit the PCA basis (pca:R)."})
    batch_size: int = field(default=4, metadata={"help": "Records per teacher forward."})
    shard_size: int = field(default=64, metadata={"help": "Records per shard file."})
    max_shard_bytes: int = field(default=2**31, metadata={"help": "Close a shard once it holds this many bytes."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a cache of another fingerprint in `output`."})

    def __post_init__(self) -> None:
        parse_compression(self.compression)  # raises naming the field
        for name in ("logits_topk", "visual_centroids"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        for name in ("kmeans_iterations", "pca_fit_samples", "batch_size", "shard_size", "max_shard_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
