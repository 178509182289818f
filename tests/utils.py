"""Shared fakes for the engine tests: small guards and actions with readable reprs; a launcher of several processes;
tiny ``chunklm train`` runs and the comparison of two runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest


class LossBelow:
    """Holds when the step's loss is below ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, ctx) -> bool:
        return ctx.metric("loss") < self.value

    def evidence(self, ctx) -> dict:
        return {"loss": ctx.metric("loss"), "value": self.value}

    def __repr__(self) -> str:
        return f"LossBelow({self.value})"


class Always:
    def __call__(self, ctx) -> bool:
        return True

    def __repr__(self) -> str:
        return "Always()"


class Never:
    def __call__(self, ctx) -> bool:
        return False

    def __repr__(self) -> str:
        return "Never()"


class EpochAtLeast:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, ctx) -> bool:
        return ctx.clock.epoch >= self.n

    def __repr__(self) -> str:
        return f"EpochAtLeast({self.n})"


class CountBelow:
    """Stateful guard: counts observed losses below ``value`` since its phase began; holds at ``need``."""

    def __init__(self, value: float, need: int) -> None:
        self.value, self.need, self.count = value, need, 0

    def observe(self, ctx) -> None:
        if ctx.metric("loss") < self.value:
            self.count += 1

    def reset(self) -> None:
        self.count = 0

    def __call__(self, ctx) -> bool:
        return self.count >= self.need

    def evidence(self, ctx) -> dict:
        return {"count": self.count, "need": self.need}

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.count = d["count"]

    def __repr__(self) -> str:
        return f"CountBelow({self.value}, need={self.need})"


class Log:
    """Action that appends its name to a shared list (the call order) and returns an effect."""

    def __init__(self, name: str, calls: list, requires: tuple = ()) -> None:
        self.name, self.calls, self.requires = name, calls, requires

    def __call__(self, ctx) -> dict:
        self.calls.append(self.name)
        return {"name": self.name, "step": ctx.clock.global_step}

    def __repr__(self) -> str:
        return f"Log({self.name!r})"


class FakeModel:
    """Stands in for ChunkLM: records set_cutoff calls and exposes .cutoff (513 bins when full)."""

    def __init__(self, cutoff=513):
        self.cutoff, self.calls = cutoff, []

    def set_cutoff(self, n, preserve=True):
        self.calls.append((n, preserve))
        self.cutoff = 513 if n is None else n


class ValBelow:
    """Holds when the epoch's ``val`` metric is below ``value``; declares the metric it reads."""

    metrics = ("val",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, ctx) -> bool:
        return ctx.metric("val") < self.value

    def __repr__(self) -> str:
        return f"ValBelow({self.value})"


def sources(tmp: Path) -> list[str]:
    """`--data` items of two named sources (`chunklm train --data NAME=PATH`): the stdlib json package
    (general), and textwrap.py (target)."""
    (tmp / "target").mkdir(exist_ok=True)
    shutil.copy(Path(textwrap.__file__), tmp / "target" / "textwrap.py")
    return [f"general={DATA}", f"target={tmp / 'target'}"]


class Both:
    """A user's AND of guards: no state methods of its own, and not an ``engine.protocols.AllOf`` (the engine
    opens it through ``guards``, and weighs it as one guard for the deciding guard)."""

    def __init__(self, *guards):
        self.guards = guards

    def __call__(self, ctx):
        return all(g(ctx) for g in self.guards)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(map(repr, self.guards))})"


class CrashIf:
    """Guard that raises when the loop passes ``crash=...`` (a user guard with a bug), else never holds."""

    def __call__(self, ctx) -> bool:
        if "crash" in ctx.metrics:
            raise RuntimeError("guard crashed")
        return False

    def __repr__(self) -> str:
        return "CrashIf()"


class ExplodeIf:
    """Action that raises when the loop passed ``explode=...`` at the point it runs (a user action with a bug)."""

    def __init__(self, calls: list | None = None) -> None:
        self.calls = calls if calls is not None else []

    def __call__(self, ctx) -> dict:
        if "explode" in ctx.metrics:
            raise ValueError("action exploded")
        self.calls.append("explode_if")
        return {"ok": 1}

    def __repr__(self) -> str:
        return "ExplodeIf()"


