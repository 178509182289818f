"""The Hugging Face Trainer integration (engine.integrations.hf.CurriculumCallback), against the real Trainer on CPU.

A 400-parameter language model built in code (no hub download), 24 windows of 12 tokens,
batch 4 and gradient_accumulation_steps=2: 3 optimizer steps per epoch, 9 in 3 epochs. Under two
processes (torchrun, gloo): tests/ddp_hf.py, 12 optimizer steps a run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.integrations.hf import EPOCH_END_KEY, STATE_KEY, CurriculumCallback
from policies import MetricBelow, MinEpoch, MinSteps, Restartable, RestartLR, SetCutoff, StagedCosine, all_of
from tests.ddp_hf import THRESHOLD as DDP_THRESHOLD
from tests.hf_tiny import InOrderTrainer, SaveAtEpochEnd, crop
from tests.utils import TinyLM, TokenCountLM, Windows, launch, record_calls, same_tensors

STEPS = 9

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def curriculum() -> Curriculum:
    return Curriculum(
        [
            Phase("short", params={"seq_len": 6}),
            Phase("long", params={"seq_len": 12}),
            Phase("final", params={"seq_len": 8}),
        ],
        [
            Transition("short", "long", [MinSteps(4)], actions=[RestartLR()], when=Point.STEP_END),
            Transition("long", "final", [all_of(MinEpoch(2), MetricBelow("eval_loss", 1e6))]),
        ],
    )


def spy(engine: CurriculumEngine) -> list:
    """Record every step_end (step, loss) and epoch_end (epoch, metric names) the callback makes."""
    calls, step_end, epoch_end = [], engine.step_end, engine.epoch_end

    def on_step(loss, **metrics):
        calls.append(("step", engine.clock.global_step + 1, loss))
        return step_end(loss=loss, **metrics)

    def on_epoch(**metrics):
        calls.append(("epoch", engine.clock.epoch + 1, metrics.get("eval_loss")))
        return epoch_end(**metrics)

    engine.step_end, engine.epoch_end = on_step, on_epoch
    return calls


def train(
    out: Path, resume=None, logging_steps=1, collator=None, prepare_inputs=crop, more_callbacks=(), model_cls=None
):
    """One run of 3 epochs, a checkpoint every 2 steps; returns (engine, calls, trainer)."""
    engine = CurriculumEngine(curriculum())
    calls = spy(engine)
    callback = CurriculumCallback(engine, prepare_inputs=prepare_inputs)
    model = (model_cls or TinyLM)()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = StagedCosine(opt, base_lr=1e-2, total_steps=STEPS, stages=((0, 1.0, 0.1),), stages_in="steps")
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="epoch",
        per_device_eval_batch_size=8,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Windows(),
        eval_dataset=Windows(),
        optimizers=(opt, sched),
        callbacks=[callback, *more_callbacks],
        **({"data_collator": collator(callback.params)} if collator else {}),
    )
    trainer.train(resume_from_checkpoint=resume)
    return engine, calls, trainer


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    engine, calls, trainer = train(out)
    return out, engine, calls, trainer


def history(engine):
    return [r.comparable() for r in engine.history]


def test_one_step_end_per_optimizer_step_with_the_loss_the_trainer_logs(full):
    """Gradient accumulation counts once: 9 step_ends, each with exactly the loss the Trainer logs for that step."""
    _, engine, calls, trainer = full
    steps = [c for c in calls if c[0] == "step"]
    assert [c[1] for c in steps] == list(
        range(1, STEPS + 1)
    ) and engine.clock.global_step == trainer.state.global_step == STEPS
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h and "step" in h]
    losses = [c[2] for c in steps]
    assert logged in (losses, [round(x, 4) for x in losses])  # transformers 4.x logs it rounded to 4 decimals


def test_the_loss_does_not_depend_on_logging_steps(full, tmp_path):
    """With logging_steps=100 (no step is logged) the callback still passes every step's loss, the same numbers."""
    _, _, calls, _ = full
    _, quiet, trainer = train(tmp_path, logging_steps=100)
    assert not [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    assert quiet == calls


def test_transitions_fire_at_the_expected_points(full):
    """short->long at step 4 (step_end) restarts the LR; long->final at the end of epoch 2, eval_loss as evidence."""
    _, engine, calls, _ = full
    sl, lf = [r for r in engine.history if r.source is not None]
    assert (sl.source, sl.dest, sl.global_step, sl.point) == ("short", "long", 4, "step_end")
    assert sl.actions[0].effect["lr"][1] == sl.actions[0].effect["peak"] == 1e-2 and sl.warnings == []
    assert (lf.source, lf.dest, lf.global_step, lf.epoch, lf.point) == ("long", "final", 6, 2, "epoch_end")
    eval_loss = [c[2] for c in calls if c[0] == "epoch"][1]
    assert eval_loss is not None and lf.guards[0].evidence["MetricBelow('eval_loss', 1000000.0)"]["value"] == eval_loss
    assert [c[:2] for c in calls if c[0] == "epoch"] == [("epoch", 1), ("epoch", 2), ("epoch", 3)]


def test_prepare_inputs_sees_each_micro_batch_in_its_phase(tmp_path):
    """prepare_inputs runs before each training forward with the live params: 8 micro-batches at 6, 4 at 12, 6 at 8."""
    seen = []

    def record(inputs, params):
        seen.append(params["seq_len"])
        return crop(inputs, params)

    train(tmp_path, prepare_inputs=record)
    assert seen == [6] * 8 + [12] * 4 + [8] * 6


def true_losses(seen, per_step=2) -> list[float]:
    """Each optimizer step's mean token loss over the labels the model saw (2 micro-batches a step)."""
    steps = [seen[i : i + per_step] for i in range(0, len(seen), per_step)]
    return [sum(t for t, _ in step) / sum(n for _, n in step) for step in steps]


def test_with_num_items_in_batch_the_loss_is_the_mean_over_the_labels_prepare_inputs_kept(tmp_path):
    """The Trainer counts num_items_in_batch before prepare_inputs crops: the callback renormalises, so the
    logged loss and the engine's are the model's true mean token loss in every phase (seq_len 6, 12, 8)."""
    engine, calls, trainer = train(tmp_path, model_cls=TokenCountLM)
    true = true_losses(trainer.model.seen)
    fed = [c[2] for c in calls if c[0] == "step"]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h and "step" in h]
    assert len(true) == STEPS and fed == pytest.approx(true, rel=1e-6)
    assert logged == pytest.approx(true, abs=5e-5)  # the Trainer logs 4 significant digits or more
    reference, ref_calls, ref_trainer = train(tmp_path / "mean", model_cls=TinyLM)  # the model that averages itself
    assert fed == pytest.approx([c[2] for c in ref_calls if c[0] == "step"], rel=1e-5)
    weights, ref = trainer.model.state_dict(), ref_trainer.model.state_dict()
    assert all(torch.allclose(weights[k], ref[k], rtol=1e-5, atol=1e-7) for k in ref)  # the gradients were scaled too


