"""The efficacy experiment's arms are built as BENCHMARKS.md describes them (benchmarks/efficacy.py)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from benchmarks.efficacy import PLANS, QUICK, Execution, build_arms, load_done, report, run_arm, schedule


def describe_arm(arm):
    cur = arm.curriculum()
    return (
        [p.name for p in cur.phases],
        [(t.source, t.dest, [repr(g) for g in t.guards], [repr(a) for a in t.actions]) for t in cur.transitions],
        [[repr(a) for a in p.on_enter] for p in cur.phases],
    )


def test_arms_differ_only_where_the_design_says():
    """A: full band, one cycle; B: fixed epochs; C: plateau; D/F: restarts at C's steps; E/F: white noise."""
    plan = QUICK
    arms = build_arms(plan, c_raise_steps=(40, 80))
    phases, transitions, on_enter = describe_arm(arms["A"])
    assert phases == ["full"] and transitions == [] and on_enter == [["SetCutoff(None)"]]
    assert arms["A"].stages == ((0, 1.0, 0.05),)

    _, transitions, on_enter = describe_arm(arms["B"])
    assert [t[2] for t in transitions] == [[f"MinEpoch({m})"] for m in plan.min_epochs]
    assert all(t[3] == ["RestartLR()"] for t in transitions)
    assert on_enter == [["SetCutoff(8)"], ["SetCutoff(16)"], ["SetCutoff(32)"], ["SetCutoff(None)"]]

    _, c_transitions, c_enter = describe_arm(arms["C"])
    assert [t[2] for t in c_transitions] == [
        [f"all_of(MinEpoch({m}), Plateau(window={plan.window}, threshold={plan.threshold}))"] for m in plan.min_epochs
    ]
    _, e_transitions, e_enter = describe_arm(arms["E"])
    assert (
        e_transitions == c_transitions
        and e_enter[0] == ["SetCutoff(8, preserve=False)"]
        and c_enter[0] == ["SetCutoff(8)"]
    )
    assert (arms["C"].kernel_init, arms["E"].kernel_init) == ("smooth", "white")

    for name in "DF":
        phases, transitions, on_enter = describe_arm(arms[name])
        assert on_enter[0] == ["SetCutoff(None)"]
        assert [t[2] for t in transitions] == [["MinSteps(40)"], ["MinSteps(80)"]]
        assert all(t[3] == ["RestartLR()"] for t in transitions)
    assert (arms["D"].kernel_init, arms["F"].kernel_init) == ("smooth", "white")
    assert {arms[a].stages for a in "BCDEF"} == {plan.stages}


def test_each_arm_curriculum_is_fresh_per_run():
    """Guards hold state, so every run gets new guard objects."""
    arm = build_arms(QUICK)["C"]
    assert arm.curriculum().transitions[0].guards[0] is not arm.curriculum().transitions[0].guards[0]


def test_an_arm_trains_and_records_its_raises():
    """run_arm trains the quick plan and reports per-epoch bpb and each raise with the loss around it."""
    plan = attrs.evolve(QUICK, epochs=3, steps_per_epoch=10, min_epochs=(1, 1, 2), threshold=10.0, window=4)
    result = run_arm(plan, build_arms(plan)["C"], seed=0)
    assert [s for s, _ in result["evals"]] == [10, 20, 30]
    assert [r["step"] for r in result["raises"]] == [10, 20, 30]
    assert result["raises"][0]["cutoff"] == [8, 16] and result["raises"][0]["loss_before"] > 0
    assert len(result["losses"]) == 30


def test_kernel256_plan_has_kernels_as_long_as_the_window():
    """--plan kernel256: d_model 64, 2 layers, seq_len 256, kernel_len 256, 3,000 steps, one seed; else the default."""
    plan = PLANS["kernel256"]
    assert (plan.d_model, plan.n_layers, plan.seq_len, plan.kernel_len) == (64, 2, 256, 256)
    assert plan.epochs * plan.steps_per_epoch == 3000 and plan.seeds == (0,)
    assert attrs.evolve(plan, seq_len=128, kernel_len=32, steps_per_epoch=300, seeds=(0, 1, 2)) == PLANS["default"]