REPO = Path(__file__).resolve().parent.parent
_RANK_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # every process of the group has ended
        pass


def at_a_terminal() -> None:
    """``preexec_fn`` of a child that stands for a command typed at a terminal: SIGINT and SIGHUP at their
    defaults, even when the tests run under ``nohup`` or in a background job (whose children inherit both
    ignored, and Python keeps an inherited ignored SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def launch(cmd: list[str], timeout: float) -> str:
    """Run a multi-process launch (torchrun, or a script Lightning re-runs per rank) to its end and return its output.

    Fails the test if it exits non-zero or runs past ``timeout`` seconds; then every process it
    started is ended (a hung collective would otherwise wait for the backend's own timeout).
    """
    env = {
        name: value for name, value in os.environ.items() if name not in _RANK_VARIABLES
    }  # each launch picks a free port
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)  # until every process holding the pipe has ended
    except subprocess.TimeoutExpired:
        # torchrun ends its workers (each started with setsid) within its 30 s grace; Lightning's ranks share this group
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            out = ""
        pytest.fail(f"{' '.join(cmd)} did not end within {timeout} s:\n{out[-6000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out[-6000:]}")
    return out


# -- tiny ``chunklm train`` runs, shared by test_cli, test_compat and test_distributed ----------------

DATA = str(Path(json.__file__).parent)  # the stdlib json package: ten real source files

# Tiny model, two micro-batches per step (TINY_MODEL: no curriculum flags); threshold 1.0 makes
# every full window a plateau, so the curriculum raises at each allowed epoch boundary and the
# restored engine state is exercised.
TINY_MODEL = [
    *["--data", DATA, *"--seq-len 32 --kernel-len 8 --chunk 4 --d-model 16 --n-layers 1".split()],
    *"--batch-size 2 --accum-steps 2 --steps-per-epoch 6".split(),
]
TINY = [
    *TINY_MODEL,
    *"--cutoffs 4,8,16 --min-epochs 1,1,2 --plateau-window 4 --plateau-threshold 1.0 --log-every 0".split(),
]


def train(tmp: Path, name: str, *extra: str, epochs: int | None = 3) -> int:
    from runs.cli import main

    args = ["train", *TINY, "--ckpt", str(tmp / f"{name}.pt"), *extra]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    return main(args)


def resume(tmp: Path, name: str, *extra: str) -> int:
    from runs.cli import main

    return main(["train", "--ckpt", str(tmp / f"{name}.pt"), "--resume", *extra])


FLOAT_COLUMNS = ("loss", "lr", "avg_loss", "val_bpb", "val_bpb_mean")


def rounded(rows: list[dict], digits: int | None) -> list[dict]:
    """CSV rows with their float columns rounded to ``digits`` significant digits (None: as written)."""
    if digits is None:
        return rows
    return [{k: f"{float(v):.{digits}g}" if k in FLOAT_COLUMNS else v for k, v in row.items()} for row in rows]


def assert_same_run(tmp: Path, a: str, b: str, csv_digits: int | None = None) -> None:
    """Bit-identical weights and optimizer state; same per-step losses and LRs; same history.

    ``csv_digits``: compare the CSVs' floats to that many significant digits (runs of the first
    release wrote 6; today's runs write each float exactly)."""
    import torch

    from runs.artifacts import RunFiles, read_csv
    from runs.checkpoint import load_checkpoint

    ca, cb = load_checkpoint(tmp / f"{a}.pt"), load_checkpoint(tmp / f"{b}.pt")
    ta, tb = ca.trainer, cb.trainer
    assert ta["model"].keys() == tb["model"].keys()
    for key in ta["model"]:
        assert torch.equal(ta["model"][key], tb["model"][key]), key
    for pa, pb in zip(ta["optimizer"]["state"].values(), tb["optimizer"]["state"].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert ta["schedule"] == tb["schedule"]
    fa, fb = RunFiles(tmp / f"{a}.pt"), RunFiles(tmp / f"{b}.pt")
    steps_a, steps_b = rounded(read_csv(fa.steps), csv_digits), rounded(read_csv(fb.steps), csv_digits)
    assert len(steps_a) == ca.global_step and steps_a == steps_b
    assert rounded(read_csv(fa.epochs), csv_digits) == rounded(read_csv(fb.epochs), csv_digits)
    ha, hb = fa.read_history(), fb.read_history()
    assert [r.comparable() for r in ha] == [r.comparable() for r in hb]
    return ha


# -- tiny models and data for the framework integrations (tests/test_integrations_*.py, tests/test_readme.py) --------

import torch  # noqa: E402
from torch import nn  # noqa: E402

HF_VOCAB, HF_LENGTH, HF_WINDOWS = 16, 12, 24


class TinyLM(nn.Module):
    """Embedding and a linear head; returns its loss the way Hugging Face models do. Records each training forward's
    (loss sum, labels)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(HF_VOCAB, 8), nn.Linear(8, HF_VOCAB)
        self.seen: list[tuple[float, int]] = []

    def forward(self, input_ids, labels=None):
        logits = self.head(self.emb(input_ids))  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, HF_VOCAB), labels.reshape(-1))
        if self.training:
            self.seen.append((loss.item() * labels.numel(), labels.numel()))
        return {"loss": loss, "logits": logits}


class TokenCountLM(TinyLM):
    """Divides its loss sum by the Trainer's num_items_in_batch (the step's tokens, over all ranks), as Hugging
    Face language models do."""

    def forward(self, input_ids, labels=None, num_items_in_batch=None, **kwargs):
        out = super().forward(input_ids, labels)
        if num_items_in_batch is not None:
            out["loss"] = out["loss"] * labels.numel() / num_items_in_batch
        return out


class Windows(torch.utils.data.Dataset):
    """HF_WINDOWS windows of HF_LENGTH tokens; labels (3 x + 1) mod V, learnable."""

    def __len__(self) -> int:
        return HF_WINDOWS

    def __getitem__(self, i):
        x = torch.randint(0, HF_VOCAB, (HF_LENGTH,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": x, "labels": (x * 3 + 1) % HF_VOCAB}


def lightning_dataset(batches: int = 10) -> torch.utils.data.TensorDataset:
    """2 * batches rows of 4 features; the target is their sum (batch_size=2: `batches` batches)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batches, 4, generator=g)
    return torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))


