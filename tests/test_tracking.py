"""The curriculum in the frameworks' own logs (engine.integrations.tracking), and any framework run
replayed and plotted from its checkpoint (python -m engine), against the real HF Trainer with its
TensorBoard callback and real Lightning with its CSVLogger, on CPU, with tiny models."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from transformers import Trainer, TrainingArguments

from engine import Curriculum, CurriculumEngine, Phase, Point, Transition
from engine.__main__ import main
from engine.integrations import hf, lightning
from engine.integrations.tracking import (
    calling_handler,
    curriculum_logs,
    phase_metrics,
    report_before_loggers,
    transition_text,
)
from policies import MinEpoch, MinSteps
from tests.lightning_tiny import Tiny as LightningTiny

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")

VOCAB = 16


def curriculum(steps: int = 3) -> Curriculum:
    """short -> long after `steps` steps (at a step end), long -> final at the end of epoch 2."""
    return Curriculum(
        [
            Phase("short", params={"seq_len": 6}),
            Phase("long", params={"seq_len": 12, "name": "x"}),
            Phase("final", params={"seq_len": 8}),
        ],
        [
            Transition("short", "long", [MinSteps(steps)], when=Point.STEP_END),
            Transition("long", "final", [MinEpoch(2)]),
        ],
    )


def test_logs_hold_phase_params_and_each_transition_once():
    """curriculum_logs: phase index and numeric params always; the phase name and transition text when they change."""
    engine = CurriculumEngine(curriculum())
    engine.start()
    first, cursor = curriculum_logs(engine, None)
    assert first == {
        "curriculum/phase": 0.0,
        "curriculum/in/short": 1.0,
        "curriculum/in/long": 0.0,
        "curriculum/in/final": 0.0,
        "curriculum/seq_len": 6.0,
        "curriculum/transitions": 0.0,
        "curriculum/last_transition_step": 0.0,
        "curriculum/next/long/MinSteps/global_step": 0.0,
        "curriculum/next/long/MinSteps/min_steps": 3.0,
        "curriculum/phase_name": "short",
    }
    for _ in range(3):
        engine.step_end(loss=1.0)
    values, cursor = curriculum_logs(engine, cursor)
    assert (
        values["curriculum/phase"] == 1.0 and values["curriculum/seq_len"] == 12.0 and "curriculum/name" not in values
    )
    assert values["curriculum/phase_name"] == "long" and values["curriculum/last_transition_step"] == 3.0
    assert values["curriculum/transition"] == "short -> long at step 3 (epoch 0, step_end), decided by MinSteps(3)"
    engine.step_end(loss=1.0)
    again, _ = curriculum_logs(engine, cursor)
    assert "curriculum/transition" not in again and "curriculum/phase_name" not in again
    assert phase_metrics(engine) == {k: v for k, v in again.items()}
    engine.force("final", reason="by me")
    assert transition_text(engine.history[-1]) == "long -> final at step 4 (epoch 0, manual), by hand: by me"


# -- Hugging Face ---------------------------------------------------------------------------------------


def test_hf_callback_goes_before_the_reporters_and_warns_where_it_cannot_find_them(caplog):
    """The handler is the caller of the hook (the Trainer's CallbackHandler); in it the callback moves just
    before the first report_to callback; anything else than that handler leaves the order and warns once."""
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

    class Reporter(TensorBoardCallback):  # a report_to callback without tensorboard's writer
        def __init__(self) -> None:
            pass

    class Caller:
        def call(self, hook):
            return hook()

    caller = Caller()
    assert caller.call(lambda: calling_handler()) is caller
    mine, flow, reporter = hf.CurriculumCallback(CurriculumEngine(curriculum())), DefaultFlowCallback(), Reporter()
    handler = CallbackHandler([flow, reporter, mine], None, None, None, None)
    report_before_loggers(mine, handler)
    assert handler.callbacks == [flow, mine, reporter]
    report_before_loggers(mine, handler)  # a resumed train(): already in place
    assert handler.callbacks == [flow, mine, reporter]
    other = CallbackHandler([flow, reporter], None, None, None, None)  # a handler it is not in
    for where in (caller, other):
        caplog.clear()
        report_before_loggers(mine, where)
        assert other.callbacks == [flow, reporter] and "could not find the Trainer's callbacks" in caplog.text


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.emb(input_ids))  # (B, T, V)
        return {"loss": nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1)), "logits": logits}


class Windows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i):
        x = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": x, "labels": (x * 3 + 1) % VOCAB}


def _tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(files[0]), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


def test_hf_trainer_logs_the_curriculum_to_tensorboard_and_its_checkpoint_replays_and_plots(tmp_path, capsys):
    """report_to="tensorboard": the event file holds the phase per logged step and the transition's text;
    the checkpoint folder replays with its own curriculum exactly, under a grid, and plots."""
    pytest.importorskip("tensorboard")
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        logging_steps=1,
        save_strategy="epoch",
        eval_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    Trainer(model=TinyLM(), args=args, train_dataset=Windows(), callbacks=[hf.CurriculumCallback(engine)]).train()
    assert [(r.source, r.dest, r.global_step) for r in engine.history] == [
        (None, "short", 0),
        ("short", "long", 3),
        ("long", "final", 6),
    ]

    events = _tensorboard(tmp_path / "out")
    phase = {
        e.step: e.value for e in events.Scalars("train/curriculum/phase")
    }  # step 9 twice: its log and the run's summary
    assert phase == {s: 0.0 if s < 3 else 1.0 if s <= 6 else 2.0 for s in range(1, 10)}
    assert [(e.step, e.value) for e in events.Scalars("train/curriculum/seq_len")][2:4] == [(3, 12.0), (4, 12.0)]
    text = [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in events.Tensors("train/curriculum/transition/text_summary")
    ]
    assert text == [
        (3, "short -> long at step 3 (epoch 0, step_end), decided by MinSteps(3)"),
        (7, "long -> final at step 6 (epoch 2, epoch_end), decided by MinEpoch(2)"),
    ]

    checkpoint = tmp_path / "out" / "checkpoint-9"
    assert (
        main(["replay", str(checkpoint), "--curriculum", "tests.test_tracking:curriculum", "--grid", "steps=2,3,5"])
        == 0
    )
    out = capsys.readouterr().out
    assert "9 steps, 3 epoch ends recorded" in out and "note:" not in out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith(("recorded", "steps="))}
    assert rows["recorded"][1:] == ["3", "MinSteps", "6", "MinEpoch"]
    assert rows["steps=3"][1:] == ["3", "MinSteps", "6", "MinEpoch", "-"]
    assert rows["steps=2"][1:] == ["2", "MinSteps", "*", "?", "step", "2"]
    assert rows["steps=5"][1:] == [">", "3", "?", "step", "3"]
    assert (
        main(["plot", str(tmp_path / "out"), "--out", str(tmp_path / "hf.png")]) == 0
    )  # the output folder: its last checkpoint
    assert (tmp_path / "hf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- Lightning -----------------------------------------------------------------------------------------


class Tiny(LightningTiny):
    """The shared tiny module with a plain optimizer (no scheduler for the callback to wrap), logging its loss."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_lightning_logs_the_curriculum_to_its_csv_logger_and_its_checkpoint_replays_and_plots(tmp_path, capsys):
    """CSVLogger: one row per step holding the step's own self.log values, the phase, its params and the
    transitions so far (one point per tag and step); TensorBoard gets the transition's text; the .ckpt
    (the callbacks entry holds the engine state) replays exactly and plots."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[lightning.CurriculumCallback(engine), ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")],
        logger=[CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(
        Tiny(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    )
    assert [(r.source, r.dest, r.global_step) for r in engine.history] == [
        (None, "short", 0),
        ("short", "long", 3),
        ("long", "final", 6),
    ]

    with open(next((tmp_path / "csv").rglob("metrics.csv")), newline="") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if r.get("curriculum/phase")]
    phases = [(int(r["step"]), float(r["curriculum/phase"])) for r in rows]
    # a row per step, Lightning's 0-based step numbers; the transition at epoch 2's end comes with step 6,
    # the first in the new phase
    assert phases == [(0, 0.0), (1, 0.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0), (6, 2.0), (7, 2.0), (8, 2.0)]
    # the step's own self.log values carry the same step numbers: a join on "step" lines them up
    assert [int(r["step"]) for r in every if r.get("train_loss")] == [step for step, _ in phases]
    assert [
        float(rows[6][k]) for k in ("curriculum/transitions", "curriculum/last_transition_step", "curriculum/seq_len")
    ] == [2.0, 6.0, 8.0]
    assert float(rows[2]["curriculum/seq_len"]) == 12.0
    assert [(rows[i]["curriculum/in/short"], rows[i]["curriculum/in/final"]) for i in (0, 6)] == [
        ("1.0", "0.0"),
        ("0.0", "1.0"),
    ]
    events = _tensorboard(tmp_path / "tb")
    text = [
        (e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("curriculum/transition/text_summary")
    ]
    assert text == [
        (2, "short -> long at step 3 (epoch 0, step_end), decided by MinSteps(3)"),
        (6, "long -> final at step 6 (epoch 2, epoch_end), decided by MinEpoch(2)"),
    ]

    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert main(["replay", str(ckpt), "--curriculum", "tests.test_tracking:curriculum"]) == 0
    out = capsys.readouterr().out
    assert "['callbacks']" in out and "note:" not in out and "9 steps, 3 epoch ends recorded" in out
    assert main(["plot", str(ckpt), "--out", str(tmp_path / "pl.png")]) == 0
    assert (tmp_path / "pl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
