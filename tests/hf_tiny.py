"""What the Hugging Face Trainer tests share (tests/test_integrations_hf.py, tests/test_exactness_matrix_hf.py).

A module of its own so that tests/utils.py does not import transformers for every test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from tests.utils import HF_VOCAB, TinyLM, Windows


def crop(inputs, params):
    """prepare_inputs: cut each training micro-batch to the phase's sequence length."""
    n = params["seq_len"]
    return {k: v[:, :n] if k in ("input_ids", "labels") else v for k, v in inputs.items()}


class DropoutLM(TinyLM):
    """TinyLM with dropout on its embeddings (p=0.5): each training forward draws from torch's global generator."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.drop(self.emb(input_ids)))  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, HF_VOCAB), labels.reshape(-1))
        return {"loss": loss, "logits": logits}


class StreamedWindows(torch.utils.data.IterableDataset):
    """The windows of Windows() as a stream, in an order drawn from torch's global generator at each pass."""

    def __iter__(self):
        windows = Windows()
        for i in torch.randperm(len(windows)).tolist():
            yield windows[i]


class InOrderTrainer(Trainer):
    """A Trainer that reads the training set in order (transformers 5 has train_sampling_strategy="sequential";
    4.48, the floor, has no such argument)."""

    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)


class SaveAtEpochEnd(TrainerCallback):
    """Asks for a save after each epoch end (as save_strategy="epoch" does), and keeps a copy of every checkpoint:
    at an epoch's last step the Trainer writes checkpoint-N twice, before and after the epoch end."""

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        kept = Path(args.output_dir) / "kept" / f"step-{state.global_step}"
        if kept.exists():
            kept = kept.with_name(f"epoch-{state.global_step}")
        shutil.copytree(folder, kept)

    def on_evaluate(self, args, state, control, **kwargs):
        # After the callback added this epoch end's metrics to the checkpoint written at its last step, before the
        # epoch save overwrites that folder (a run saving at steps only keeps it as it is now).
        kept = Path(args.output_dir) / "kept" / f"step-{state.global_step}"
        if kept.exists():
            shutil.copy(Path(args.output_dir) / f"checkpoint-{state.global_step}" / "trainer_state.json", kept)
