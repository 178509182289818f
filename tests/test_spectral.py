"""The seed's spectral curriculum, its resume rule, and a simulated run through the engine (policies.spectral)."""

import copy
import json
import math

import pytest
import torch

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from policies import MinEpoch, Plateau, StagedCosine, all_of, phase_for_epoch, spectral_curriculum
from tests.utils import FakeModel

BASE, SPE, EPOCHS, WINDOW, THRESHOLD = 2e-4, 20, 12, 10, 0.005
MIN_EPOCHS = {"cutoff_128": 2, "cutoff_256": 5, "cutoff_512": 10}

# Per phase: loss = floor + amplitude * exp(-t / tau), t = steps since the phase was entered. The
# 128 phase still improves > 0.5% at epoch 2 and plateaus by 3; the 256 phase plateaus by 4 (its
# minimum is 5); the 512 phase plateaus by 7 (its minimum is 10).
CURVES = {
    "cutoff_128": (1.0, 2.0, 9.0),
    "cutoff_256": (0.8, 0.5, 2.5),
    "cutoff_512": (0.6, 0.4, 7.0),
    "full": (0.5, 0.3, 6.0),
}


def synthetic_loss(phase, t):
    floor, amplitude, tau = CURVES[phase]
    return floor + amplitude * math.exp(-t / tau)


class Run:
    """The training objects of one simulated run, built fresh (optionally restored from a snapshot)."""

    def __init__(self, snapshot=None):
        torch.manual_seed(0)
        self.net = torch.nn.Linear(2, 1)
        self.model = FakeModel()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=BASE)
        self.sched = StagedCosine(self.opt, base_lr=BASE, steps_per_epoch=SPE, total_epochs=EPOCHS)
        self.engine = CurriculumEngine(
            spectral_curriculum(window=WINDOW, threshold=THRESHOLD),
            model=self.model,
            optimizer=self.opt,
            schedule=self.sched,
        )
        self.lrs, self.losses = [], {}  # losses: phase -> the values fed while it was current
        if snapshot is None:
            self.engine.start()
        else:
            self.net.load_state_dict(snapshot["net"])
            self.model.cutoff = snapshot["cutoff"]
            self.opt.load_state_dict(snapshot["opt"])
            self.sched.load_state_dict(snapshot["sched"])
            self.engine.load_state_dict(snapshot["engine"])

    def snapshot(self):
        return json.loads(
            json.dumps(
                {"sched": self.sched.state_dict(), "engine": self.engine.state_dict(), "cutoff": self.model.cutoff}
            )
        ) | {
            "net": copy.deepcopy(self.net.state_dict()),
            "opt": copy.deepcopy(self.opt.state_dict()),
        }

    def step(self):
        """The loop's order: optimizer.step(), schedule.step(), engine.step_end(loss, lr)."""
        phase, t = self.engine.phase.name, self.engine.clock.steps_in_phase + 1
        loss = synthetic_loss(phase, t)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.zero_grad()
        self.net(torch.ones(3, 2)).pow(2).mean().backward()
        self.opt.step()
        self.sched.step()
        self.lrs.append(lr)
        self.losses.setdefault(phase, []).append(loss)
        return self.engine.step_end(loss=loss, lr=lr)


def simulate(cut=None):
    """Run 12 epochs; at `cut` = (epoch, step_in_epoch) snapshot through JSON and continue in fresh objects."""
    run, lrs, boundaries = Run(), [], []
    while run.engine.clock.epoch < EPOCHS:
        if (run.engine.clock.epoch, run.engine.clock.step_in_epoch) == cut:
            lrs += run.lrs
            run = Run(run.snapshot())
        if run.engine.clock.step_in_epoch < SPE:
            run.step()
            continue
        phase = run.engine.phase.name
        window = run.losses.get(phase, [])[-WINDOW:]
        record = run.engine.epoch_end()
        boundaries.append((run.engine.clock.epoch, phase, window, record))
    return run, lrs + run.lrs, boundaries


