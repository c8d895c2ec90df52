"""Packaging for evl_kd_trainer; tool settings live in setup.cfg."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "evl_kd_trainer" / "__init__.py").read_text()).group(1)

# torch is deliberately a loose lower bound: install torch first (see Makefile / constraints.txt),
# otherwise pip may pull a multi-GB CUDA build when a CPU wheel is what the machine has.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=5.0,<6",
    "trl>=1.16,<2",
    "peft>=0.17",
    "datasets>=3.0",
    "evaluate>=0.4",
    "geomloss>=0.3",
    "accelerate>=1.0",
    "pillow>=10",
    "pyyaml>=6",
    "numpy>=1.26",
    "tokenizers>=0.20",
    # PULSE-7B ships only a SentencePiece tokenizer.model: `evl-kd convert-llava` reads it with these two.
    "sentencepiece>=0.1.99",
    "protobuf>=3.20",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tqdm>=4.60",
]

EXTRAS = {
    "deepspeed": ["deepspeed>=0.15"],
    "ecg": ["neurokit2>=0.2", "wfdb>=4.1", "h5py>=3.8", "pandas>=2.0", "pyarrow>=14"],
    # tensorboard: the test that reads the scalars `report_to=["tensorboard"]` writes back.
    "dev": ["pytest>=8", "ruff>=0.6", "tensorboard>=2.14"],
}
EXTRAS["dev"] += EXTRAS["ecg"]
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="evl_kd_trainer",
    version=VERSION,
    description="Knowledge distillation between heterogeneous vision-language models on top of TRL (EVL-ECG).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["evl_kd_trainer", "evl_kd_trainer.*"]),
    include_package_data=True,
    package_data={"evl_kd_trainer": ["**/*.json", "**/*.yaml", "**/*.txt", "**/*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["evl-kd=evl_kd_trainer.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
