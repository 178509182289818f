"""WSD: the formula against Hägele et al.'s, exact state, the cooldown started by a transition (policies.wsd)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from policies import WSD, MinEpoch, MinSteps, StagedCosine, StartCooldown, adaptive_cooldown


def optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)


def reference(n: int, total: int, warmup: int, decay: int, shape: str, lr: float, final: float) -> float:
    """Hägele et al. 2024, eq. (1) with the cooldown as their Fig. 3 shapes, written out independently."""
    if n < warmup:
        return lr * (n + 1) / (warmup + 1)
    if n < total - decay:
        return lr
    if n >= total:
        return final * lr
    x = (n - (total - decay)) / decay
    f = {"1-sqrt": 1 - x**0.5, "linear": 1 - x, "cosine": (1 + math.cos(math.pi * x)) / 2}[shape]
    return final * lr + (lr - final * lr) * f


def lrs(schedule: WSD, opt: torch.optim.Optimizer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


@pytest.mark.parametrize("shape", ["1-sqrt", "linear", "cosine"])
@pytest.mark.parametrize("warmup,final", [(0, 0.0), (7, 0.1)])
def test_formula_matches_the_reference(shape, warmup, final):
    """Every step's LR, through torch's scheduler protocol, equals the reference to 1e-15, past the end too."""
    opt = optimizer()
    s = WSD(opt, 3e-3, 100, warmup_steps=warmup, cooldown_fraction=0.2, shape=shape, final_ratio=final)
    assert isinstance(s, LRScheduler) and s.cooldown_steps == 20
    got = lrs(s, opt, 105)
    want = [reference(n, 100, warmup, 20, shape, 3e-3, final) for n in range(105)]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-15


def test_state_dict_continues_exactly():
    """Saved mid-warmup, mid-stable, after a manual cooldown start, restored into a new WSD: the same LRs."""
    opt = optimizer()
    whole = WSD(opt, 1e-3, 60, warmup_steps=5, cooldown_steps=10, shape="1-sqrt")
    expected = lrs(whole, opt, 20)
    whole.start_cooldown()
    expected += lrs(whole, opt, 40)
    for cut in (3, 12, 25):
        opt1 = optimizer()
        first = WSD(opt1, 1e-3, 60, warmup_steps=5, cooldown_steps=10, shape="1-sqrt")
        got = lrs(first, opt1, min(cut, 20))
        if cut > 20:
            first.start_cooldown()
            got += lrs(first, opt1, cut - 20)
        state = json.loads(json.dumps(first.state_dict()))
        opt2 = optimizer()
        second = WSD(opt2, 1e-3, 60, warmup_steps=5, cooldown_steps=10, shape="1-sqrt")
        second.load_state_dict(state)
        if cut < 20:
            got += lrs(second, opt2, 20 - cut)
            second.start_cooldown()
            got += lrs(second, opt2, 40)
        else:
            got += lrs(second, opt2, 60 - cut)
        assert got == expected, cut


def test_start_cooldown_starts_at_the_step_about_to_run():
    """The step after start_cooldown() runs at peak (p = 0), the next ones fall; a second call changes nothing."""
    opt = optimizer()
    s = WSD(opt, 1.0, 100, cooldown_steps=4, shape="linear")
    lrs(s, opt, 10)
    assert s.start_cooldown() == (1.0, 1.0) and (s.cooldown_start, s.cooldown_end) == (10, 14)
    assert lrs(s, opt, 6) == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0] and s.finished
    assert s.start_cooldown() == (0.0, 0.0) and s.cooldown_start == 10


def test_the_cooldown_transition():
    """A transition firing StartCooldown at step 6 starts the cooldown on step 6; its record holds the LR and span."""
    opt = optimizer()
    s = WSD(opt, 1.0, 100, cooldown_steps=4, shape="linear", auto=False)
    cur = Curriculum(
        [Phase("stable"), Phase("cooldown")],
        [Transition("stable", "cooldown", [MinSteps(6)], [StartCooldown()], when=Point.STEP_END)],
    )
    engine = CurriculumEngine(cur, optimizer=opt, schedule=s)
    engine.start()
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
        engine.step_end(loss=1.0)
    assert seen == [1.0] * 7 + [0.75, 0.5, 0.25, 0.0, 0.0]
    record = engine.history[-1]
    assert record.dest == "cooldown" and record.global_step == 6
    assert record.actions[0].effect == {"lr": [1.0, 1.0], "cooldown": [6, 10]}


def test_adaptive_cooldown_waits_for_its_floor_and_a_plateau():
    """adaptive_cooldown(2): at epoch ends, once epoch >= 2 and the loss is flat, the cooldown starts."""
    opt = optimizer()
    s = WSD(opt, 1.0, 100, cooldown_steps=10)
    engine = CurriculumEngine(adaptive_cooldown(2, window=4, threshold=0.01), optimizer=opt, schedule=s)
    engine.start()
    for epoch in range(3):
        for _ in range(5):
            opt.step()
            s.step()
            engine.step_end(loss=2.0)
        engine.epoch_end()
        assert s.cooling == (epoch == 1)  # the boundary after the second epoch reads epoch == 2
        if s.cooling:
            break
    assert engine.phase.name == "cooldown" and s.cooldown_start == 10


def run_epochs(engine, schedule, opt, epochs, steps, loss=lambda step: 1.0 / (step + 1)):
    """An own loop: ``epochs`` of ``steps`` steps, a loss that falls fast (never a plateau) unless given."""
    for _ in range(epochs):
        for _ in range(steps):
            opt.step()
            schedule.step()
            engine.step_end(loss=loss(engine.clock.global_step))
        engine.epoch_end()


def test_the_automatic_cooldown_is_a_recorded_transition():
    """adaptive_cooldown with a WSD whose plateau never comes: at the automatic start (step 15) the phase moves to
    cooldown, recorded at that step with the start in the guard's evidence and StartCooldown's effect (which changes no
    LR: the schedule had begun it)."""
    opt = optimizer()
    s = WSD(opt, 1.0, 20, cooldown_steps=5, shape="linear")
    engine = CurriculumEngine(adaptive_cooldown(1, window=4, threshold=0.0), optimizer=opt, schedule=s)
    engine.start()
    run_epochs(engine, s, opt, 4, 5)
    record = engine.history[-1]
    assert engine.phase.name == "cooldown" and (record.source, record.point, record.global_step) == (
        "stable",
        "step_end",
        15,
    )
    assert record.guards[0].evidence == {"auto_start": 15, "step": 15}
    assert record.actions[0].effect == {"lr": [1.0, 1.0], "cooldown": [15, 20], "auto_start": 15}
    assert s.started_at is None and s.finished


def test_a_transition_at_the_automatic_start_says_the_cooldown_had_begun_by_itself():
    """StartCooldown firing at the very step the automatic cooldown begins records auto_start: it did not start it."""
    opt = optimizer()
    s = WSD(opt, 1.0, 10, cooldown_steps=5, shape="linear")
    cur = Curriculum(
        [Phase("stable"), Phase("cooldown")], [Transition("stable", "cooldown", [MinEpoch(1)], [StartCooldown()])]
    )
    engine = CurriculumEngine(cur, optimizer=opt, schedule=s)
    engine.start()
    run_epochs(engine, s, opt, 1, 5)
    assert engine.history[-1].actions[0].effect == {"lr": [1.0, 1.0], "cooldown": [5, 10], "auto_start": 5}


def test_a_cooldown_that_ends_early_warns_once_naming_the_steps_left(caplog):
    """An own loop whose cooldown (started at step 6, 4 steps) ends with 10 of 20 steps left: one warning naming them
    and the final LR; a cooldown that ends with training warns nothing."""
    opt = optimizer()
    s = WSD(opt, 1.0, 20, cooldown_steps=4, shape="linear", auto=False)
    with caplog.at_level("WARNING", logger="policies.wsd"):
        lrs(s, opt, 6)
        s.start_cooldown()
        lrs(s, opt, 14)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "WSD cooldown ended at step 10 with 10 of total_steps=20 left: they run at the final LR 0; "
        "stop the run there, or start the cooldown later"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="policies.wsd"):
        whole = optimizer()
        lrs(WSD(whole, 1.0, 20, cooldown_steps=4), whole, 25)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_errors_name_the_field_and_the_fix():
    with pytest.raises(CurriculumError, match="'shape' must be '1-sqrt' or 'linear' or 'cosine'"):
        WSD(optimizer(), 1.0, 10, shape="sqrt")
    with pytest.raises(CurriculumError, match="'cooldown_fraction' must be in"):
        WSD(optimizer(), 1.0, 10, cooldown_fraction=1.5)
    with pytest.raises(CurriculumError, match="'warmup_steps' must be at most"):
        WSD(optimizer(), 1.0, 10, warmup_steps=9)
    with pytest.raises(CurriculumError, match="start_cooldown"):
        StartCooldown()(type("Ctx", (), {"schedule": object()})())


def test_start_cooldown_refuses_a_schedule_without_a_cooldown_at_start():
    """StartCooldown over a StagedCosine is refused by start() (its check), not when the transition fires; with a WSD
    bound instead, the same engine starts."""
    opt = optimizer()
    engine = CurriculumEngine(adaptive_cooldown(2), optimizer=opt, schedule=StagedCosine(opt, 1.0, 5, 10))
    with pytest.raises(CurriculumError, match=r"refused this run in check\(\) at start\(\).*got StagedCosine"):
        engine.start()
    engine.bind(schedule=WSD(opt, 1.0, 50))
    assert engine.start().dest == "stable"


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*", "ignore:.*LeafSpec.*")
def test_lightning_takes_wsd_and_the_engine_starts_its_cooldown(tmp_path):
    """Under Lightning, WSD is the module's scheduler and StartCooldown (at step 3) starts its cooldown on step 3."""
    pl = pytest.importorskip("lightning.pytorch")
    from engine.integrations.lightning import CurriculumCallback
    from tests.lightning_tiny import Tiny
    from tests.utils import lightning_dataset as dataset

    class Module(Tiny):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.05)
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": WSD(opt, 0.05, 8, cooldown_steps=4, shape="linear", auto=False),
                    "interval": "step",
                },
            }

    cur = Curriculum(
        [Phase("stable"), Phase("cooldown")],
        [Transition("stable", "cooldown", [MinSteps(3)], [StartCooldown()], when=Point.STEP_END)],
    )
    engine = CurriculumEngine(cur)
    lrs, step_end = [], engine.step_end

    def record_lr(loss, **metrics):
        lrs.append(metrics["lr"])
        return step_end(loss=loss, **metrics)

    engine.step_end = record_lr
    trainer = pl.Trainer(
        max_steps=8,
        callbacks=[CurriculumCallback(engine)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(Module(), torch.utils.data.DataLoader(dataset(), batch_size=2))
    assert lrs == pytest.approx([0.05] * 4 + [0.0375, 0.025, 0.0125, 0.0], rel=1e-12)
    assert engine.phase.name == "cooldown" and engine.history[-1].global_step == 3