def relative_improvement(window):
    older, newer = window[: WINDOW // 2], window[WINDOW // 2 :]
    return (sum(older) - sum(newer)) / abs(sum(older))


def test_simulated_run_raises_when_min_epoch_and_plateau_both_hold():
    """Raises happen at the first boundary where the minimum epoch is reached and the window plateaued."""
    run, lrs, boundaries = simulate()
    raised = []
    for epoch, phase, window, record in boundaries:
        if phase == "full":
            assert record is None
            continue
        plateaued = len(window) == WINDOW and relative_improvement(window) < THRESHOLD
        should = epoch >= MIN_EPOCHS[phase] and plateaued
        assert (record is not None) == should, (epoch, phase)
        if record is not None:
            raised.append((epoch, record.source, record.dest))
    assert raised == [(3, "cutoff_128", "cutoff_256"), (5, "cutoff_256", "cutoff_512"), (10, "cutoff_512", "full")]
    # the cases the curves were built for: improving past the minimum, plateaued before the minimum
    assert [e for e, p, w, r in boundaries if p == "cutoff_128" and r is None and e >= 2] == [2]
    assert [
        e
        for e, p, w, r in boundaries
        if p == "cutoff_512" and r is None and len(w) == WINDOW and relative_improvement(w) < THRESHOLD
    ] == [7, 8, 9]
    assert run.model.calls == [(128, False), (256, False), (512, False), (None, False)] and run.model.cutoff == 513


def test_simulated_run_lr_at_peak_after_each_raise_and_evidence():
    """The first step after each raise runs at peak (no health warning); records hold the plateau evidence."""
    run, lrs, _ = simulate()
    start, *history = run.engine.history
    assert start.point == "start" and [a.action for a in start.actions] == ["SetCutoff(128, preserve=False)"]
    assert [r.global_step for r in history] == [60, 100, 200]
    for record in history:
        assert lrs[record.global_step] == BASE
        assert record.warnings == []
        assert record.actions[0].action == "RestartLR()" and record.actions[0].effect["lr"][1] == BASE
        assert record.actions[1].action.startswith("SetCutoff(")
        (guard,) = record.guards
        assert guard.guard == f"all_of(MinEpoch({MIN_EPOCHS[record.source]}), Plateau(window=10, threshold=0.005))"
        plateau = guard.evidence["Plateau(window=10, threshold=0.005)"]
        assert set(plateau) >= {"window", "older_mean", "newer_mean", "improvement", "threshold"}
        assert plateau["holds"] and plateau["improvement"] < THRESHOLD
    # before: mid-stage at steps 60 (stage 40..99) and 200 (stage 100..239); at 100 a stage starts anyway
    befores = [r.actions[0].effect["lr"][0] for r in history]
    assert befores[0] == pytest.approx(BASE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 20 / 60))), rel=1e-12)
    assert befores[1] == BASE
    assert befores[2] == pytest.approx(BASE * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 100 / 140))), rel=1e-12)
    # the mid-stage restart at step 60 starts a 40-step cycle to the stage's end at step 100
    assert lrs[61] == pytest.approx(BASE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 40))), rel=1e-12)


@pytest.mark.parametrize("cut", [(1, 13), (3, 0), (4, 7), (5, 0), (9, 19), (11, 5)])
def test_snapshot_mid_run_changes_nothing(cut):
    """Snapshot -> JSON -> fresh engine, schedule and optimizer at any point: same history, LRs, clock, weights."""
    whole, whole_lrs, _ = simulate()
    resumed, resumed_lrs, _ = simulate(cut)
    assert resumed_lrs == whole_lrs
    assert [r.comparable() for r in resumed.engine.history] == [r.comparable() for r in whole.engine.history]
    assert resumed.engine.clock == whole.engine.clock
    assert resumed.model.cutoff == whole.model.cutoff
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.parameters(), whole.net.parameters()))


def test_spectral_curriculum_structure():
    """Phases cutoff_128, cutoff_256, cutoff_512, full with SetCutoff (noisy opening) on enter; raises guarded and
    firing RestartLR."""
    cur = spectral_curriculum()
    assert [p.name for p in cur.phases] == ["cutoff_128", "cutoff_256", "cutoff_512", "full"]
    assert [[repr(a) for a in p.on_enter] for p in cur.phases] == [
        ["SetCutoff(128, preserve=False)"],
        ["SetCutoff(256, preserve=False)"],
        ["SetCutoff(512, preserve=False)"],
        ["SetCutoff(None, preserve=False)"],
    ]
    assert [
        (t.source, t.dest, t.when, [repr(g) for g in t.guards], [repr(a) for a in t.actions]) for t in cur.transitions
    ] == [
        (
            "cutoff_128",
            "cutoff_256",
            Point.EPOCH_END,
            ["all_of(MinEpoch(2), Plateau(window=50, threshold=0.005))"],
            ["RestartLR()"],
        ),
        (
            "cutoff_256",
            "cutoff_512",
            Point.EPOCH_END,
            ["all_of(MinEpoch(5), Plateau(window=50, threshold=0.005))"],
            ["RestartLR()"],
        ),
        (
            "cutoff_512",
            "full",
            Point.EPOCH_END,
            ["all_of(MinEpoch(10), Plateau(window=50, threshold=0.005))"],
            ["RestartLR()"],
        ),
    ]
    assert cur.fingerprint() == spectral_curriculum().fingerprint()


