"""How close the next transition is (engine.progress): the guards' evidence now, and per step of a recorded run."""

from __future__ import annotations

import pytest

from engine import Curriculum, CurriculumEngine, Phase, Transition
from engine.plot import plot_run
from engine.progress import guard_progress, progress_series
from policies import MetricBelow, MinEpoch, MinSteps, Plateau, all_of


def test_guard_progress_says_how_close_each_transition_out_of_the_phase_is():
    """A plateau's improvement beside its threshold and a counter beside its minimum, for every transition out of
    the current phase; a guard deciding on a metric passed at its point (none between points) is left out."""
    c = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "b", [all_of(MinEpoch(2), Plateau(window=4))]),
            Transition("a", "c", [MetricBelow("val_loss", 1.0), MinSteps(10), MinSteps(20, in_phase=True)]),
        ],
    )
    engine = CurriculumEngine(c)
    engine.start()
    for loss in (3.0, 2.9, 2.8, 2.7):
        engine.step_end(loss=loss)
    progress = guard_progress(engine)
    assert progress["next/b/Plateau/improvement"] == pytest.approx((2.95 - 2.75) / 2.95)
    assert progress["next/b/Plateau/threshold"] == 0.005
    assert (progress["next/b/MinEpoch/epoch"], progress["next/b/MinEpoch/min_epoch"]) == (0, 2)
    assert progress["next/c/MinSteps/global_step"] == 4.0
    assert progress["next/c/MinSteps_2/steps_in_phase"] == 4.0
    assert progress["next/c/MinSteps_2/min_steps"] == 20.0
    assert not any("MetricBelow" in tag for tag in progress)
    engine.force("b", reason="by hand")
    assert guard_progress(engine) == {}  # b has no way out


def test_progress_series_replays_the_run_to_the_evidence_its_transition_recorded(tmp_path):
    """Per step, the plateau's improvement as the run's guard saw it: at the step of the transition it is the
    improvement the record holds; after it (no way out of the last phase) the series ends; plot_run draws it."""
    c = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [all_of(MinEpoch(1), Plateau(window=4))])])
    engine = CurriculumEngine(c, record_metrics=True)
    engine.start()
    for epoch in range(3):
        for step in range(5):
            engine.step_end(loss=2.0 + 1.0 / (1 + 5 * epoch + step) ** 2)
        engine.epoch_end()
    (move,) = [r for r in engine.history if r.source == "a"]
    steps, values = progress_series(c, engine.recorded)["next/b/Plateau/improvement"]
    assert steps[-1] == move.global_step  # the last step in phase a, where the epoch end fired
    (conjunction,) = move.guards
    assert values[-1] == conjunction.evidence["Plateau(window=4, threshold=0.005)"]["improvement"]
    assert len(steps) == move.global_step - 3  # from the step the window is full (4) on
    assert plot_run(engine, tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
