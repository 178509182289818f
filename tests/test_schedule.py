"""The stage-aligned cosine LR schedule (policies.schedule.StagedCosine)."""

import json
import math

import pytest
import torch

from engine import Clock, Context, CurriculumError
from policies import StagedCosine

BASE = 2e-4
SPE = 10  # steps per epoch


def formula(peak, low, i, n, base=BASE):
    """The LR of the i-th step of an n-step cycle."""
    return base * (low + (peak - low) * 0.5 * (1 + math.cos(math.pi * i / n)))


def make(total_epochs=8, groups=1, **kwargs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p], "lr": 0.5 * (k + 1)} for k, p in enumerate(params)], lr=1.0)
    return opt, StagedCosine(opt, base_lr=BASE, steps_per_epoch=SPE, total_epochs=total_epochs, **kwargs)


def lrs(sched, steps):
    """The LR each of the next `steps` steps runs at, stepping the optimizer then the schedule after each."""
    out = []
    for _ in range(steps):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


def test_first_and_last_step_of_each_seed_stage():
    """With the seed's stages over 8 epochs, each stage's first and last steps follow the formula."""
    _, sched = make(total_epochs=8)
    seen = lrs(sched, 80)
    # stages: epochs 0-1 (steps 0..19), 2-4 (20..49), 5-7 (50..79)
    for start, n, peak, low in [(0, 20, 1.0, 0.1), (20, 30, 1.0, 0.1), (50, 30, 1.0, 0.05)]:
        assert seen[start] == pytest.approx(BASE * peak, rel=1e-12)
        assert seen[start + n - 1] == pytest.approx(formula(peak, low, n - 1, n), rel=1e-12)
        assert seen[start + n // 3] == pytest.approx(formula(peak, low, n // 3, n), rel=1e-12)


def test_lr_of_step_zero_set_at_construction_for_every_group():
    """Construction writes step 0's LR to every param group, and get_last_lr/lr report it."""
    opt, sched = make(groups=2, stages=((0, 0.5, 0.1),))
    assert [g["lr"] for g in opt.param_groups] == [BASE * 0.5, BASE * 0.5]
    assert sched.get_last_lr() == [BASE * 0.5, BASE * 0.5] and sched.lr == BASE * 0.5


def test_stages_at_or_after_the_end_are_dropped():
    """A stage starting at or after total_epochs is dropped; the last kept stage ends with training."""
    _, sched = make(total_epochs=4)  # seed stages: 0-1, 2-3 (the stage at epoch 5 is dropped)
    seen = lrs(sched, 40)
    assert seen[20] == pytest.approx(BASE, rel=1e-12)
    assert seen[39] == pytest.approx(formula(1.0, 0.1, 19, 20), rel=1e-12)


def test_past_the_end_keeps_the_last_stage_min():
    """After total_epochs the LR stays at base_lr times the last stage's min."""
    _, sched = make(total_epochs=8)
    seen = lrs(sched, 100)
    assert seen[80:] == [BASE * 0.05] * 20


def test_mid_stage_restart_takes_effect_at_once():
    """restart() sets peak on the optimizer now; the new cycle runs to the end of the step's stage."""
    opt, sched = make(total_epochs=8)
    lrs(sched, 30)  # step 30 (in stage 20..49) is about to run
    before = opt.param_groups[0]["lr"]
    assert before == pytest.approx(formula(1.0, 0.1, 10, 30), rel=1e-12)
    assert sched.restart() == (before, BASE)
    assert opt.param_groups[0]["lr"] == BASE
    seen = lrs(sched, 25)  # steps 30..54
    assert seen[0] == BASE
    assert seen[1] == pytest.approx(formula(1.0, 0.1, 1, 20), rel=1e-12)
    assert seen[19] == pytest.approx(formula(1.0, 0.1, 19, 20), rel=1e-12)  # step 49: the stage's last
    assert seen[20] == BASE  # step 50: the next stage starts its own cycle
    assert seen[24] == pytest.approx(formula(1.0, 0.05, 4, 30), rel=1e-12)


def test_restart_on_last_step_of_stage_and_past_the_end():
    """A restart on a stage's last step runs that one step at peak; past the end likewise, then min."""
    _, sched = make(total_epochs=8)
    lrs(sched, 49)
    sched.restart()
    assert lrs(sched, 2) == [BASE, BASE]
    lrs(sched, 40)  # now at step 91, past the end (80)
    sched.restart()
    assert lrs(sched, 2) == [BASE, BASE * 0.05]


def test_peak_lr_is_the_stage_peak():
    """peak_lr is base_lr times the peak of the stage of the step about to run."""
    _, sched = make(total_epochs=8, stages=((0, 1.0, 0.1), (2, 0.5, 0.1)))
    assert sched.peak_lr == BASE
    lrs(sched, 25)
    assert sched.peak_lr == BASE * 0.5


def test_warmup_ramps_linearly_then_the_cycle_starts_at_peak():
    """With warmup W the steps 0..W-1 run at peak*(s+1)/(W+1), step W at peak, then a cosine to the stage end."""
    _, sched = make(total_epochs=8, warmup_steps=4)
    seen = lrs(sched, 21)
    assert seen[:4] == pytest.approx([BASE * (s + 1) / 5 for s in range(4)], rel=1e-12)
    assert seen[4] == BASE
    assert seen[19] == pytest.approx(formula(1.0, 0.1, 15, 16), rel=1e-12)
    assert seen[20] == BASE


def test_restart_during_warmup_ends_it():
    """A restart during the warmup runs at peak at once and decays to the first stage's end."""
    _, sched = make(total_epochs=8, warmup_steps=10)
    lrs(sched, 2)
    sched.restart()
    seen = lrs(sched, 18)
    assert seen[0] == BASE and seen[17] == pytest.approx(formula(1.0, 0.1, 17, 18), rel=1e-12)


def run_with_restart(opt_sched, steps, restart_at):
    opt, sched = opt_sched
    out = []
    for s in range(steps):
        if s == restart_at:
            sched.restart()
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("cut", [0, 7, 27, 33, 50, 79, 85])
def test_state_dict_restores_bit_identical_lrs(cut):
    """Snapshot (JSON) at any step, restore after optimizer.load_state_dict: the LRs are bit-identical."""
    whole = run_with_restart(make(total_epochs=8, warmup_steps=3), 90, restart_at=33)
    opt, sched = make(total_epochs=8, warmup_steps=3)
    first = run_with_restart((opt, sched), cut, restart_at=33)
    opt_state, sched_state = opt.state_dict(), json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    opt2, sched2 = make(total_epochs=8, warmup_steps=3)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    rest = run_with_restart((opt2, sched2), 90 - cut, restart_at=33 - cut)
    assert first + rest == whole


def test_more_epochs_on_resume_stretch_the_stage_in_progress():
    """Restored with larger total_epochs, the last stage (and its restart cycle) runs to the new end."""
    opt, sched = make(total_epochs=8)
    lrs(sched, 60)
    sched.restart()  # cycle 60..79 under total_epochs=8
    lrs(sched, 5)
    opt2, sched2 = make(total_epochs=12)
    sched2.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    seen = lrs(sched2, 56)  # steps 65..120
    assert seen[0] == pytest.approx(formula(1.0, 0.05, 5, 60), rel=1e-12)  # cycle 60..119
    assert seen[54] == pytest.approx(formula(1.0, 0.05, 59, 60), rel=1e-12)
    assert seen[55] == BASE * 0.05


def test_fewer_epochs_on_resume_use_the_new_layout():
    """Restored with fewer total_epochs, a stage that no longer exists gives way to the new layout."""
    opt, sched = make(total_epochs=8)
    lrs(sched, 55)  # in stage 5-7 (steps 50..79)
    opt2, sched2 = make(total_epochs=5)  # stages 0-1, 2-4: step 55 is past the end
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == BASE * 0.1
    opt3, sched3 = make(total_epochs=4)  # stage 2-3 ends at step 40
    sched3.load_state_dict({**sched.state_dict(), "step": 35})
    assert sched3.lr == pytest.approx(formula(1.0, 0.1, 15, 20), rel=1e-12)


def test_load_state_dict_rejects_malformed_state():
    """A state without an int step is a clear CurriculumError."""
    _, sched = make()
    with pytest.raises(CurriculumError, match="'step'"):
        sched.load_state_dict({"step": "3", "cycle_start": 0})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_lr": 0.0}, r"'base_lr' must be a finite number > 0, got 0.0"),
        ({"base_lr": math.inf}, "'base_lr'"),
        ({"steps_per_epoch": 0}, "'steps_per_epoch'"),
        ({"total_epochs": 0}, "'total_epochs'"),
        ({"stages": ((1, 1.0, 0.1),)}, r"stages\[0\]\[0\]' must be 0"),
        ({"stages": ((0, 1.0, 0.1), (5, 1.0, 0.1), (2, 1.0, 0.1))}, "strictly increasing"),
        ({"stages": ((0, 0.1, 1.0),)}, "min <= peak"),
        ({"stages": ((0, 1.0),)}, "triple"),
        ({"stages": ()}, "non-empty"),
        ({"warmup_steps": 20}, "shorter than the first stage"),
        ({"warmup_steps": -1}, "'warmup_steps'"),
    ],
)
def test_validation(kwargs, match):
    """Bad arguments are CurriculumErrors naming the field, the expectation and the value."""
    args = {"base_lr": BASE, "steps_per_epoch": SPE, "total_epochs": 8, **kwargs}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(CurriculumError, match=match):
        StagedCosine(opt, **args)


