"""The efficacy experiment's arms are built as BENCHMARKS.md describes them (benchmarks/efficacy.py)."""

from concurrent.futures import ThreadPoolExecutor

import attrs

from benchmarks.efficacy import PLANS, QUICK, build_arms, run_arm, schedule


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
    assert e_transitions == c_transitions and e_enter[0] == ["SetCutoff(8, preserve=False)"] and c_enter[0] == ["SetCutoff(8)"]
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


def test_kernel256_plan_is_issue_15s_long_kernel_row():
    """--plan kernel256: d_model 64, 2 layers, seq_len 256, kernel_len 256, 3,000 steps, one seed; else the default plan."""
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
