"""Checkpoint cost: save time, load-and-resume time and file size, at the demo and seed configs.

    python benchmarks/bench_checkpoint.py

Demo config: a few real training steps first (so the optimizer state exists), then the
checkpoint the command line writes (atomic save with fsync), and the time to load it with
weights_only=True and restore a fresh Trainer from it (building the model included). Seed config
(d_model 512, 6 layers): construct and save only, no training (the optimizer state is filled by
one step on one window so the file has its real size). Median of 5 repeats; prints a Markdown table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chunklm import ByteCorpus  # noqa: E402
from chunklm.train import Trainer  # noqa: E402
from runs.checkpoint import Checkpoint  # noqa: E402
from runs.settings import Settings  # noqa: E402


def checkpoint(trainer: Trainer, settings: Settings) -> Checkpoint:
    clock = trainer.clock
    return Checkpoint(settings=settings, trainer=trainer.state_dict(), global_step=clock.global_step, epoch=clock.epoch)


def measure(preset: str, train_steps: int) -> dict:
    settings = Settings.fresh(preset, {})
    config = settings.to_config()
    corpus = ByteCorpus(None, seq_len=config.model.seq_len, chunk=config.model.chunk)
    trainer = Trainer(config, corpus=corpus)
    trainer.start()
    if train_steps:
        for _ in range(train_steps):
            trainer.train_step()
    else:  # one step on one window so AdamW's moments exist, without a real training step's cost
        loss, _ = trainer.model.loss(corpus.train_batch(1, seed=0, epoch=0, step=0))
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        for _ in range(5):
            t0 = time.perf_counter()
            checkpoint(trainer, settings).save(path)
            saves.append(time.perf_counter() - t0)
        size = path.stat().st_size
        for _ in range(5):
            t0 = time.perf_counter()
            data = Checkpoint.load(path)
            fresh = Trainer(config, corpus=corpus)
            fresh.load_state_dict(data.trainer)
            loads.append(time.perf_counter() - t0)
    return {
        "preset": preset,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "save_s": statistics.median(saves),
        "load_resume_s": statistics.median(loads),
        "size_mb": size / 1e6,
    }


def main() -> None:
    rows = [measure("demo", train_steps=5), measure("seed", train_steps=0)]
    print("| config | parameters | file size | save (atomic, fsync) | load + restore a Trainer |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['size_mb']:.1f} MB | {r['save_s'] * 1000:.0f} ms | "
            f"{r['load_resume_s'] * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()