def test_rejects_non_optimizer():
    """Something without param_groups is refused as the optimizer."""
    with pytest.raises(CurriculumError, match="'optimizer'"):
        StagedCosine(object(), base_lr=BASE, steps_per_epoch=SPE, total_epochs=8)


def test_repr_reads_like_the_call():
    """The schedule's repr shows its configuration."""
    _, sched = make(total_epochs=8)
    assert repr(sched) == (
        "StagedCosine(base_lr=0.0002, steps_per_epoch=10, total_epochs=8, "
        "stages=((0, 1.0, 0.1), (2, 1.0, 0.1), (5, 1.0, 0.05)), warmup_steps=0)"
    )


def test_extending_at_a_stage_boundary_is_exact():
    """A 2-epoch schedule extended to 3 epochs on resume gives the LRs a 3-epoch schedule runs."""
    import torch

    from policies import StagedCosine

    def opt():
        return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)

    long_opt, short_opt = opt(), opt()
    long = StagedCosine(long_opt, base_lr=1e-3, steps_per_epoch=4, total_epochs=3)
    short = StagedCosine(short_opt, base_lr=1e-3, steps_per_epoch=4, total_epochs=2)
    for _ in range(8):
        long_opt.step(), short_opt.step()
        long.step()
        short.step()
    assert short.lr == long.lr == 1e-3  # step 8 opens stage 2 at peak in both
    resumed_opt = opt()
    resumed = StagedCosine(resumed_opt, base_lr=1e-3, steps_per_epoch=4, total_epochs=3)
    resumed.load_state_dict(short.state_dict())
    lrs_long, lrs_resumed = [], []
    for _ in range(4):
        long_opt.step(), resumed_opt.step()
        long.step()
        resumed.step()
        lrs_long.append(long.lr)
        lrs_resumed.append(resumed.lr)
    assert lrs_resumed == lrs_long