class CroppingCollator:
    """A collator that reads the phase's seq_len through the callback's live params."""

    def __init__(self, params) -> None:
        self.params, self.lengths = params, []

    def __call__(self, items):
        n = self.params["seq_len"]
        self.lengths.append(n)
        return {k: torch.stack([it[k][:n] for it in items]) for k in items[0]}


def test_a_collator_reads_the_params_one_micro_batch_ahead(tmp_path):
    """The data loader collates one micro-batch ahead: a step-end change reaches the second micro-batch of the next
    step, an epoch-end one the first."""
    collators = []

    def make(params):
        collators.append(CroppingCollator(params))
        return collators[-1]

    train(tmp_path, collator=make, prepare_inputs=None)
    epoch0, eval0 = [6] * 6, [6] * 3  # 6 training micro-batches, then 3 evaluation batches
    epoch1 = [6, 6, 6, 12, 12, 12]  # steps 4, 5, 6: step 5's first micro-batch was collated before step 4 ended
    eval1, epoch2, eval2 = [12] * 3, [8] * 6, [8] * 3  # changed at the epoch end: exact from the next epoch's first
    assert collators[0].lengths == epoch0 + eval0 + epoch1 + eval1 + epoch2 + eval2


def test_a_collator_reading_params_at_a_resume_after_a_step_end_change_is_warned(full, tmp_path, caplog):
    """Resumed from checkpoint-4 (short->long fired at its step end): a collator reading the params collates the first
    micro-batch in the new phase, one micro-batch earlier than the uninterrupted run; the callback says so once. With
    prepare_inputs alone (exact) it says nothing."""
    import logging

    folder = tmp_path / "checkpoint-4"
    shutil.copytree(full[0] / "checkpoint-4", folder)
    with caplog.at_level(logging.WARNING, logger="engine.integrations.hf"):
        train(tmp_path / "quiet", resume=str(folder))
        assert "collates one micro-batch ahead" not in caplog.text
        train(tmp_path / "collator", resume=str(folder), collator=CroppingCollator, prepare_inputs=None)
    assert caplog.text.count("collates one micro-batch ahead") == 1 and "prepare_inputs(inputs, params)" in caplog.text