def test_schedule_runs_d_after_c_at_c_raise_steps():
    """Arms run in the order given, except that D waits for C of its seed and restarts where C raised."""
    plan = attrs.evolve(QUICK, epochs=3, steps_per_epoch=10, min_epochs=(1, 1, 2), threshold=10.0, window=4)
    results = []
    with ThreadPoolExecutor(1) as pool:
        schedule(pool, plan, "DC", 1, results.append)
    assert [r["arm"] for r in results] == ["C", "D"]
    assert [x["step"] for x in results[1]["raises"]] == [x["step"] for x in results[0]["raises"]] == [10, 20, 30]


TINY = attrs.evolve(QUICK, epochs=3, steps_per_epoch=10, min_epochs=(1, 1, 2), threshold=10.0, window=4)


def fake_run(arm: str, seed: int, final_bpb: float, complete: bool = True) -> dict:
    """A result as run_arm returns it, without training; ``final_bpb`` is its last evaluation."""
    steps = 30 if complete else 17
    n = steps // 10
    evals = [(10 * (i + 1), final_bpb + 0.1 * (n - 1 - i)) for i in range(n)]
    return {
        "arm": arm,
        "seed": seed,
        "losses": [2.0] * steps,
        "evals": evals,
        "raises": [],
        "seconds": 1.0,
        "complete": complete,
        "device": "cpu",
    }


def test_seed_plan_trains_the_seeds_model_and_batch_on_the_default_schedule():
    """--plan seed: the seed's model and batch, >= 2,000 steps of 32 x 1024 bytes, arms A, C, D (C first), 2 seeds."""
    plan = PLANS["seed"]
    assert (plan.d_model, plan.n_layers, plan.seq_len, plan.kernel_len, plan.chunk) == (512, 6, 1024, 128, 16)
    assert plan.cutoffs == (128, 256, 512) and plan.batch_size == 32 and plan.lr == 2e-4
    assert plan.epochs * plan.steps_per_epoch >= 2000 and len(plan.seeds) == 2
    assert plan.arms == "CDA"
    default = PLANS["default"]  # the CPU table's schedule: minimum epochs, LR stages, plateau rule
    assert (plan.epochs, plan.min_epochs, plan.stages, plan.window, plan.threshold) == (
        default.epochs,
        default.min_epochs,
        default.stages,
        default.window,
        default.threshold,
    )


def test_a_run_past_its_deadline_stops_at_its_next_step():
    """run_arm with a deadline already passed trains one step and reports itself incomplete."""
    result = run_arm(TINY, build_arms(TINY)["A"], seed=0, execution=Execution(deadline=time.time()))
    assert not result["complete"] and len(result["losses"]) == 1 and result["evals"] == []
    assert run_arm(TINY, build_arms(TINY)["A"], seed=0)["complete"]


def test_schedule_starts_nothing_past_the_deadline():
    """Past the deadline no run starts, and D is skipped because its C did not run."""
    results = []
    with ThreadPoolExecutor(1) as pool:
        skipped = schedule(pool, TINY, "CD", 1, results.append, execution=Execution(deadline=time.time() - 1))
    assert results == []
    assert [line.split(":")[0] for line in skipped] == ["C seed 0", "D seed 0"]


def test_schedule_skips_d_after_a_c_that_stopped_early_and_runs_only_what_is_not_done():
    """D needs all of C's raises; runs already done (resumed) are not run again."""
    results = []
    done = [fake_run("A", 0, 3.0), fake_run("C", 0, 3.0, complete=False)]
    with ThreadPoolExecutor(1) as pool:
        skipped = schedule(pool, TINY, "ACD", 1, results.append, done=done)
    assert results == [] and skipped == ["D seed 0: C seed 0 stopped early"]


