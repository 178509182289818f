"""The tiny LightningModule the Lightning tests share (tests/test_integrations_lightning.py, tests/test_wsd.py).

A module of its own so that tests/utils.py does not import Lightning for every test.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from policies import Restartable


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.lin(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.lin(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        sched = Restartable(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