@pytest.mark.parametrize("step", [4, 6])
def test_resume_from_checkpoint_continues_exactly(full, tmp_path, step):
    """From checkpoint-4 (mid-epoch, the step short->long fires) and checkpoint-6 (an epoch's last step, written
    before its epoch end, which the resumed run makes first, with the saved eval_loss): the same losses, epoch ends
    and history."""
    out, engine, calls, _ = full
    folder = tmp_path / f"checkpoint-{step}"
    shutil.copytree(out / f"checkpoint-{step}", folder)  # resumed from where it lies, not from the output_dir
    resumed, rest, trainer = train(tmp_path / "run", resume=str(folder))
    done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1
    assert rest == calls[done:]
    assert history(resumed) == history(engine) and resumed.clock.global_step == trainer.state.global_step == STEPS


def test_every_checkpoint_holds_the_engine_state(full):
    """checkpoint-N/trainer_state.json holds the engine at step N; at an epoch's last step, before that epoch's end, as
    the optimizer and scheduler files."""
    out = full[0]
    for step, epoch, phase in [(2, 0, "short"), (4, 1, "long"), (6, 1, "long"), (8, 2, "final")]:
        state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["stateful_callbacks"][
            STATE_KEY
        ]
        assert (state["clock"]["global_step"], state["clock"]["epoch"], state["phase"]) == (step, epoch, phase)


def test_resume_from_a_checkpoint_without_engine_state_is_refused(full, tmp_path):
    """A checkpoint written without the callback cannot silently restart the curriculum at its first phase."""
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(full[0] / "checkpoint-2", folder)
    path = folder / "trainer_state.json"
    data = json.loads(path.read_text())
    del data["stateful_callbacks"][STATE_KEY]
    path.write_text(json.dumps(data))
    with pytest.raises(CurriculumError, match="resumed at step 2 from a checkpoint without engine state"):
        train(tmp_path / "run", resume=str(folder))


def test_an_engine_state_ahead_of_the_trainer_state_is_refused(full, tmp_path):
    """A trainer_state.json at step 0 by an engine state at step 4 is refused, not restarted at the first phase."""
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(full[0] / "checkpoint-4", folder)
    path = folder / "trainer_state.json"
    data = json.loads(path.read_text())
    data["global_step"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(CurriculumError, match="engine state is at step 4 but the Trainer resumed at step 0"):
        train(tmp_path / "run", resume=str(folder))


def test_allow_fingerprint_mismatch_passes_through(full, tmp_path):
    """A changed curriculum is refused at resume, naming the option; with allow_fingerprint_mismatch=True the run goes
    on."""
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(full[0] / "checkpoint-4", folder)
    changed = Curriculum(
        [
            Phase("short", params={"seq_len": 6}),
            Phase("long", params={"seq_len": 12}),
            Phase("final", params={"seq_len": 8}),
        ],
        [
            Transition("short", "long", [MinSteps(5)], actions=[RestartLR()], when=Point.STEP_END),
            Transition("long", "final", [MinEpoch(2)]),
        ],
    )
    for lenient in (False, True):
        engine = CurriculumEngine(changed)
        model = TinyLM()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = StagedCosine(opt, base_lr=1e-2, total_steps=STEPS, stages=((0, 1.0, 0.1),), stages_in="steps")
        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{lenient}"),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            num_train_epochs=3,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Windows(),
            optimizers=(opt, sched),
            callbacks=[CurriculumCallback(engine, prepare_inputs=crop, allow_fingerprint_mismatch=lenient)],
        )
        if not lenient:
            with pytest.raises(CurriculumError, match="allow_fingerprint_mismatch=True"):
                trainer.train(resume_from_checkpoint=str(folder))
        else:
            trainer.train(resume_from_checkpoint=str(folder))
            assert engine.clock.global_step == STEPS and engine.phase.name == "final"