def test_is_a_torch_lr_scheduler():
    """StagedCosine is a torch LRScheduler: last_epoch counts steps, and step(epoch) is refused with the fix."""
    opt, sched = make(total_epochs=8)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    lrs(sched, 3)
    assert sched.last_epoch == 3 and sched.get_last_lr() == [sched.lr]
    with pytest.raises(CurriculumError, match=r"call step\(\) with no argument"):
        sched.step(5)


def test_stages_in_steps_equal_the_same_stages_in_epochs():
    """Stages given in steps with total_steps run exactly the LRs of the same stages given in epochs."""
    _, by_epoch = make(total_epochs=8, warmup_steps=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    by_step = StagedCosine(
        opt,
        base_lr=BASE,
        total_steps=80,
        stages=((0, 1.0, 0.1), (20, 1.0, 0.1), (50, 1.0, 0.05)),
        stages_in="steps",
        warmup_steps=3,
    )
    assert lrs(by_step, 90) == lrs(by_epoch, 90)
    assert repr(by_step) == (
        "StagedCosine(base_lr=0.0002, total_steps=80, stages=((0, 1.0, 0.1), (20, 1.0, 0.1), (50, 1.0, 0.05)), "
        "stages_in='steps', warmup_steps=3)"
    )


def test_stages_in_steps_with_total_epochs():
    """Stages in steps also work with the run's length in epochs (steps_per_epoch x total_epochs)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = StagedCosine(
        opt, base_lr=BASE, steps_per_epoch=SPE, total_epochs=3, stages=((0, 1.0, 0.1), (7, 0.5, 0.1)), stages_in="steps"
    )
    seen = lrs(sched, 30)
    assert seen[6] == pytest.approx(formula(1.0, 0.1, 6, 7), rel=1e-12)
    assert seen[7] == BASE * 0.5 and seen[29] == pytest.approx(formula(0.5, 0.1, 22, 23), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 80, "stages_in": "steps"}, r"'stages' must be stages in steps"),
        (
            {"total_steps": 80, "stages_in": "weeks", "stages": ((0, 1.0, 0.1),)},
            r"'stages_in' must be 'epochs' or 'steps'",
        ),
        ({"steps_per_epoch": SPE, "total_epochs": 8, "total_steps": 80}, "exactly one"),
        ({"steps_per_epoch": SPE}, "exactly one"),
        ({"total_steps": 80}, r"'steps_per_epoch' must be an int >= 1 \(needed to count stages in epochs"),
        ({"total_epochs": 8}, r"'steps_per_epoch' must be an int >= 1 \(needed to count total_epochs"),
        ({"total_steps": 0, "stages_in": "steps", "stages": ((0, 1.0, 0.1),)}, "'total_steps'"),
        ({"steps_per_epoch": SPE, "total_epochs": 8, "restart_warmup_steps": -2}, "'restart_warmup_steps'"),
        (
            {"total_steps": 80, "stages_in": "steps", "stages": ((0, 1.0, 0.1), (0, 1.0, 0.1))},
            r"sort the stages by start_step",
        ),
    ],
)
def test_length_and_unit_validation(kwargs, match):
    """The run's length, the stage unit and the re-warmup are checked with errors that say the fix."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(CurriculumError, match=match):
        StagedCosine(opt, base_lr=BASE, **kwargs)


def test_restart_warmup_ramps_then_runs_the_cosine_to_the_stage_end():
    """With restart_warmup_steps=R a restart ramps over R steps, then peaks and decays to the stage end."""
    opt, sched = make(total_epochs=8, restart_warmup_steps=4)
    lrs(sched, 30)
    before = sched.lr
    assert sched.restart_lr == BASE / 5 and sched.peak_lr == BASE
    assert sched.restart() == (before, BASE / 5)
    assert opt.param_groups[0]["lr"] == BASE / 5  # at once
    seen = lrs(sched, 21)  # steps 30..50
    assert seen[:4] == pytest.approx([BASE * (j + 1) / 5 for j in range(4)], rel=1e-12)
    assert seen[4] == BASE  # step 34: the cosine cycle 34..49 starts at peak
    assert seen[5] == pytest.approx(formula(1.0, 0.1, 1, 16), rel=1e-12)
    assert seen[19] == pytest.approx(formula(1.0, 0.1, 15, 16), rel=1e-12)
    assert seen[20] == BASE  # step 50: the next stage's own cycle
    assert "restart_warmup_steps=4" in repr(sched)


def test_restart_warmup_is_cut_by_the_next_stage():
    """A re-warmup that would cross a stage start stops there: the new stage starts at its peak."""
    _, sched = make(total_epochs=8, restart_warmup_steps=5)
    lrs(sched, 47)
    sched.restart()
    seen = lrs(sched, 5)  # steps 47..51
    assert seen[:3] == pytest.approx([BASE * (j + 1) / 6 for j in range(3)], rel=1e-12)
    assert seen[3] == BASE and seen[4] == pytest.approx(formula(1.0, 0.05, 1, 30), rel=1e-12)


@pytest.mark.parametrize("cut", [0, 5, 20, 31, 34, 36, 52])
def test_state_dict_restores_a_re_warmup_bit_identically(cut):
    """Snapshot inside or after a re-warmup (stages in steps): the restored schedule's LRs are bit-identical."""

    def build():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, StagedCosine(
            opt,
            base_lr=BASE,
            total_steps=60,
            stages=((0, 1.0, 0.1), (45, 0.5, 0.0)),
            stages_in="steps",
            warmup_steps=2,
            restart_warmup_steps=4,
        )

    whole = run_with_restart(build(), 60, restart_at=31)
    opt, sched = build()
    first = run_with_restart((opt, sched), cut, restart_at=31)
    opt_state, sched_state = opt.state_dict(), json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    opt2, sched2 = build()
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert first + run_with_restart((opt2, sched2), 60 - cut, restart_at=31 - cut) == whole


@pytest.mark.parametrize("cut", [2, 33, 40])
def test_state_without_the_new_keys_restores_as_before(cut):
    """A state written before re-warmups (no warmup_start, no total_steps) restores to the same LRs."""
    whole = run_with_restart(make(total_epochs=8, warmup_steps=3), 60, restart_at=33)
    opt, sched = make(total_epochs=8, warmup_steps=3)
    first = run_with_restart((opt, sched), cut, restart_at=33)
    old = {k: v for k, v in sched.state_dict().items() if k not in ("warmup_start", "total_steps")}
    opt2, sched2 = make(total_epochs=8, warmup_steps=3)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(old)
    assert first + run_with_restart((opt2, sched2), 60 - cut, restart_at=33 - cut) == whole


# -- Restartable -------------------------------------------------------------------------------


def cosine(opt=None, t_max=100):
    opt = opt or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=0.001)


