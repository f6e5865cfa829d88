"""The reference PyTorch weather project's CNN trained with PyTorch DDP over gloo: the peer that
`hvdweather-train` is measured against, on the same images, split and per-worker batch.

    python -m hvdweather.bench.torch_ddp --data DIR --out RUN_DIR --workers 2 --batch-size 32 \
        --epochs 4 --image-size 256 --seed 42 [--threads-per-worker 1] [--lr 0.01]

It starts its N processes itself (torch.multiprocessing, gloo on 127.0.0.1). Each rank decodes its shard
of the images once, into memory, with Pillow (RGB, bilinear resize), so epochs 2+ measure training
compute like hvdweather's in-memory cache. Writes RUN_DIR/metrics.jsonl (one line per epoch, the same
fields as hvdweather's), RUN_DIR/config.json and RUN_DIR/ranks.json (a weight digest per rank).
PyTorch is an optional extra: `pip install -e .[torch]`.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from hvdweather.data.decode import load_rgb
from hvdweather.data.discovery import discover
from hvdweather.data.sharding import shard_of, steps_per_epoch
from hvdweather.data.split import stratified_split
from hvdweather.geometry import WEATHER_CNN_BLOCKS
from hvdweather.host import available_cores, versions

MISSING_TORCH = "torch-ddp needs PyTorch: pip install -e .[torch]"
VAL_SPLIT = TEST_SPLIT = 0.15  # hvdweather-train's defaults, so both train on the same images


def build_torch_cnn(num_classes: int, image_size: int = 256):
    """Conv-BN-tanh-AvgPool x4 -> Dropout 0.32 -> Linear 84 tanh -> Linear, PyTorch's default init
    (108,517 parameters at 256 px and 11 classes)."""
    from torch import nn

    layers, channels, size = [], 3, image_size
    for filters, kernel, pool in WEATHER_CNN_BLOCKS:
        layers += [nn.Conv2d(channels, filters, kernel), nn.BatchNorm2d(filters), nn.Tanh()]
        size = size - kernel + 1
        if pool:
            layers.append(nn.AvgPool2d(pool))
            size //= pool
        channels = filters
    layers += [nn.Flatten(), nn.Dropout(0.32), nn.Linear(channels * size * size, 84), nn.Tanh(),
               nn.Linear(84, num_classes)]
    return nn.Sequential(*layers)


def load_shard(paths: tuple[str, ...], labels: tuple[int, ...], image_size: int, rank: int, world: int):
    """This rank's files (every world-th, like tf.data's shard) decoded once: uint8 NCHW, int64 labels."""
    import torch

    mine = shard_of(range(len(paths)), world, rank)
    images = np.stack([load_rgb(paths[i], image_size) for i in mine]) if len(mine) else \
        np.zeros((0, image_size, image_size, 3), np.uint8)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            torch.tensor([labels[i] for i in mine], dtype=torch.int64))


def _reduce_sums(*values: float) -> list[float]:
    """Sum scalars over ranks (one all-reduce)."""
    import torch
    import torch.distributed as dist

    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def average_buffers(model) -> None:
    """Average BatchNorm running statistics over ranks at the end of an epoch, as hvdweather does:
    each rank's last forward updated them from its own batch, so they differ until averaged."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)


def train_epoch(ddp, optimizer, shard: tuple, batch_size: int, steps: int, generator) -> tuple[float, float, float]:
    """`steps` SGD steps on a fresh shuffle of this rank's shard, (images, labels) as load_shard returns
    them; (loss sum, correct, train seconds)."""
    import torch
    import torch.nn.functional as F

    images, labels = shard
    ddp.train()
    order = torch.randperm(len(labels), generator=generator)[:steps * batch_size]
    loss_sum = correct = 0.0
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        x = images[index].float().div_(255.0)  # uint8 cache -> [0, 1], as hvdweather's normalise
        y = labels[index]
        logits = ddp(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP: gradients averaged over ranks here (gloo all-reduce)
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += float((logits.argmax(1) == y).sum())
    return loss_sum, correct, time.perf_counter() - start


def evaluate(model, images, labels, batch_size: int) -> tuple[float, float, float]:
    """(loss sum, correct, count) over this rank's validation shard, eval mode."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = images[start:start + batch_size].float().div_(255.0)
            y = labels[start:start + batch_size]
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
    return loss_sum, correct, float(len(labels))


def weights_digest(model) -> str:
    """SHA-256 over every parameter and buffer: equal digests = identical models."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _epoch_row(epoch: int, sums: list[float], train_s: float, epoch_s: float, args, steps: int,
               world: int) -> dict:
    """One metrics.jsonl line, the fields (and meanings) of hvdweather's EpochMetrics."""
    loss_sum, correct, val_loss_sum, val_correct, val_count = sums
    trained = steps * args.batch_size * world
    row = {"epoch": epoch, "loss": loss_sum / trained, "accuracy": correct / trained}
    if val_count:
        row |= {"val_loss": val_loss_sum / val_count, "val_accuracy": val_correct / val_count}
    return row | {"lr": args.lr * world, "epoch_time_s": epoch_s, "train_time_s": train_s,
                  "images_per_s": trained / train_s if train_s > 0 else 0.0, "world_size": world,
                  "processes": world, "strategy": "torch-ddp", "global_batch_size": args.batch_size * world}


