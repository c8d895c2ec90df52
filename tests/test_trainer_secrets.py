"""No Hub token is written anywhere: not in output_dir, a checkpoint, the model card, a log or a pushed commit.

The Hub is replaced at its HTTP boundary (a mock transport behind huggingface_hub's own client): every request
the real push code makes is recorded, and every byte it would upload is searched for the tokens.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import os
import threading
import zipfile
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

from evl_kd_trainer.scripts.sft import VLMSFTConfig
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer
from tests.test_trainer import COMMON

ARG_TOKEN = "hf_argTokenQ7xv2Lm9ZpR4sT8wYb3Kd"
ENV_TOKEN = "hf_envTokenM2nB6vC1xZ9aS5dF7gH4j"
KWARG_TOKEN = "hf_kwargTokenP3oI8uY2tR6eW1qA5sD"
TOKENS = (ARG_TOKEN, ENV_TOKEN, KWARG_TOKEN)


def leaks(data: bytes) -> list[str]:
    """The tokens found in ``data`` (upload payloads are searched after their base64 contents are decoded)."""
    return [t for t in TOKENS if t.encode() in data]


@pytest.mark.parametrize("config_class", [EVLDistillConfig, VLMSFTConfig])
def test_a_pickled_or_printed_config_holds_no_token(tmp_path, config_class):
    extra = {"teacher_model_init_kwargs": {"token": KWARG_TOKEN, "dtype": "float32"}}
    if config_class is VLMSFTConfig:
        extra = {"model_init_kwargs": {"token": KWARG_TOKEN, "dtype": "float32"}}
    values = {**COMMON, "learning_rate": 3e-4, **extra}
    args = config_class(output_dir=str(tmp_path), hub_token=ARG_TOKEN, **values)
    buffer = io.BytesIO()
    torch.save(args, buffer)  # what Trainer writes as training_args.bin
    assert leaks(buffer.getvalue()) == []
    for text in (repr(args), str(args), json.dumps(args.to_dict()), args.to_json_string(), f"{[args]}"):
        assert leaks(text.encode()) == [], text[:200]
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert type(loaded) is config_class and loaded.hub_token is None
    assert loaded.learning_rate == 3e-4 and loaded.output_dir == str(tmp_path)
    kwargs = loaded.teacher_model_init_kwargs if config_class is EVLDistillConfig else loaded.model_init_kwargs
    assert kwargs == {"token": None, "dtype": "float32"}
    # the live config keeps its token (to push), and so does a copy in memory
    assert args.hub_token == ARG_TOKEN and copy.deepcopy(args).hub_token == ARG_TOKEN
    assert copy.copy(args).hub_token == ARG_TOKEN


class FakeHub:
    """The Hub's HTTP API, enough for create_repo and upload_folder; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.uploaded: dict[str, bytes] = {}
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        path = request.url.path
        with self.lock:
            self.requests.append((request.method, str(request.url), dict(request.headers), body))
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/qwen3vl-ecg-evl"})
        if path.startswith("/api/telemetry/"):  # TRL's usage telemetry: searched like the rest
            return httpx2.Response(200, json={})
        if path == "/api/agent-harnesses":  # huggingface_hub's registry, cached on disk if served: not served
            return httpx2.Response(404, json={})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if "/commit/" in path:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    with self.lock:
                        self.uploaded[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return httpx2.Response(
                200, json={"commitUrl": "https://huggingface.co/me/x/commit/0", "commitOid": "0" * 40}
            )
        self.unexpected.append(f"{request.method} {path}")
        return httpx2.Response(404, json={"error": f"the fake Hub has no {request.method} {path}"})

    def decoded_payloads(self) -> list[bytes]:
        """Every request's URL and body, plus the base64 contents and samples inside them, decoded."""
        out = []
        for _, url, _, body in self.requests:
            out += [url.encode(), body]
            for line in body.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                for file in item.get("files", []) if isinstance(item, dict) else []:
                    if "sample" in file:
                        out.append(base64.b64decode(file["sample"]))
        return out + list(self.uploaded.values())


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(hub), event_hooks={"request": [hf_request_event_hook]}, timeout=None
        )
    )
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(default_client_factory)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, and every member of a zip file (torch.save archives) unpacked."""
    contents = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            contents[str(path.relative_to(folder))] = data
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        contents[f"{path.relative_to(folder)}::{member}"] = archive.read(member)
    return contents


def test_push_to_hub_uploads_no_token_and_writes_none_to_disk_or_logs(tmp_path, fake_hub, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    log_text = io.StringIO()
    handler = logging.StreamHandler(log_text)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("", "transformers", "huggingface_hub", "trl", "accelerate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
        out = tmp_path / "out"
        settings = {
            **COMMON,
            "max_steps": 2,
            "save_strategy": "steps",
            "save_steps": 1,
            "push_to_hub": True,
            "hub_model_id": "me/qwen3vl-ecg-evl",
            "hub_strategy": "checkpoint",  # each checkpoint folder is pushed too, as last-checkpoint/
            "hub_token": ARG_TOKEN,
            "teacher_model_init_kwargs": {"token": KWARG_TOKEN},
        }
        args = EVLDistillConfig(output_dir=str(out), **settings)
        trainer = EVLDistillTrainer(
            student[0],
            teacher_model=teacher[0],
            args=args,
            train_dataset=make_tiny_vlm_dataset(n=4),
            processing_class=student[1],
            teacher_processing_class=teacher[1],
        )
        trainer.train()
        trainer.push_to_hub(dataset_name="PULSE-ECG/ECGInstruct")
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)

    assert fake_hub.unexpected == []
    # the push really happened, with the files a token would have hidden in, and authenticated with the token
    uploaded = set(fake_hub.uploaded)
    assert {"training_args.bin", "model.safetensors", "README.md", "last-checkpoint/training_args.bin"} <= uploaded
    assert "last-checkpoint/optimizer.pt" in uploaded and "last-checkpoint/trainer_state.json" in uploaded
    commits = [r for r in fake_hub.requests if "/commit/" in r[1]]
    assert len(commits) >= 2 and all(r[2].get("authorization") == f"Bearer {ARG_TOKEN}" for r in commits)

    for payload in fake_hub.decoded_payloads():
        assert leaks(payload) == []
    on_disk = files_under(out)
    assert "training_args.bin" in on_disk and "checkpoint-2/training_args.bin" in on_disk
    for name, data in on_disk.items():
        assert leaks(data) == [], name
    assert leaks(log_text.getvalue().encode()) == []
    captured = capfd.readouterr()
    assert leaks((captured.out + captured.err).encode()) == []
    assert "Saving model checkpoint" in log_text.getvalue()  # the logs were captured

    # training_args.bin still loads, token-free, with the run's settings (resume reads trainer_state.json)
    saved = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and saved.save_steps == 1 and saved.hub_model_id == "me/qwen3vl-ecg-evl"
    assert os.environ["HF_TOKEN"] == ENV_TOKEN