def test_bad_arguments_are_clear_errors():
    """The callback needs an engine and a callable prepare_inputs."""
    with pytest.raises(CurriculumError, match="'engine' must be a CurriculumEngine"):
        CurriculumCallback(curriculum())
    with pytest.raises(CurriculumError, match="'prepare_inputs' must be a callable"):
        CurriculumCallback(CurriculumEngine(curriculum()), prepare_inputs="crop")
    with pytest.raises(CurriculumError, match="'allow_fingerprint_mismatch' must be a bool"):
        CurriculumCallback(CurriculumEngine(curriculum()), allow_fingerprint_mismatch=1)


class SaveAtStep5(TrainerCallback):
    """Another callback, after ours, that asks for a save the Trainer did not plan."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            control.should_save = True


def test_a_save_asked_for_by_a_later_callback_still_holds_the_engine_state(tmp_path):
    """checkpoint-5, asked for after the callback's step end, holds the engine at step 5, not the state of the last
    planned save."""
    train(tmp_path, more_callbacks=[SaveAtStep5()])
    state = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())["stateful_callbacks"][STATE_KEY]
    assert (state["clock"]["global_step"], state["phase"]) == (5, "long")


# -- two processes (torchrun, gloo on CPU): tests/ddp_hf.py, whose ranks see data of different losses --------------

# the model averages its loss; it divides by num_items_in_batch; the same, logging_steps=5; the second, cropped by
# prepare_inputs
DDP_RUNS = ("mean", "tokens", "quiet", "crop")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Each rank's record of each of the three runs."""
    out = tmp_path_factory.mktemp("ddp")
    launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "tests.ddp_hf",
            str(out),
        ],
        timeout=240,
    )
    return {name: [json.loads((out / f"{name}.rank{rank}.json").read_text()) for rank in (0, 1)] for name in DDP_RUNS}


def own_losses(record) -> list[float]:
    """A rank's own loss at each optimizer step: its micro-batches' mean token loss."""
    return [sum(total for total, _ in step) / sum(n for _, n in step) for step in record["own"]]


def mean_over_ranks(records) -> list[float]:
    """The step's mean token loss over both ranks (every micro-batch has as many tokens)."""
    return [sum(losses) / len(losses) for losses in zip(*map(own_losses, records))]


@pytest.mark.parametrize("name", DDP_RUNS)
def test_under_ddp_every_rank_feeds_the_mean_over_ranks(ddp, name):
    """Each rank's engine sees, at each of the 12 steps, the mean of the two ranks' own losses, which differ."""
    records = ddp[name]
    own0, own1 = map(own_losses, records)
    assert len(own0) == len(own1) == 12 and max(abs(a - b) for a, b in zip(own0, own1)) > 2  # the ranks' losses part
    for record in records:
        assert record["engine"] == pytest.approx(mean_over_ranks(records), rel=1e-5)


@pytest.mark.parametrize("name", ["mean", "tokens", "crop"])
def test_under_ddp_the_engine_sees_the_loss_the_trainer_logs(ddp, name):
    """With logging_steps=1 both ranks' engines see exactly the loss the Trainer logs (its mean over ranks)."""
    for record in ddp[name]:
        engine, logged = record["engine"], record["logged"]
        assert len(logged) == 12 and logged in (engine, [round(x, 4) for x in engine])  # 4.x logs 4 decimals
        assert engine == pytest.approx(
            mean_over_ranks(ddp[name]), rel=1e-5
        )  # the mean token loss of what the model saw


def test_under_ddp_the_loss_does_not_depend_on_logging_steps(ddp):
    """logging_steps=5 (steps 5 and 10 logged, as means over 5 steps) leaves the engine the same per-step losses."""
    assert len(ddp["quiet"][0]["logged"]) == 2
    assert [r["engine"] for r in ddp["quiet"]] == [r["engine"] for r in ddp["tokens"]]


@pytest.mark.parametrize("name", DDP_RUNS[:3])
def test_under_ddp_every_rank_transitions_where_the_mean_crosses(ddp, name):
    """Both ranks move a -> b at the first step the mean loss is below the threshold, not where rank 0's own loss is."""
    records = ddp[name]
    first_below = lambda losses: next(step for step, loss in enumerate(losses, 1) if loss < DDP_THRESHOLD)  # noqa: E731
    step = first_below(mean_over_ranks(records))
    assert first_below(own_losses(records[0])) < step  # rank 0 alone would move earlier
    assert min(own_losses(records[1])) > DDP_THRESHOLD  # rank 1 alone would never move
    history0, history1 = (r["history"] for r in records)
    assert history0 == history1
    assert [(h["source"], h["dest"], h["global_step"]) for h in history0] == [(None, "a", 0), ("a", "b", step)]


