"""Ready actions: RestartLR and its health check, SetCutoff, ResetWindow (policies.actions)."""

import pytest
import torch

from engine import Clock, Context, Curriculum, CurriculumEngine, CurriculumError, Phase, Transition
from policies import MinEpoch, MinSteps, Plateau, ResetWindow, Restartable, RestartLR, SetCutoff, StagedCosine, all_of
from tests.utils import FakeModel

BASE = 2e-4
SPE = 10


class NoRestart(StagedCosine):
    """Broken on purpose: restart() does nothing."""

    def restart(self):
        return self.lr, self.lr


class DeferredRestart(StagedCosine):
    """Broken on purpose: the restart only reaches the optimizer at the next step(), too late."""

    def restart(self):
        self.pending = True
        return self.lr, self.lr

    def step(self):
        super().step()
        if getattr(self, "pending", False):
            self.pending = False
            super().restart()


def restart_run(schedule_cls, pass_lr=True, raise_epoch=3):
    """One single-stage cosine over 4 epochs; a->b fires RestartLR at `raise_epoch`; one more step."""
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    sched = schedule_cls(opt, base_lr=BASE, steps_per_epoch=SPE, total_epochs=4, stages=((0, 1.0, 0.1),))
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinEpoch(raise_epoch)], actions=[RestartLR()])])
    eng = CurriculumEngine(cur, optimizer=opt, schedule=sched)
    eng.start()
    x = torch.ones(4, 2)
    for _ in range(raise_epoch + 1):
        for _ in range(SPE):
            lr = opt.param_groups[0]["lr"]
            opt.zero_grad()
            lin(x).pow(2).mean().backward()
            opt.step()
            sched.step()
            eng.step_end(loss=1.0, **({"lr": lr} if pass_lr else {}))
        if eng.epoch_end() is not None:
            break
    record = eng.history[1]  # history[0] is the start
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    eng.step_end(loss=1.0, **({"lr": lr} if pass_lr else {}))
    return record, lr


def test_restart_lr_effect_and_no_warning_with_a_correct_schedule():
    """RestartLR records [before, after] and the peak; a correct schedule runs the next step at peak, no warning."""
    record, first_lr = restart_run(StagedCosine)
    (effect,) = [a.effect for a in record.actions]
    assert effect["lr"][1] == BASE and effect["peak"] == BASE
    assert effect["lr"][0] == pytest.approx(
        BASE * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 30 / 40)).item()))
    )
    assert first_lr == BASE and record.warnings == []


@pytest.mark.parametrize("cls", [NoRestart, DeferredRestart])
def test_health_check_warns_when_the_restart_did_not_reach_the_step(cls):
    """A schedule that ignores or defers the restart gets the seed's LR TOO LOW warning on the record."""
    record, first_lr = restart_run(cls)
    assert first_lr < BASE / 2
    (warning,) = record.warnings
    assert f"LR {first_lr:.1e} on the first step after the restart is below half the restart's peak 2.0e-04" in warning
    assert "LR TOO LOW" in warning and "stage alignment broken" in warning and "overwrote the restart" in warning


def test_health_check_reads_the_optimizer_without_lr_metric():
    """Without an lr metric the check reads the optimizer's LR: no warning when correct, one when broken."""
    assert restart_run(StagedCosine, pass_lr=False)[0].warnings == []
    assert len(restart_run(NoRestart, pass_lr=False)[0].warnings) == 1


def test_restart_lr_requires_schedule_and_optimizer():
    """A curriculum with RestartLR cannot start an engine without a schedule."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinEpoch(1)], actions=[RestartLR()])])
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    with pytest.raises(CurriculumError, match=r"RestartLR\(\) requires a registered object 'schedule'"):
        CurriculumEngine(cur, optimizer=opt).start()
    assert RestartLR.requires == ("schedule", "optimizer") and repr(RestartLR()) == "RestartLR()"


def test_restart_lr_needs_a_restartable_schedule():
    """A registered torch scheduler without restart() is a clear error naming the wrapper that fixes it."""
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    ctx = Context(clock=Clock(), objects={"optimizer": opt, "schedule": sched})
    with pytest.raises(
        CurriculumError, match=r"got CosineAnnealingLR; .*schedule=Restartable\(CosineAnnealingLR\(...\)\)"
    ):
        RestartLR()(ctx)


def test_a_schedule_that_cannot_restart_is_refused_at_start_and_at_load():
    """RestartLR.check runs at start() and load_state_dict(): a bare torch scheduler fails there, before any step,
    naming the wrapper."""
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinSteps(100)], actions=[RestartLR()])])
    good = CurriculumEngine(
        cur, optimizer=opt, schedule=Restartable(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10))
    )
    good.start()
    for call in (lambda e: e.start(), lambda e: e.load_state_dict(good.state_dict())):
        engine = CurriculumEngine(cur, optimizer=opt, schedule=sched)
        with pytest.raises(
            CurriculumError, match=r"got CosineAnnealingLR; .*schedule=Restartable\(CosineAnnealingLR\(...\)\)"
        ):
            call(engine)
        assert engine.state_dict()["history"] == []  # nothing changed: the engine can still start once fixed
        engine.bind(schedule=Restartable(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)))
        call(engine)


class IgnoredRestart(Restartable):
    """Broken on purpose: restart() does nothing."""

    def restart(self):
        return self.lr, self.lr


def torch_restart_run(wrapper=Restartable, pass_lr=True):
    """CosineAnnealingLR(T_max=40) wrapped; a->b at epoch 3 fires RestartLR; returns the record and the next 5 LRs."""
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    sched = wrapper(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40))
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinEpoch(3)], actions=[RestartLR()])])
    eng = CurriculumEngine(cur, optimizer=opt, schedule=sched)
    eng.start()
    x, lrs = torch.ones(4, 2), []
    for epoch in range(4):
        for _ in range(SPE):
            lr = opt.param_groups[0]["lr"]
            if epoch == 3:
                lrs.append(lr)
            opt.zero_grad()
            lin(x).pow(2).mean().backward()
            opt.step()
            sched.step()
            eng.step_end(loss=1.0, **({"lr": lr} if pass_lr else {}))
        eng.epoch_end()
    return eng.history[1], lrs  # history[0] is the start


@pytest.mark.parametrize("pass_lr", [True, False])
def test_restart_lr_restarts_a_wrapped_torch_scheduler(pass_lr):
    """RestartLR on Restartable(CosineAnnealingLR): the new phase replays the cosine from its step 0, no warning."""
    record, lrs = torch_restart_run(pass_lr=pass_lr)
    fresh_opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    fresh = torch.optim.lr_scheduler.CosineAnnealingLR(fresh_opt, T_max=40)
    expected = []
    for _ in range(SPE):
        expected.append(fresh_opt.param_groups[0]["lr"])
        fresh_opt.step()
        fresh.step()
    (effect,) = [a.effect for a in record.actions]
    assert (record.global_step, effect["lr"][1], effect["peak"]) == (30, 0.1, 0.1)
    assert lrs == expected and record.warnings == []


def test_health_check_warns_when_a_wrapped_scheduler_ignores_the_restart():
    """The health check reads Restartable's restart LR: a restart that never reached the step is flagged."""
    record, lrs = torch_restart_run(IgnoredRestart)
    (warning,) = record.warnings
    assert f"LR {lrs[0]:.1e} on the first step after the restart is below half the restart's peak 1.0e-01" in warning


