"""`python -m engine diff A B` (engine.diff): every checkpoint format it reads, identical runs exit 0, the first
difference named with exit 1, bad input one line with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine import Curriculum, CurriculumEngine, Phase, Point, Transition
from engine.__main__ import main
from policies import MinSteps, Restartable, RestartLR
from tests.utils import resume, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore:.*LeafSpec.*")


def diff(capsys, a, b) -> tuple[int, str]:
    code = main(["diff", str(a), str(b)])
    out, err = capsys.readouterr()
    return code, out + err


def perturbed_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of the torch file ``src`` with ``edit(data)`` applied."""
    data = torch.load(src, weights_only=True)
    edit(data)
    torch.save(data, dst)
    return dst


# -- chunklm -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunklm_runs(tmp_path_factory) -> Path:
    """``whole``: 2 epochs; ``split``: stopped at step 9 (mid-epoch), then resumed to the same end."""
    tmp = tmp_path_factory.mktemp("chunklm")
    assert train(tmp, "whole", epochs=2) == 0
    assert train(tmp, "split", "--stop-after", "9", epochs=2) == 0
    assert resume(tmp, "split") == 0
    return tmp


def test_a_resumed_chunklm_run_is_identical_to_the_uninterrupted_one(chunklm_runs, capsys):
    """A resumed run and the run never stopped: exit 0, and the summary counts the engine's history."""
    code, out = diff(capsys, chunklm_runs / "whole.pt", chunklm_runs / "split.pt")
    assert code == 0, out
    assert "identical:" in out and "history records" in out and "(wall times aside)" in out


def test_a_changed_weight_is_named_with_its_max_difference_and_step(chunklm_runs, tmp_path, capsys):
    """One weight moved by 0.25 in one element: exit 1, the tensor named, max |d| 0.25, the checkpoint's step."""

    def edit(data):
        name = sorted(data["trainer"]["model"])[0]
        data["trainer"]["model"][name].view(-1)[0] += 0.25

    edited = perturbed_copy(chunklm_runs / "whole.pt", tmp_path / "edited.pt", edit)
    name = sorted(torch.load(edited, weights_only=True)["trainer"]["model"])[0]
    code, out = diff(capsys, chunklm_runs / "whole.pt", edited)
    assert code == 1, out
    assert f"first difference: model.{name}: max |d| 0.25 (1 of " in out and "(at step 12)" in out


def test_a_changed_history_record_comes_first_with_its_step(chunklm_runs, tmp_path, capsys):
    """A transition recorded one step later, and a changed weight: the history record is the first difference."""

    def edit(data):
        data["trainer"]["engine"]["history"][1]["global_step"] += 1
        data["trainer"]["model"][sorted(data["trainer"]["model"])[0]].view(-1)[0] += 1

    edited = perturbed_copy(chunklm_runs / "whole.pt", tmp_path / "edited.pt", edit)
    code, out = diff(capsys, chunklm_runs / "whole.pt", edited)
    assert code == 1, out
    assert "first difference: history record 1 (cutoff_4 -> cutoff_8, epoch_end) global_step: A: 6, B: 7" in out
    assert "(1 more differences)" in out


def test_a_changed_optimizer_state_is_named(chunklm_runs, tmp_path, capsys):
    """Adam's second moment of one parameter halved: the optimizer entry is named."""

    def edit(data):
        data["trainer"]["optimizer"]["state"][0]["exp_avg_sq"] *= 0.5

    edited = perturbed_copy(chunklm_runs / "split.pt", tmp_path / "edited.pt", edit)
    code, out = diff(capsys, chunklm_runs / "whole.pt", edited)
    assert code == 1 and "first difference: optimizer.state.0.exp_avg_sq: max |d|" in out, out


# -- engine states as JSON -----------------------------------------------------------------------------------------


def tiny_engine() -> CurriculumEngine:
    from tests.utils import Always

    engine = CurriculumEngine(
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Always()], when=Point.STEP_END)])
    )
    engine.start()
    engine.step_end(loss=1.0)
    return engine


def test_engine_states_that_differ_only_in_wall_time_are_identical(tmp_path, capsys):
    """Two JSON engine states of the same decisions, their wall times apart: exit 0."""
    state = tiny_engine().state_dict()
    later = json.loads(json.dumps(state))
    for record in later["history"]:
        record["wall_time"] += 100.0
    (tmp_path / "a.json").write_text(json.dumps(state))
    (tmp_path / "b.json").write_text(json.dumps({"engine": later}))
    assert diff(capsys, tmp_path / "a.json", tmp_path / "b.json")[0] == 0