def one_cycle(opt=None, t=60):
    opt = opt or torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=t)


def sequential(opt=None):
    opt = opt or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    decay = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[5])


def group_values(opt):
    """What torch's schedulers write into the first param group: the LR and the momentum (or betas)."""
    g = opt.param_groups[0]
    return (g["lr"], g.get("momentum"), g.get("betas"))


def run_restartable(sched, steps, restart_at=None):
    """Per step: (restart if due), record the group's LR and momentum, optimizer.step(), schedule.step()."""
    out = []
    for s in range(steps):
        if s == restart_at:
            sched.restart()
        out.append(group_values(sched.optimizer))
        sched.optimizer.step()
        sched.step()
    return out


@pytest.mark.parametrize("build", [cosine, one_cycle, sequential])
def test_restartable_restart_replays_a_fresh_schedule(build):
    """Restarted at step 30, the wrapped schedule runs exactly a fresh one's LRs (and momenta), step for step."""
    from policies import Restartable

    fresh = run_restartable(Restartable(build()), 40)
    sched = Restartable(build())
    seen = run_restartable(sched, 70, restart_at=30)
    assert seen[30:] == fresh
    assert sched.last_epoch == 70 and isinstance(sched, torch.optim.lr_scheduler.LRScheduler)


def test_restartable_cosine_annealing_restarted_at_30():
    """CosineAnnealingLR(T_max=100) restarted at step 30 gives a fresh one's LRs from there on."""
    from policies import Restartable

    plain = cosine()
    fresh = []
    for _ in range(100):
        fresh.append(plain.get_last_lr()[0])
        plain.optimizer.step()
        plain.step()
    sched = Restartable(cosine())
    seen = [lr for lr, _, _ in run_restartable(sched, 130, restart_at=30)]
    assert seen[:30] == fresh[:30] and seen[30:] == fresh
    assert sched.restart_lr == sched.peak_lr == 0.1 and repr(sched) == "Restartable(CosineAnnealingLR)"


