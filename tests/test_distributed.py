"""Tests of DDP training: 2 CPU processes (gloo) equal one process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from pointea.config import load_config
from pointea.engine.checkpoint import load_checkpoint
from pointea.engine.distributed import (
    DistributedContext,
    GlobalBatchNorm1d,
    GlobalMaskedBatchNorm,
    convert_to_global_batchnorm,
    shard_indices,
)
from pointea.engine.train import train
from pointea.nn.encoder import MaskedBatchNorm
from pointea.plots import read_log

# Dropout off: each rank draws its own dropout masks; everything else (shuffling, augmentation,
# batch-norm statistics) is identical to a single process by construction. SGD rather than Adam:
# Adam turns round-off in near-zero gradients into full-size steps of either sign.
DDP_OVERRIDES = [
    "data.name=synthetic", "data.num_points=64", "data.num_samples=4",
    "model.preset=pointea-cls", "model.overrides.embed_dims=[16, 16]", "model.overrides.stage_dims=[]",
    "model.overrides.stage_samples=[]", "model.overrides.num_neighbors=[]",
    "model.overrides.num_blocks=1", "model.overrides.fuse_dim=32", "model.overrides.head_dims=[32]",
    "model.overrides.dropout=0.0",
    "train.epochs=2", "train.batch_size=16", "train.optimizer=sgd", "train.lr=0.05", "train.amp=none",
    "train.progress=false", "train.threads=1", "train.augmentation=[{name: scale_translate}, {name: jitter}]",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then the normal entry point."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    train(load_config(None, DDP_OVERRIDES), run_dir)


def test_two_process_ddp_matches_single_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2)

    train(load_config(None, DDP_OVERRIDES), tmp_path / "single")

    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert ddp["step"] == single["step"] == 2 * (36 // 16)
    assert ddp["model"].keys() == single["model"].keys()
    for key, value in single["model"].items():
        assert torch.allclose(ddp["model"][key].float(), value.float(), atol=1e-4), key
    for name in ("overall_accuracy", "mean_class_accuracy", "num_samples"):
        assert ddp["metrics"][name] == single["metrics"][name], name
    assert ddp["metrics"]["loss"] == pytest.approx(single["metrics"]["loss"], abs=1e-4)
    # Only rank 0 writes: one log with one record per epoch and split.
    records = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records] == [("train", 1), ("val", 1), ("train", 2), ("val", 2)]


def _budget_worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    """A DDP rank whose epochs take 0.2 s, under a time budget; rank 1's own estimate of what
    fits always differs from rank 0's, so only a shared plan keeps the ranks in step."""
    import time

    from pointea.engine import schedule
    from pointea.engine import train as train_module

    real_epoch = train_module._train_one_epoch

    def slow_epoch(*args, **kwargs):
        time.sleep(0.2)
        return real_epoch(*args, **kwargs)

    train_module._train_one_epoch = slow_epoch
    if rank == 1:
        schedule.epochs_within_budget = lambda done, planned, *args, **kwargs: done + 1
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = train(load_config(None, [*DDP_OVERRIDES, "train.epochs=30", "train.time_budget_s=1.5"]), run_dir)
    (Path(run_dir) / f"epochs-rank{rank}.json").write_text(json.dumps(result["epochs"]))


def test_ddp_ranks_share_the_time_budget_plan(tmp_path):
    run = tmp_path / "ddp"
    processes = torch.multiprocessing.spawn(_budget_worker, args=(2, _free_port(), str(run)), nprocs=2, join=False)
    deadline = time.monotonic() + 180
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:  # ranks that disagree wait for each other forever
            for process in processes.processes:
                process.kill()
            pytest.fail("the DDP ranks did not finish: they did not follow one plan")
    epochs = [json.loads((run / f"epochs-rank{rank}.json").read_text()) for rank in (0, 1)]
    plans = [record for record in read_log(run / "log.jsonl") if record["split"] == "plan"]
    assert plans and epochs[0] == epochs[1] == plans[-1]["epochs"] < 30
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == epochs[0]


def test_global_batchnorm_conversion_keeps_weights_and_single_process_behaviour():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU())
    model.append(MaskedBatchNorm(8))
    reference = [m for m in model.state_dict()]
    x = torch.randn(16, 3)
    expected = model(x)
    model[1].running_mean.zero_(), model[1].running_var.fill_(1)
    model[3].running_mean.zero_(), model[3].running_var.fill_(1)
    assert convert_to_global_batchnorm(model) == 2
    assert isinstance(model[1], GlobalBatchNorm1d) and isinstance(model[1], nn.BatchNorm1d)
    assert isinstance(model[3], GlobalMaskedBatchNorm)
    assert list(model.state_dict()) == reference
    assert torch.equal(model(x), expected)  # no process group: plain batch norm


def test_shard_indices_split_global_batch():
    batch = torch.arange(8)
    parts = [shard_indices(batch, DistributedContext(rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), batch)
    assert torch.equal(shard_indices(batch, DistributedContext()), batch)