def test_a_missing_history_record_is_named(tmp_path, capsys):
    """B stops before the transition: exit 1 naming the record only A has, and its step."""
    engine = tiny_engine()
    (tmp_path / "a.json").write_text(json.dumps(engine.state_dict()))
    short = engine.state_dict()
    short["history"] = short["history"][:1]
    (tmp_path / "b.json").write_text(json.dumps(short))
    code, out = diff(capsys, tmp_path / "a.json", tmp_path / "b.json")
    assert code == 1
    assert "first difference: history record 1 (a -> b, step_end): only in A (A has 2 records, B 1) (at step 1)" in out


def test_an_own_loops_torch_file_with_nan_weights_in_both_is_identical(tmp_path, capsys):
    """``torch.save({"model": ..., "engine": ...})`` of a diverged run, twice: NaN at the same places is no difference;
    a NaN in B only is one."""
    state = tiny_engine().state_dict()
    for name, w in (("a", [float("nan"), 1.0]), ("b", [float("nan"), 1.0]), ("c", [1.0, float("nan")])):
        torch.save({"model": {"w": torch.tensor(w)}, "engine": state}, tmp_path / f"{name}.pt")
    code, out = diff(capsys, tmp_path / "a.pt", tmp_path / "b.pt")
    assert code == 0 and "(torch file)" in out and "identical: 1 tensors" in out, out
    code, out = diff(capsys, tmp_path / "a.pt", tmp_path / "c.pt")
    assert code == 1 and "first difference: model.w: max |d| nan (2 of 2 elements differ) (at step 1)" in out, out


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.pt", "does not exist"),
        (lambda tmp: (tmp / "notes.txt").write_text("hello") and tmp / "notes.txt", "is not a checkpoint this command"),
        (lambda tmp: (tmp / "x.json").write_text("{}") and tmp / "x.json", "holds no engine state"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no engine state"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make, message):
    """A missing path, an unknown format, a JSON without an engine state, an empty folder: one line, exit 2."""
    path = make(tmp_path)
    code, out = diff(capsys, path, path)
    assert code == 2
    assert out.startswith("error: ") and message in out and out.count("\n") == 1, out


# -- Lightning and the Hugging Face Trainer ------------------------------------------------------------------------


def restart_curriculum() -> Curriculum:
    return Curriculum(
        [Phase("a"), Phase("b")], [Transition("a", "b", [MinSteps(3)], actions=[RestartLR()], when=Point.STEP_END)]
    )


def lightning_run(root: Path) -> Path:
    """Two epochs of the tiny Lightning model with the callback; its checkpoint at the end."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from engine.integrations.lightning import CurriculumCallback
    from tests.lightning_tiny import Tiny
    from tests.utils import lightning_dataset

    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[CurriculumCallback(CurriculumEngine(restart_curriculum())), ModelCheckpoint(dirpath=root)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(lightning_dataset(4), batch_size=2))
    return next(root.glob("*.ckpt"))


def test_two_lightning_runs_are_identical_and_a_changed_weight_is_named(tmp_path, capsys):
    """Two runs of the same setup in two folders: exit 0; one weight changed: exit 1 naming it."""
    a, b = lightning_run(tmp_path / "a"), lightning_run(tmp_path / "b")
    code, out = diff(capsys, a, b)
    assert code == 0 and "Lightning checkpoint" in out, out

    def edit(data):
        data["state_dict"]["lin.bias"] += 0.5

    code, out = diff(capsys, a, perturbed_copy(b, tmp_path / "edited.ckpt", edit))
    assert code == 1 and "first difference: state_dict.lin.bias: max |d| 0.5 (1 of 1 elements differ)" in out, out


def hf_run(out: Path) -> Path:
    """One epoch of the tiny language model under the Trainer with the callback; its last checkpoint folder."""
    from transformers import Trainer, TrainingArguments

    from engine.integrations.hf import CurriculumCallback
    from tests.utils import TinyLM, Windows

    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = Restartable(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6))
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        save_strategy="epoch",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    callback = CurriculumCallback(CurriculumEngine(restart_curriculum()))
    Trainer(model=model, args=args, train_dataset=Windows(), optimizers=(opt, sched), callbacks=[callback]).train()
    return out / "checkpoint-6"


def test_two_hf_runs_are_identical_and_changed_optimizer_state_is_named(tmp_path, capsys):
    """Two runs of the same setup: exit 0; Adam's first moment changed in B's optimizer.pt: exit 1 naming it."""
    a, b = hf_run(tmp_path / "a"), hf_run(tmp_path / "b")
    code, out = diff(capsys, a, b)
    assert code == 0 and "Hugging Face Trainer checkpoint" in out, out
    edited = tmp_path / "edited"
    shutil.copytree(b, edited)

    def edit(data):
        data["state"][1]["exp_avg"] += 1e-3

    perturbed_copy(b / "optimizer.pt", edited / "optimizer.pt", edit)
    code, out = diff(capsys, a, edited)
    assert code == 1 and "first difference: optimizer.state.1.exp_avg: max |d| 0.001" in out, out
