"""The 2-process Lightning run that tests/test_integrations_lightning.py launches.

    python tests/ddp_lightning.py OUT_DIR [CHECKPOINT]

``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` (gloo): Lightning starts rank 1 by running
this script again. Each rank's data differ: rank 0's targets are a linear function of the inputs
(learnable), rank 1's carry a large fixed noise, so the ranks' losses part at once. 2 epochs of 7
batches with ``accumulate_grad_batches=2``: 4 optimizer steps an epoch, the last one a single
micro-batch. The model drops its inputs out, each rank from its own seed, and the loader restores its position, so a
resume is exact only when each rank gets its own random state back. The run writes a checkpoint every 2 steps
(``OUT_DIR/ckpt/step=<S>.ckpt``, step 2 mid-epoch); given CHECKPOINT, it resumes from it. Each rank writes
``OUT_DIR/rank<R>.json``: the losses its engine saw, its own ``training_step`` losses with the optimizer step each
belongs to, the engine's history and the final weights.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from engine import Curriculum, CurriculumEngine, Phase, Point, Transition
from engine.integrations.lightning import CurriculumCallback
from policies import MetricBelow
from tests.lightning_tiny import PositionLoader

BATCHES, ACCUM, EPOCHS = 7, 2, 2
THRESHOLD = 4.0  # the mean over ranks crosses it at step 5, rank 0's own loss at step 1, rank 1's at step 2


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.drop = nn.Linear(4, 1), nn.Dropout(0.1)
        self.seen: list[tuple[int, float]] = []  # (the optimizer step it belongs to, the loss)

    def setup(self, stage: str) -> None:
        torch.manual_seed(1 + self.global_rank)  # each rank its own dropout masks, from the same seed at every launch

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.lin(self.drop(x)), y)
        self.seen.append((self.trainer.global_step + 1, loss.item()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class RankData(torch.utils.data.Dataset):
    """The same inputs on both ranks; rank 0's targets are their sum, rank 1's add a fixed noise of scale 3."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(2 * 2 * BATCHES, 4, generator=g)  # 2 ranks x BATCHES batches of 2
        self.noise = 3 * torch.randn(len(self.x), 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        y = self.x[i].sum().reshape(1)
        return self.x[i], y + self.noise[i] if torch.distributed.get_rank() == 1 else y


def curriculum() -> Curriculum:
    return Curriculum(
        [Phase("a"), Phase("b")], [Transition("a", "b", [MetricBelow("loss", THRESHOLD)], when=Point.STEP_END)]
    )


def main(out: Path, ckpt: str | None) -> None:
    engine = CurriculumEngine(curriculum())
    seen, step_end = [], engine.step_end

    def spy(loss, **metrics):
        seen.append(loss)
        return step_end(loss=loss, **metrics)

    engine.step_end = spy
    module = Regressor()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", timeout=timedelta(seconds=120)),
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUM,
        callbacks=[
            CurriculumCallback(engine),
            ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}"),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, PositionLoader(RankData(), batch_size=2), ckpt_path=ckpt)
    record = {
        "engine": seen,
        "own": module.seen,
        "history": [{k: v for k, v in r.items() if k != "wall_time"} for r in engine.history.to_dicts()],
        "weights": [p.tolist() for p in module.lin.parameters()],
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
