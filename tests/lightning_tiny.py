"""The tiny LightningModule the Lightning tests share (tests/test_integrations_lightning.py, tests/test_wsd.py), and
the loaders they train it on.

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


class PositionLoader(torch.utils.data.DataLoader):
    """A DataLoader that resumes its position in the epoch: Lightning saves its state_dict() in the
    checkpoint and hands it back to load_state_dict() (torchdata's StatefulDataLoader does the same,
    and makes its iterator when asked for one, as this one does)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.yielded, self.skip = 0, 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        self.yielded = skip
        return self._from(super().__iter__(), skip)

    def _from(self, batches, skip):
        for i, batch in enumerate(batches):
            if i >= skip:
                self.yielded += 1
                yield batch

    def state_dict(self) -> dict:
        return {"consumed": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.skip = state["consumed"] % len(self)  # an epoch's end: the next epoch starts at its first batch


class ShuffledRows(torch.utils.data.IterableDataset):
    """The rows of a TensorDataset in an order drawn from torch's global generator at each pass (a streaming
    dataset's shuffle)."""

    def __init__(self, dataset: torch.utils.data.TensorDataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        for i in torch.randperm(len(self.dataset)).tolist():
            yield self.dataset[i]