def test_spectral_curriculum_custom_arguments():
    """Cutoffs name the phases; preserve reaches every SetCutoff; window and threshold reach every Plateau."""
    cur = spectral_curriculum(n_bins=65, cutoffs=(8, 32), min_epochs=(1, 1), window=20, threshold=0.01, preserve=True)
    assert [p.name for p in cur.phases] == ["cutoff_8", "cutoff_32", "full"]
    assert [repr(p.on_enter[0]) for p in cur.phases] == ["SetCutoff(8)", "SetCutoff(32)", "SetCutoff(None)"]
    assert all(p.on_enter[0].preserve for p in cur.phases)
    assert repr(cur.transitions[1].guards[0]) == "all_of(MinEpoch(1), Plateau(window=20, threshold=0.01))"
    assert cur.transitions[0].guards[0].guards[1] is not cur.transitions[1].guards[0].guards[1]  # one window each


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cutoffs": (256, 128, 512)}, "strictly increasing"),
        ({"cutoffs": (128, 128, 512)}, "strictly increasing"),
        ({"cutoffs": (0, 256, 512)}, r"SetCutoff: 'n' must be an int >= 1 .*, got 0"),
        ({"cutoffs": (128, 256, 513)}, r"below n_bins=513"),
        ({"min_epochs": (2, 5)}, "one minimum epoch per cutoff"),
        ({"min_epochs": (5, 2, 10)}, "not decreasing"),
        ({"min_epochs": (-1, 2, 10)}, ">= 0"),
        ({"cutoffs": (128.0, 256, 512)}, "an int"),
        ({"window": 5}, "even"),
        ({"preserve": "yes"}, "'preserve'"),
    ],
)
def test_spectral_curriculum_validation(kwargs, match):
    """Bad cutoffs, min_epochs or plateau settings are CurriculumErrors naming the field."""
    with pytest.raises(CurriculumError, match=match):
        spectral_curriculum(**kwargs)


def test_spectral_curriculum_requires_the_training_objects():
    """Starting the engine without the schedule fails, naming RestartLR."""
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    with pytest.raises(CurriculumError, match=r"RestartLR\(\).*'schedule'"):
        CurriculumEngine(spectral_curriculum(), model=FakeModel(), optimizer=opt).start()


@pytest.mark.parametrize(
    "epochs, phase",
    [
        (0, "cutoff_128"),
        (1, "cutoff_128"),
        (2, "cutoff_256"),
        (4, "cutoff_256"),
        (5, "cutoff_512"),
        (10, "full"),
        (30, "full"),
    ],
)
def test_phase_for_epoch_on_the_seed_curriculum(epochs, phase):
    """Without engine state a run resumes in the highest phase whose minimum epoch it completed."""
    assert phase_for_epoch(spectral_curriculum(), epochs) == phase


def test_phase_for_epoch_in_phase_minimum_and_unconstrained_transitions():
    """In-phase minimums count from the earliest entry; transitions without MinEpoch are not followed."""
    cur = Curriculum(
        [Phase("a"), Phase("b"), Phase("c"), Phase("d")],
        [
            Transition("a", "b", [MinEpoch(2)]),
            Transition("b", "c", [all_of(MinEpoch(3, in_phase=True), Plateau(window=2))]),
            Transition("c", "d", [Plateau(window=2)]),
        ],
    )
    assert [phase_for_epoch(cur, e) for e in (1, 2, 4, 5, 50)] == ["a", "b", "b", "c", "c"]
    with pytest.raises(CurriculumError, match="epochs_completed"):
        phase_for_epoch(cur, -1)