def test_restart_lr_with_a_re_warmup_checks_the_first_lr():
    """With restart_warmup_steps the effect records the first LR and the check measures against it: no false warning."""

    def warm(opt, **kwargs):
        return StagedCosine(opt, **kwargs, restart_warmup_steps=3)

    record, first_lr = restart_run(warm)
    (effect,) = [a.effect for a in record.actions]
    assert effect["peak"] == BASE and effect["first_lr"] == effect["lr"][1] == BASE / 4 == first_lr
    assert record.warnings == []


def test_set_cutoff_calls_the_model_and_records_before_after():
    """SetCutoff calls model.set_cutoff(n, preserve=...) and records the cutoff before and after."""
    model = FakeModel(cutoff=128)
    ctx = Context(clock=Clock(), objects={"model": model})
    assert SetCutoff(256)(ctx) == {"cutoff": [128, 256]}
    assert SetCutoff(None, preserve=True)(ctx) == {"cutoff": [256, 513]}
    assert model.calls == [(256, False), (None, True)]  # the default is the seed's noisy opening


def test_set_cutoff_repr_validation_and_requires():
    """SetCutoff's repr is the first release's (it is in saved fingerprints); bad n is refused; it requires a model."""
    assert [repr(SetCutoff(128, preserve=True)), repr(SetCutoff(None, preserve=True)), repr(SetCutoff(64))] == [
        "SetCutoff(128)",
        "SetCutoff(None)",
        "SetCutoff(64, preserve=False)",
    ]
    for bad in (0, 2.5, True, "128"):
        with pytest.raises(CurriculumError, match="'n'"):
            SetCutoff(bad)
    with pytest.raises(CurriculumError, match="'model'"):
        CurriculumEngine(Curriculum([Phase("a", on_enter=[SetCutoff(128)])], [])).start()


def test_set_cutoff_needs_a_model_with_set_cutoff():
    """A registered model without set_cutoff is a clear error naming what it needs."""
    with pytest.raises(CurriculumError, match=r"set_cutoff\(n, preserve=...\)"):
        SetCutoff(8)(Context(clock=Clock(), objects={"model": torch.nn.Linear(1, 1)}))


def test_reset_window_clears_plateau_without_phase_change():
    """ResetWindow(plateau) empties that plateau's window (also inside all_of) and records the fill."""
    plateau = Plateau(window=4, threshold=0.005)
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [
            Transition("a", "b", [all_of(MinSteps(1000), plateau)], when="step_end"),
            Transition("a", "a", [MinSteps(3)], actions=[ResetWindow(plateau)], when="step_end"),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    for _ in range(2):
        eng.step_end(loss=1.0)
    assert plateau.filled == 2
    record = eng.step_end(loss=1.0)
    assert record.actions[0].effect == {"filled": [[3], [0]]} and plateau.filled == 0
    direct = ResetWindow(all_of(MinSteps(1), plateau))
    plateau.push(1.0)
    assert direct(Context(clock=Clock())) == {"filled": [[1], [0]]}


def test_reset_window_repr_and_validation():
    """ResetWindow's repr shows its guards; it needs at least one guard with reset()."""
    assert repr(ResetWindow(Plateau(window=10, threshold=0.01))) == "ResetWindow(Plateau(window=10, threshold=0.01))"
    with pytest.raises(CurriculumError, match="at least one guard"):
        ResetWindow()
    with pytest.raises(CurriculumError, match=r"reset\(\)"):
        ResetWindow(MinEpoch(1))