def tensors(state) -> list:
    """Every tensor of a (nested) state dict, in order, for comparing bit for bit."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors(v)]
    return [torch.tensor(float(state))] if isinstance(state, (int, float)) and not isinstance(state, bool) else []


def same_tensors(a, b) -> bool:
    """Two (nested) states hold the same tensors, bit for bit."""
    ta, tb = tensors(a), tensors(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb))


def record_calls(engine) -> list:
    """Record every step_end (step, loss, lr) and epoch_end (epoch, metrics) a callback makes on ``engine``."""
    calls, step_end, epoch_end = [], engine.step_end, engine.epoch_end

    def on_step(loss, **metrics):
        calls.append(("step", engine.clock.global_step + 1, loss, metrics.get("lr")))
        return step_end(loss=loss, **metrics)

    def on_epoch(**metrics):
        calls.append(("epoch", engine.clock.epoch + 1, metrics))
        return epoch_end(**metrics)

    engine.step_end, engine.epoch_end = on_step, on_epoch
    return calls


# -- the exactness matrices (tests/test_exactness_matrix_*.py) ----------------------------------------


def matrix_cells(axes: dict):
    """One pytest param per cell of the cross product of ``axes`` (a dict ``{axis: values}``)."""
    import itertools

    for values in itertools.product(*axes.values()):
        cell = dict(zip(axes, values))
        yield pytest.param(cell, id="-".join(f"{k}={v}" for k, v in cell.items()))


def run_cache(tmp_path_factory, make):
    """``get(run)``: ``(folder, *make(folder, run))`` for an uninterrupted run, made when first asked for and
    shared by the cells that differ only in their checkpoint."""
    runs = {}

    def get(run):
        if run not in runs:
            folder = tmp_path_factory.mktemp("full")
            runs[run] = (folder, *make(folder, run))
        return runs[run]

    return get