# -- the exactness matrix: checkpoint position x transition point x action x shuffle, against the real Trainer ------
# Each configuration trains once uninterrupted (2 epochs of 4 steps, a checkpoint at every step, and one more after
# each epoch end), then resumes from a mid-epoch step (2), an epoch's last step (4, written before its epoch end)
# and the checkpoint written after that epoch end: each resumed run must end bit-identical (weights, optimizer
# state, per-step losses and LRs, epoch-end metrics, history). The transition a -> b fires at step 2 (step_end) or
# at the end of epoch 0 (epoch_end, reading eval_loss); its action restarts the LR (the Trainer's own LambdaLR,
# made restartable by the callback, or a Restartable(CosineAnnealingLR, over="remaining")) or changes the model
# (SetCutoff on a buffer); the phases' seq_len crops every micro-batch through prepare_inputs in every cell.


class MaskedLM(TinyLM):
    """TinyLM whose embedding keeps its first `cutoff` features: a model an action changes (a buffer, in its
    weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cutoff", torch.tensor(8))

    def set_cutoff(self, n, preserve=True):
        self.cutoff.fill_(n)

    def forward(self, input_ids, labels=None):
        mask = (torch.arange(8) < self.cutoff).to(self.emb.weight.dtype)
        logits = self.head(self.emb(input_ids) * mask)  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return {"loss": loss, "logits": logits}


MATRIX_CONFIGS = [
    (point, action, shuffle)
    for point in ("step_end", "epoch_end")
    for action in ("restart", "model")
    for shuffle in (False, True)
]


def matrix_curriculum(point, action) -> Curriculum:
    guard = MinSteps(2) if point == "step_end" else all_of(MinEpoch(1), MetricBelow("eval_loss", 1e6))
    act = RestartLR() if action == "restart" else SetCutoff(4)
    return Curriculum(
        [Phase("a", params={"seq_len": 6}), Phase("b", params={"seq_len": 12})],
        [Transition("a", "b", [guard], actions=[act], when=point)],
    )


def matrix_train(out: Path, config, resume=None):
    point, action, shuffle = config
    engine = CurriculumEngine(matrix_curriculum(point, action))
    calls = spy_lr(engine)
    model = MaskedLM()
    optimizers = (None, None)
    if shuffle and action == "restart":  # the user's own schedule, re-planned over the steps left at the restart
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        optimizers = (opt, Restartable(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8), over="remaining"))
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=6,
        num_train_epochs=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        eval_strategy="epoch" if point == "epoch_end" else "no",
        per_device_eval_batch_size=24,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = (Trainer if shuffle else InOrderTrainer)(
        model=model,
        args=args,
        train_dataset=Windows(),
        eval_dataset=Windows(),
        optimizers=optimizers,
        callbacks=[CurriculumCallback(engine, prepare_inputs=crop), *([] if resume else [SaveAtEpochEnd()])],
    )
    trainer.train(resume_from_checkpoint=resume)
    return engine, calls, trainer


def spy_lr(engine: CurriculumEngine) -> list:
    """Record every step_end (step, loss, lr) and epoch_end (epoch, metrics read by guards) the callback makes."""
    calls, step_end, epoch_end = [], engine.step_end, engine.epoch_end

    def on_step(loss, **metrics):
        calls.append(("step", engine.clock.global_step + 1, loss, metrics.get("lr")))
        return step_end(loss=loss, **metrics)

    def on_epoch(**metrics):
        calls.append(("epoch", engine.clock.epoch + 1, metrics.get("eval_loss")))
        return epoch_end(**metrics)

    engine.step_end, engine.epoch_end = on_step, on_epoch
    return calls


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run per configuration, made when first needed."""
    runs = {}

    def get(config):
        if config not in runs:
            out = tmp_path_factory.mktemp("matrix")
            runs[config] = (out, *matrix_train(out, config))
        return runs[config]

    return get