@pytest.mark.parametrize("build", [cosine, one_cycle, sequential])
@pytest.mark.parametrize("cut", [0, 17, 30, 45])
def test_restartable_state_dict_restores_exactly(tmp_path, build, cut):
    """Saved with torch.save, loaded (weights_only) into a fresh wrapper after the optimizer: LRs and restarts continue
    exactly."""
    from policies import Restartable

    whole = run_restartable(Restartable(build()), 60, restart_at=30)
    sched = Restartable(build())
    first = run_restartable(sched, cut, restart_at=30)
    torch.save({"opt": sched.optimizer.state_dict(), "sched": sched.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    again = Restartable(build())
    again.optimizer.load_state_dict(ckpt["opt"])
    again.load_state_dict(ckpt["sched"])
    assert first + run_restartable(again, 60 - cut, restart_at=30 - cut) == whole


def test_restartable_refuses_what_it_cannot_restart():
    """A stepped scheduler, ReduceLROnPlateau, a non-scheduler, a double wrap and a foreign state are clear errors."""
    from policies import Restartable

    stepped = cosine()
    stepped.optimizer.step()
    stepped.step()
    with pytest.raises(CurriculumError, match=r"at its step 0 .* wrap it right after building it"):
        Restartable(stepped)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(CurriculumError, match="ReduceLROnPlateau follows a metric"):
        Restartable(torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
    with pytest.raises(CurriculumError, match=r"'scheduler' must be a torch.optim.lr_scheduler.LRScheduler"):
        Restartable(opt)
    wrapped = Restartable(cosine())
    with pytest.raises(CurriculumError, match="already Restartable"):
        Restartable(wrapped)
    with pytest.raises(CurriculumError, match="loads into the scheduler itself"):
        wrapped.load_state_dict(cosine().state_dict())
    with pytest.raises(CurriculumError, match=r"call step\(\) with no argument"):
        wrapped.step(3)


def linear(opt=None):
    opt = opt or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.01, total_iters=100)


@pytest.mark.parametrize("build, end", [(cosine, 100), (lambda: one_cycle(t=100), 99), (linear, 100)])
def test_restartable_over_remaining_anneals_by_the_end(build, end):
    """over="remaining": restarted at step 30 (and again at 70), the schedule is re-planned over the steps left and is
    at its end LR at its end step (cosine's T_max, OneCycle's total_steps - 1), as an unrestarted one; over="whole" is
    far from it."""
    from policies import Restartable

    plain = run_restartable(Restartable(build()), end + 1)
    sched = Restartable(build(), over="remaining")
    seen = run_restartable(sched, end + 1, restart_at=30)
    assert seen[30][0] == plain[0][0]  # the restart runs the schedule's step 0
    assert seen[-1][0] == pytest.approx(plain[-1][0], rel=1e-9) and plain[-1][0] < 0.02 * plain[0][0]
    whole = run_restartable(Restartable(build()), end + 1, restart_at=30)
    assert whole[-1][0] > 5 * plain[-1][0]
    again = Restartable(build(), over="remaining")
    run_restartable(again, 70, restart_at=30)
    again.restart()  # a second restart at step 70 re-plans over the steps left
    assert run_restartable(again, end + 1 - 70)[-1][0] == pytest.approx(plain[-1][0], rel=1e-9)
    assert repr(sched).endswith(", over='remaining')")


def test_restartable_over_remaining_restores_exactly(tmp_path):
    """A re-planned schedule's state (its new length in the wrapped state) saves and continues exactly."""
    from policies import Restartable

    whole = run_restartable(Restartable(one_cycle(t=100), over="remaining"), 100, restart_at=30)
    sched = Restartable(one_cycle(t=100), over="remaining")
    first = run_restartable(sched, 50, restart_at=30)
    torch.save({"opt": sched.optimizer.state_dict(), "sched": sched.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    again = Restartable(one_cycle(t=100), over="remaining")
    again.optimizer.load_state_dict(ckpt["opt"])
    again.load_state_dict(ckpt["sched"])
    assert first + run_restartable(again, 50) == whole and again.steps_done == sched.steps_done + 50


def test_restartable_peak_is_the_schedules_peak_and_over_is_checked():
    """OneCycleLR's peak is its max_lr, not its warm-up start; over="remaining" needs a schedule with a length."""
    from policies import Restartable, RestartLR

    sched = Restartable(one_cycle())
    assert sched.peak_lr == 0.1 and sched.restart_lr == pytest.approx(0.1 / 25)
    ctx = Context(clock=Clock(), objects={"optimizer": sched.optimizer, "schedule": sched})
    effect = RestartLR()(ctx)
    assert effect["peak"] == 0.1 and effect["first_lr"] == pytest.approx(0.004)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(CurriculumError, match=r"'over'.*StepLR.*use over='whole'"):
        Restartable(torch.optim.lr_scheduler.StepLR(opt, step_size=3), over="remaining")
    with pytest.raises(CurriculumError, match=r"'over' must be 'whole' or 'remaining'"):
        Restartable(cosine(), over="rest")


def test_restartable_around_a_scheduler_the_framework_steps():
    """Restartable.around(s): the framework steps s itself, the wrapper restarts it; the LRs equal a wrapper stepped in
    its place."""
    from policies import Restartable

    stepped_by_us = run_restartable(Restartable(cosine(), over="remaining"), 60, restart_at=30)
    inner = cosine()
    wrapper = Restartable.around(inner, over="remaining")
    seen = []
    for s in range(60):
        if s == 30:
            wrapper.restart()
        seen.append(group_values(inner.optimizer))
        inner.optimizer.step()
        inner.step()  # the framework's call: the wrapper is never stepped
    assert seen == stepped_by_us and wrapper.steps_done == 60
    state = wrapper.state_dict()
    restored = cosine()
    restored.load_state_dict(inner.state_dict())  # the framework restores its scheduler
    again = Restartable.around(restored, state, over="remaining")
    assert again.steps_done == 60 and again.state_dict() == state
    with pytest.raises(CurriculumError, match="'state'"):
        Restartable.around(restored)


def test_fast_forward_equals_stepping_without_the_order_warning(recwarn):
    """fast_forward(n) reaches the LRs n step() calls reach, without torch's step-order warning."""
    _, stepped = make(total_epochs=8, warmup_steps=3)
    lrs(stepped, 37)
    _, forwarded = make(total_epochs=8, warmup_steps=3)
    forwarded.fast_forward(37)
    assert forwarded.state_dict() == stepped.state_dict() and lrs(forwarded, 50) == lrs(stepped, 50)
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