def test_report_tables_only_complete_runs(tmp_path):
    """tables.md holds the complete runs by arm with their seeds, and lists a stopped run below."""
    plan = attrs.evolve(TINY, seeds=(0, 1))
    results = [
        fake_run("A", 0, 3.0),
        fake_run("C", 0, 2.9),
        fake_run("A", 1, 3.2),
        fake_run("C", 1, 1.0, complete=False),
    ]
    text = report(plan, results, tmp_path)
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")
        for line in text.splitlines()
        if line.startswith("| A |") or line.startswith("| C |")
    }
    assert rows["A"][2] == "0, 1" and rows["A"][3] == "3.1000 ± 0.1000"
    assert rows["C"][2] == "0" and rows["C"][3] == "2.9000 ± 0.0000"
    assert "- C seed 1: stopped after step 17 of 30, last val bpb 1.0000 at step 10" in text
    assert (tmp_path / "tables.md").read_text() == text + "\n" and (tmp_path / "efficacy.png").exists()


def test_resume_keeps_the_complete_runs_of_the_same_plan_only(tmp_path):
    """load_done drops incomplete runs and refuses a results.json of another plan."""
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            {"plan": attrs.asdict(TINY), "results": [fake_run("A", 0, 3.0), fake_run("C", 0, 2.0, complete=False)]}
        )
    )
    assert [(r["arm"], r["seed"]) for r in load_done(path, TINY)] == [("A", 0)]
    with pytest.raises(SystemExit, match="another plan"):
        load_done(path, attrs.evolve(TINY, lr=1e-3))


# -- the schedule study (benchmarks/efficacy_study.py) --------------------------------------------------


def test_study_reach_interpolates_and_says_never():
    """Tokens to the target: linear between the evaluations around the crossing; None when never reached."""
    from benchmarks.efficacy_study import reach

    evals = [
        {"tokens": 100, "flops": 1.0, "bpb": 3.0},
        {"tokens": 200, "flops": 2.0, "bpb": 2.0},
        {"tokens": 300, "flops": 3.0, "bpb": 1.5},
    ]
    assert reach(evals, 2.5) == 150.0 and reach(evals, 2.5, "flops") == 1.5
    assert reach(evals, 3.0) == 100.0 and reach(evals, 1.0) is None


def test_study_claims_a_speed_up_only_at_1_2x_with_separate_seeds():
    """>= 1.2x and every seed ahead of every baseline seed, with 3 seeds each; otherwise 'no gain' plainly."""
    from benchmarks.efficacy_study import verdict

    assert verdict([50, 60, 70], [90, 100, 100], 100)[1] == "speed-up 1.61x"
    assert verdict([50, 60, 95], [90, 100, 100], 100)[1] == "no gain"  # spreads overlap
    assert verdict([85, 85, 85], [100, 100, 100], 100)[1] == "no gain"  # 1.18x
    assert verdict([50, None, 60], [100, 100, 100], 100)[1] == "no gain (a seed never reaches the target)"
    assert (
        verdict([50, 60, 70], [None, 100, 100], 100)[1] == "speed-up 1.67x"
    )  # an A* seed that never reaches: the budget
    assert "no claim" in verdict([50], [100], 100)[1]


def test_study_arms_differ_only_where_the_design_says():
    """S: fixed lengths, S+: the same phases plateau-triggered, WA: WSD with a StartCooldown, CS: C plus lengths."""
    from benchmarks.efficacy_study import QUICK, curriculum, schedule_of, stages_of

    def shape(arm):
        cur = curriculum(QUICK, arm)
        return [dict(p.params) for p in cur.phases], [[repr(a) for a in t.actions] for t in cur.transitions]

    assert shape("S")[0] == shape("S+")[0] == [{"seq_len": 16}, {"seq_len": 32}, {}]
    assert shape("S")[1] == shape("S+")[1] == [[], []]
    assert shape("WA")[1] == [["StartCooldown()"]] * 2 and schedule_of("WA") == schedule_of("W*") == "wsd"
    assert shape("C")[1] == shape("CS")[1] == [["RestartLR()"]] * 3
    assert shape("CS")[0] == [{"seq_len": 16}, {"seq_len": 32}, {"seq_len": 64}, {}] and shape("C")[0] == [{}] * 4
    assert (
        stages_of(QUICK, "S") == stages_of(QUICK, "A*") == ((0, 1.0, 0.05),) and stages_of(QUICK, "C") == QUICK.stages
    )