@pytest.mark.parametrize("config", MATRIX_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_exactness_matrix(uninterrupted, tmp_path, config):
    """Resumed from a mid-epoch step, an epoch's last step and the epoch-end checkpoint: bit-identical to the
    uninterrupted run."""
    out, engine, calls, trainer = uninterrupted(config)
    move = engine.history[1]
    assert (move.dest, move.global_step, move.warnings) == ("b", 2 if config[0] == "step_end" else 4, [])
    if config[1] == "restart":  # the LR went back up to the schedule's peak, which the Trainer then stepped on from
        assert move.actions[0].effect["lr"][0] < move.actions[0].effect["lr"][1] == 1e-2
    for where, step in (("step", 2), ("step", 4), ("epoch", 4)):
        resumed, rest, again = matrix_train(
            tmp_path / f"{where}-{step}", config, resume=str(out / "kept" / f"{where}-{step}")
        )
        done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1 + (where == "epoch")
        assert rest == calls[done:], (where, step)
        assert history(resumed) == history(engine), (where, step)
        assert same_tensors(again.model.state_dict(), trainer.model.state_dict()), (where, step)
        assert same_tensors(again.optimizer.state_dict(), trainer.optimizer.state_dict()), (where, step)


def test_resume_on_an_epochs_last_step_without_its_evaluation_metrics_is_refused(uninterrupted, tmp_path):
    """The process stopped between the save on an epoch's last step and the evaluation: the epoch end made at resume
    cannot have the eval_loss its guard reads; one CurriculumError names the checkpoints to resume from instead."""
    config = ("epoch_end", "restart", False)
    out = uninterrupted(config)[0]
    folder = tmp_path / "checkpoint-4"
    shutil.copytree(out / "kept" / "step-4", folder)
    path = folder / "trainer_state.json"
    data = json.loads(path.read_text())
    assert data["stateful_callbacks"].pop(EPOCH_END_KEY)["metrics"]["eval_loss"] > 0
    path.write_text(json.dumps(data))
    with pytest.raises(
        CurriculumError,
        match=r"written on the last step of epoch 0 before its end, without the evaluation "
        r"metrics.*'eval_loss'.*save_strategy='epoch'",
    ):
        matrix_train(tmp_path / "run", config, resume=str(folder))


# -- the Trainer's own schedule restarted: re-planned over the steps left, or replayed whole with a warning ---------


def restarted_default_schedule(out: Path, resume=None, **callback_options):
    """40 steps of the Trainer's own linear decay (no optimizers passed), restarted at step 20; a checkpoint at 30."""
    engine = CurriculumEngine(
        Curriculum(
            [Phase("a"), Phase("b")],
            [Transition("a", "b", [MinSteps(20)], actions=[RestartLR()], when=Point.STEP_END)],
        )
    )
    calls = record_calls(engine)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=6,
        max_steps=40,
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=30,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=TinyLM(), args=args, train_dataset=Windows(), callbacks=[CurriculumCallback(engine, **callback_options)]
    )
    trainer.train(resume_from_checkpoint=resume)
    return [c[3] for c in calls if c[0] == "step"], trainer


def test_a_restarted_default_schedule_anneals_over_the_steps_left(tmp_path, caplog):
    """restart_over='remaining' (the default): restarted at step 20 of 40, the Trainer's linear decay runs from the peak
    to 0 over the last 20 steps, and a run resumed after the restart (step 30) continues it bit for bit."""
    import logging

    with caplog.at_level(logging.WARNING, logger="engine.integrations"):
        lrs, trainer = restarted_default_schedule(tmp_path / "full")
    assert not caplog.text
    assert lrs[19] == 3e-3 * 21 / 40 and lrs[20] == 3e-3  # the restart, at the peak
    assert lrs[39] == pytest.approx(3e-3 / 20, rel=1e-12) and trainer.lr_scheduler.get_last_lr()[0] == 0
    resumed, _ = restarted_default_schedule(tmp_path / "again", resume=str(tmp_path / "full" / "checkpoint-30"))
    assert resumed == lrs[30:]


def test_a_default_schedule_replayed_whole_ends_above_zero_and_is_warned(tmp_path, caplog):
    """restart_over='whole' replays the 40-step decay from step 20: the run ends at half the peak, and the callback
    says so when training begins, naming restart_over='remaining'."""
    import logging

    with caplog.at_level(logging.WARNING, logger="engine.integrations"):
        lrs, _ = restarted_default_schedule(tmp_path, restart_over="whole")
    assert lrs[20] == 3e-3 and lrs[39] == pytest.approx(3e-3 * 21 / 40, rel=1e-12)
    assert caplog.text.count("does not reach the schedule's end") == 1 and "restart_over='remaining'" in caplog.text
    with pytest.raises(CurriculumError, match="'restart_over' must be 'whole' or 'remaining', got 'rest'"):
        CurriculumCallback(CurriculumEngine(curriculum()), restart_over="rest")