def _train(rank: int, world: int, args, split, steps: int) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    train = load_shard(split.paths["train"], split.labels["train"], args.image_size, rank, world)
    val_x, val_y = load_shard(split.paths["val"], split.labels["val"], args.image_size, rank, world)
    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP broadcasts rank 0's anyway)
    model = build_torch_cnn(len(split.class_names), args.image_size)
    ddp = DistributedDataParallel(model)  # DDP: gloo all-reduce of the gradients in backward
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr * world, momentum=0.9)  # LR x workers
    torch.manual_seed(args.seed + rank)  # dropout masks differ per rank, as they would per GPU
    generator = torch.Generator().manual_seed(args.seed + rank)
    metrics = Path(args.out) / "metrics.jsonl"
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        loss_sum, correct, train_s = train_epoch(ddp, optimizer, train, args.batch_size, steps, generator)
        average_buffers(model)
        sums = _reduce_sums(loss_sum, correct, *evaluate(model, val_x, val_y, args.batch_size))
        if rank == 0:
            _append_jsonl(metrics, _epoch_row(epoch, sums, train_s, time.perf_counter() - start, args,
                                              steps, world))
    gathered = [None] * world
    dist.all_gather_object(gathered, {"rank": rank, "n_train_files": len(train[1]),
                                      "weights_sha256": weights_digest(model)})
    if rank == 0:
        (Path(args.out) / "ranks.json").write_text(json.dumps(gathered, indent=2) + "\n")


def _worker(rank: int, args, split, steps: int) -> None:
    """One DDP process: one thread (or --threads-per-worker), gloo over loopback."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads_per_worker)
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    _train(rank, args.workers, args, split, steps)
    # Every rank past its last collective before any tears gloo down. A failing rank skips all this and
    # ends the spawn with its error.
    dist.barrier()
    dist.destroy_process_group()
    # Then leave without the interpreter's teardown: torch 2.13's gloo can still hold worker threads then,
    # and a joinable std::thread destroyed at exit aborts the process ("terminate called without an active
    # exception", SIGABRT; twice in full test runs even after the barrier; pytorch/pytorch#179291 describes
    # the same teardown race). Everything this rank writes is written and closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hvdweather.bench.torch_ddp",
                                     description="The reference CNN trained with PyTorch DDP (gloo).")
    parser.add_argument("--data", required=True, help="Class-folder data set.")
    parser.add_argument("--out", required=True, help="Run directory for metrics.jsonl and config.json.")
    parser.add_argument("--workers", type=int, default=2, help="DDP processes.")
    parser.add_argument("--batch-size", type=int, default=32, help="Per-worker batch size.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42, help="Split, shuffle and initial weights.")
    parser.add_argument("--threads-per-worker", type=int, default=0, help="0 = cores // workers (>= 1).")
    parser.add_argument("--lr", type=float, default=0.01, help="Base LR for one worker; scaled by workers.")
    args = parser.parse_args(argv)
    for name in ("workers", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads_per_worker <= 0:
        args.threads_per_worker = max(1, available_cores() // args.workers)
    return args


def run(args: argparse.Namespace) -> Path:
    """Split as hvdweather does, write config.json, spawn the DDP processes; returns the run directory."""
    import torch.multiprocessing as mp

    split = stratified_split(discover(args.data), VAL_SPLIT, TEST_SPLIT, args.seed)
    steps = steps_per_epoch(split.size("train"), args.workers, args.batch_size)  # equal on every rank
    if steps < 1:
        raise SystemExit(f"--batch-size {args.batch_size}: a worker's training shard has only "
                         f"{split.size('train') // args.workers} image(s); lower --batch-size")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # rows are appended per epoch: start afresh
    config = {"args": vars(args), "strategy": "torch-ddp", "steps_per_epoch": steps,
              "subset_sizes": {s: split.size(s) for s in ("train", "val", "test")}, "versions": versions()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                      OMP_NUM_THREADS=str(args.threads_per_worker))
    mp.spawn(_worker, args=(args, split, steps), nprocs=args.workers, join=True)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        print(MISSING_TORCH, file=sys.stderr)
        sys.exit(2)
    run(args)


if __name__ == "__main__":
    main()
