"""The deciding guard (engine.runtime, engine.history), engine.replay and `chunklm replay` (runs.replay_cmd)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Curriculum, CurriculumEngine, CurriculumError, History, Phase, Point, Transition, replay
from policies import MetricBelow, MinEpoch, MinSteps, Plateau, all_of
from runs.artifacts import RunFiles, read_csv
from runs.cli import main
from runs.replay_cmd import load_stream, recorded_settings, replay_settings
from tests.utils import TINY_MODEL, Log


def epochs_with(engine, values, steps=2):
    """Run epochs of `steps` steps; epoch k ends with val=values[k]."""
    for v in values:
        for _ in range(steps):
            engine.step_end(loss=1.0)
        engine.epoch_end(val=v)


def moves(history):
    """The transitions of a history, without its start record."""
    return [r for r in history if r.source is not None]


def one_raise(*guards, actions=()):
    return Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", list(guards), actions=list(actions))])


# -- the deciding guard --------------------------------------------------------------------------


def test_decision_is_the_guard_that_became_true_last():
    """MinEpoch(1) holds from epoch 1, the metric only at epoch 3: the metric decided; MinEpoch held since epoch 1."""
    engine = CurriculumEngine(one_raise(all_of(MinEpoch(1), MetricBelow("val", 1.0))))
    engine.start()
    epochs_with(engine, [2.0, 2.0, 0.5])
    record = engine.history[-1]
    assert (record.dest, record.epoch) == ("b", 3)
    assert record.decision.decided_by == ["MetricBelow('val', 1.0)"]
    assert [(h.guard, h.global_step, h.epoch) for h in record.decision.held_since] == [
        ("MinEpoch(1)", 2, 1),
        ("MetricBelow('val', 1.0)", 6, 3),
    ]
    assert record.decision.text(record.global_step) == (
        "decided by MetricBelow('val', 1.0) at step 6; MinEpoch(1) held since step 2 (epoch 1)"
    )


def test_decision_counts_only_the_last_unbroken_run_of_holding():
    """A guard that held, stopped, and held again counts from its latest start; top-level guards and
    nested all_of are opened up alike."""
    metric = MetricBelow("val", 1.0)
    engine = CurriculumEngine(one_raise(all_of(all_of(metric)), MinEpoch(4)))
    engine.start()
    epochs_with(engine, [0.5, 2.0, 0.5, 0.5])  # holds at epoch 1, not 2, again from 3; MinEpoch(4) at 4
    decision = engine.history[-1].decision
    assert decision.decided_by == ["MinEpoch(4)"]
    assert [(h.guard, h.epoch) for h in decision.held_since] == [("MetricBelow('val', 1.0)", 3), ("MinEpoch(4)", 4)]


def test_decision_names_every_guard_that_became_true_together():
    """Guards that became true at the same evaluation point decided together."""
    engine = CurriculumEngine(one_raise(all_of(MinEpoch(2), MetricBelow("val", 1.0))))
    engine.start()
    epochs_with(engine, [2.0, 0.5])  # both hold first at epoch 2
    decision = engine.history[-1].decision
    assert decision.decided_by == ["MinEpoch(2)", "MetricBelow('val', 1.0)"]
    assert decision.text(4) == "decided by MinEpoch(2) and MetricBelow('val', 1.0) together at step 4"


def test_decision_restarts_when_the_phase_is_entered_and_manual_moves_have_none():
    """held-since is per phase visit (cleared on entry); a forced transition records no decision."""
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [MinSteps(1), MetricBelow("val", 1.0)]), Transition("b", "a", [MetricBelow("val", 1.0)])],
    )
    engine = CurriculumEngine(cur)
    engine.start()
    epochs_with(engine, [0.5, 0.5])  # a -> b at epoch 1, b -> a at epoch 2: the metric counted from epoch 2
    assert [(r.dest, r.epoch) for r in moves(engine.history)] == [("b", 1), ("a", 2)]
    assert [(h.guard, h.epoch) for h in engine.history[-1].decision.held_since] == [("MetricBelow('val', 1.0)", 2)]
    assert engine.force("b", reason="by hand").decision is None


def test_held_since_survives_snapshot_and_restore():
    """Snapshot after a guard started holding, restore into a fresh engine: the same decision as uninterrupted."""

    def build():
        return CurriculumEngine(one_raise(all_of(MinEpoch(3), MetricBelow("val", 1.0))))

    whole = build()
    whole.start()
    epochs_with(whole, [0.5, 0.5, 0.5])
    part = build()
    part.start()
    epochs_with(part, [0.5])
    state = json.loads(json.dumps(part.state_dict()))
    assert state["held_since"] == {"0": [None, [2, 1]]}
    resumed = build()
    resumed.load_state_dict(state)
    epochs_with(resumed, [0.5, 0.5])
    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in whole.history]
    assert resumed.history[-1].decision.decided_by == ["MinEpoch(3)"]


def test_states_and_histories_from_before_decisions_still_load():
    """An engine state without held_since and a history file without decisions load (decision None)."""
    engine = CurriculumEngine(one_raise(MinEpoch(1)))
    engine.start()
    state = engine.state_dict()
    del state["held_since"]
    CurriculumEngine(one_raise(MinEpoch(1))).load_state_dict(state)
    old = History.from_json((Path(__file__).parent / "data" / "v0_tiny" / "full.history.json").read_text())
    assert len(old) == 3 and all(r.decision is None for r in old)  # v0: no start record, no decisions
    assert "decided by" not in old.table()


def test_history_table_and_csv_show_the_decision():
    """`chunklm history`'s table prints the decision line; the CSV holds it as JSON."""
    engine = CurriculumEngine(one_raise(all_of(MinEpoch(1), MetricBelow("val", 1.0))))
    engine.start()
    epochs_with(engine, [2.0, 0.5])
    assert (
        "decided by MetricBelow('val', 1.0) at step 4; MinEpoch(1) held since step 2 (epoch 1)"
        in engine.history.table()
    )
    csv_text = engine.history.to_csv()
    assert "decision" in csv_text.splitlines()[0] and "decided_by" in csv_text


# -- engine.replay -------------------------------------------------------------------------------


def spectral_like(window=8, threshold=0.01, calls=None, test="relative"):
    """Three raises at epoch end, all_of(MinEpoch, Plateau), with logging actions."""
    calls = [] if calls is None else calls
    names = ["p0", "p1", "p2", "p3"]
    phases = [Phase(n, on_enter=[Log(f"enter_{n}", calls)]) for n in names]
    transitions = [
        Transition(
            names[k],
            names[k + 1],
            [all_of(MinEpoch(m), Plateau(window=window, threshold=threshold, test=test))],
            actions=[Log(f"act_{k}", calls)],
        )
        for k, m in enumerate((1, 2, 4))
    ]
    return Curriculum(phases, transitions)


def stream_of(losses, steps_per_epoch):
    out = []
    for i, loss in enumerate(losses, start=1):
        out.append(("step_end", {"loss": loss, "lr": 0.1}))
        if i % steps_per_epoch == 0:
            out.append(("epoch_end", {"val": 1.0}))
    return out


def live_run(curriculum, stream):
    engine = CurriculumEngine(curriculum)
    engine.start()
    for point, values in stream:
        values = dict(values)
        if point == "step_end":
            engine.step_end(values.pop("loss"), **values)
        else:
            engine.epoch_end(**values)
    return engine.history


def decisions(history):
    return [(r.source, r.dest, r.global_step, r.epoch, r.point, r.guards, r.decision) for r in history]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    threshold=st.sampled_from([0.0, 0.005, 0.02, 0.1]),
    test=st.sampled_from(["relative", "welch"]),
)
def test_replay_takes_the_live_engines_decisions_without_running_actions(seed, threshold, test):
    """On any stream, a replay's transitions, evidence and decisions equal a live engine's; no action runs
    and the caller's guards keep empty windows."""
    rng = random.Random(seed)
    losses = [3.0 * 0.995**i + rng.gauss(0, 0.05) for i in range(120)]
    stream = stream_of(losses, 10)
    live = live_run(spectral_like(threshold=threshold, test=test), stream)
    calls = []
    cur = spectral_like(threshold=threshold, calls=calls, test=test)
    result = replay(cur, stream, recorded=live)
    assert decisions(result.history) == decisions(live)
    assert calls == [] and all(g.guards[1].filled == 0 for tr in cur.transitions for g in tr.guards)
    assert [[a.action for a in r.actions] for r in result.history] == [[a.action for a in r.actions] for r in live]
    assert all(a.effect == {} for r in result.history for a in r.actions)
    assert result.departure is None and (result.steps, result.epochs) == (120, 12)


def test_replay_stand_ins_keep_the_curriculums_fingerprint():
    """The replayed curriculum (actions replaced by stand-ins) has the original's fingerprint."""
    from engine.replay import _dry

    cur = spectral_like()
    assert _dry(cur, copy_guards=True).fingerprint() == cur.fingerprint()


def raises_at(*min_epochs):
    """spectral_like's phases, each raise guarded by MinEpoch alone."""
    cur = spectral_like()
    return Curriculum(
        cur.phases, [attrs.evolve(tr, guards=[MinEpoch(m)]) for tr, m in zip(cur.transitions, min_epochs)]
    )


def test_replay_compares_decisions_not_guards():
    """Other guards that take the same decisions at the same steps do not depart."""
    stream = stream_of([1.0] * 60, 10)
    recorded = live_run(spectral_like(), stream)  # flat loss: raises at epochs 1, 2, 4 (steps 10, 20, 40)
    assert [r.global_step for r in moves(recorded)] == [10, 20, 40]
    result = replay(raises_at(1, 2, 4), stream, recorded=recorded)
    assert [r.global_step for r in moves(result.history)] == [10, 20, 40] and result.departure is None
    assert moves(result.history)[0].decision.decided_by == ["MinEpoch(1)"]


def test_replay_reports_where_a_rule_raises_earlier():
    """A rule that raises before the recorded run: the departure is the replay's raise; later records are not
    faithful."""
    stream = stream_of([1.0] * 60, 10)
    recorded = live_run(spectral_like(), stream)
    result = replay(raises_at(1, 2, 3), stream, recorded=recorded)
    assert [r.global_step for r in moves(result.history)] == [10, 20, 30]
    dep = result.departure
    assert (dep.global_step, dep.replayed.dest, dep.recorded, dep.recorded_next.global_step) == (30, "p3", None, 40)
    assert "at step 30 (epoch 3) the replay moves p2 -> p3; the recorded run stayed in p2 until step 40" in dep.text()
    assert "no longer follow" in dep.text()
    assert [r.global_step for r in moves(result.faithful())] == [10, 20, 30]


def test_replay_reports_where_a_rule_waits_longer():
    """A rule that raises later: the departure is the recorded raise, where the replay stayed."""
    stream = stream_of([1.0] * 60, 10)
    recorded = live_run(spectral_like(), stream)
    result = replay(raises_at(5, 5, 5), stream, recorded=recorded)
    dep = result.departure
    assert (dep.global_step, dep.replayed, dep.recorded.dest) == (10, None, "p1")
    assert "the recorded run moved p0 -> p1; the replay stays in p0" in dep.text()
    assert moves(result.faithful()) == []


def test_replay_departs_at_a_recorded_manual_move_and_ignores_records_past_the_data():
    """A manual transition cannot be replayed; recorded transitions after the fed steps are not compared."""
    stream = stream_of([1.0] * 60, 10)
    recorded = list(live_run(spectral_like(), stream))
    assert (
        replay(spectral_like(), stream[:25], recorded=recorded).departure is None
    )  # 23 steps fed: raises at 10, 20 only
    manual = attrs.evolve(moves(recorded)[0], point="manual", reason="operator", global_step=5, epoch=0)
    dep = replay(spectral_like(), stream, recorded=[manual] + moves(recorded)).departure
    assert dep.global_step == 5 and "by hand (operator)" in dep.text()


def test_replay_rejects_malformed_points():
    """Each item must be ('step_end'|'epoch_end', {...}) and a step needs its loss; the error names the index."""
    with pytest.raises(CurriculumError, match=r"metrics\[1\]"):
        replay(spectral_like(), [("step_end", {"loss": 1.0}), ("middle", {})])
    with pytest.raises(CurriculumError, match=r"metrics\[0\] is a step_end without 'loss'"):
        replay(spectral_like(), [("step_end", {"lr": 0.1})])
    with pytest.raises(CurriculumError, match="needs a Curriculum"):
        replay("spectral", [])
    accepted = replay(spectral_like(), [(Point.STEP_END, {"loss": 1.0}), (Point.EPOCH_END, {})])
    assert (accepted.steps, accepted.epochs) == (1, 1)


# -- chunklm replay ------------------------------------------------------------------------------

# Tiny ChunkLM run whose second raise waits for the plateau (threshold 0.002 on a 4-step window).
TINY = [
    *TINY_MODEL,
    *"--cutoffs 4,8,16 --min-epochs 1,1,2 --plateau-window 4 --plateau-threshold 0.002 --log-every 0".split(),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> RunFiles:
    tmp = tmp_path_factory.mktemp("replay")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *TINY, "--epochs", "5", "--ckpt", str(tmp / "run.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    return RunFiles(tmp / "run.pt")


def test_replay_with_the_recorded_settings_reproduces_the_recorded_transitions(tiny_run):
    """The run's own settings replayed over its CSVs: the same transitions at the same steps, by the same guards."""
    recorded = tiny_run.read_history()
    stream = load_stream(read_csv(tiny_run.steps), read_csv(tiny_run.epochs))
    result = replay_settings(recorded_settings(tiny_run.ckpt), stream, recorded)
    moves = [r for r in recorded if r.point == "epoch_end"]
    assert len(moves) >= 2 and all(r.decision is not None for r in moves)
    assert [(r.source, r.dest, r.global_step) for r in result.history if r.point == "epoch_end"] == [
        (r.source, r.dest, r.global_step) for r in moves
    ]
    assert [r.decision.decided_by for r in result.history if r.point == "epoch_end"] == [
        r.decision.decided_by for r in moves
    ]
    # the CSVs keep each loss exactly, so the replayed evidence equals the recorded evidence to the last bit
    assert [r.guards for r in result.history if r.point == "epoch_end"] == [r.guards for r in moves]
    assert result.departure is None and result.steps == 30


def test_replay_command_prints_the_recorded_row_and_a_grid(tiny_run, capsys):
    """`chunklm replay RUN --grid ...`: the recorded row, one row per combination, departures marked."""
    recorded = [r for r in tiny_run.read_history() if r.point == "epoch_end"]
    assert main(["replay", str(tiny_run.ckpt.parent), "--grid", "threshold=0.002,1.0", "test=relative,welch"]) == 0
    out = capsys.readouterr().out
    assert "(exactly)" in out  # today's CSVs keep each float exactly
    lines = out.splitlines()
    rec_row = next(line for line in lines if line.startswith("recorded "))
    assert [int(tok) for tok in rec_row.split() if tok.isdigit()] == [r.global_step for r in recorded]
    own = next(line for line in lines if line.startswith("threshold=0.002 test=relative "))
    assert [int(tok) for tok in own.split() if tok.isdigit()] == [
        r.global_step for r in recorded
    ] and own.rstrip().endswith("-")
    rows = [line for line in lines if line.startswith("threshold=")]
    assert len(rows) == 4
    # threshold 1.0: every full window is a plateau, so each raise comes at its minimum epoch
    always = next(line for line in rows if line.startswith("threshold=1.0 test=relative "))
    assert "MinEpoch" in always


def test_replay_command_single_setting_prints_decisions_and_departure(tiny_run, capsys):
    """Without --grid the replay prints each faithful raise with its decision, and the departure if any."""
    assert main(["replay", str(tiny_run.ckpt), "--min-epochs", "0,0,0", "--plateau-threshold", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "min_epochs=0,0,0 threshold=1.0" in out
    assert "decided by MinEpoch(0) and Plateau(window=4, threshold=1.0) together at step 6" in out
    # every full window is a plateau: raises at each epoch end from the first (6, 12, 18)
    recorded = [r.global_step for r in tiny_run.read_history() if r.point == "epoch_end"]
    assert ("from here the recorded metrics no longer follow" in out) == (recorded != [6, 12, 18])


def test_replay_of_a_first_release_run_says_its_losses_are_rounded(tmp_path, capsys):
    """The first release wrote 6 significant digits: the replay says so, and still reproduces that run."""
    for f in (Path(__file__).parent / "data" / "v0_tiny").glob("full.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    assert main(["replay", str(tmp_path / "full.pt")]) == 0
    out = capsys.readouterr().out
    assert "(to 6 significant digits in the rows the first release wrote)" in out
    replay_row = next(line for line in out.splitlines() if line.startswith("replay "))
    assert replay_row.rstrip().endswith("-")  # no departure


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--grid", "windw=50"], ["--grid 'windw=50'", "KEY=V1,V2"]),
        (["--grid", "window=fifty"], ["not a valid window", "window=50,100"]),
        (["--plateau-test", "welch", "--plateau-window", "2"], ["'window'", ">= 4"]),
        (["--plateau-alpha", "0.1"], ["Welch", "--plateau-test welch"]),
    ],
)
def test_replay_command_bad_input_is_one_line(tiny_run, capsys, argv, words):
    """Bad grid keys, values and settings exit 2 with one message naming the fix."""
    assert main(["replay", str(tiny_run.ckpt), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("chunklm replay: error:")
    for word in words:
        assert word in err


def test_replay_command_needs_a_run(tmp_path, capsys):
    """A directory without a run is a one-line error."""
    assert main(["replay", str(tmp_path)]) == 2
    assert "chunklm replay: error:" in capsys.readouterr().err


def replay_rows(out: str) -> dict[str, list[int]]:
    """The table's rows of `chunklm replay` output: setting -> the steps of its raises."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("setting "))
    rows = {}
    for line in lines[head + 1 :]:
        if not line.strip():
            break
        name, *cells = line.split("  ")
        rows[name.strip()] = [int(tok) for cell in cells for tok in cell.split()[:1] if tok.isdigit()]
    return rows


def test_replay_of_a_run_trained_with_a_curriculum_file_uses_the_curriculum_its_checkpoint_stores(tmp_path, capsys):
    """A --curriculum FILE run replays under the curriculum stored in its checkpoint (the file itself gone): the
    recorded raises, no departure; the spectral curriculum's flags are refused in one line; --curriculum FILE ...
    replays under other files, one row each."""
    from engine import save_curriculum
    from policies import spectral_curriculum

    def file(name, threshold):
        curriculum = spectral_curriculum(
            n_bins=17, cutoffs=(4, 8, 16), min_epochs=(1, 1, 2), window=4, threshold=threshold
        )
        return str(save_curriculum(curriculum, tmp_path / name))

    trained, always = file("trained.toml", 0.002), file("always.toml", 1.0)
    ckpt = tmp_path / "run" / "run.pt"
    ckpt.parent.mkdir()
    assert (
        main(["train", *TINY_MODEL, "--log-every", "0", "--epochs", "5", "--curriculum", trained, "--ckpt", str(ckpt)])
        == 0
    )
    Path(trained).unlink()
    recorded = [r.global_step for r in RunFiles(ckpt).read_history() if r.point == "epoch_end"]
    capsys.readouterr()

    assert main(["replay", str(ckpt.parent)]) == 0
    out = capsys.readouterr().out
    assert f"recorded curriculum: {trained} (stored in the checkpoint)" in out
    assert replay_rows(out) == {"recorded": recorded, "replay": recorded} and len(recorded) >= 2
    assert next(line for line in out.splitlines() if line.startswith("replay ")).rstrip().endswith("-")

    assert main(["replay", str(ckpt), "--grid", "threshold=1.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"trained with the curriculum in {trained}" in err and "--curriculum FILE" in err

    assert main(["replay", str(ckpt), "--curriculum", always, str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["replay", str(ckpt), "--curriculum", always]) == 0
    out = capsys.readouterr().out
    # threshold 1.0: every full window is a plateau, so each raise comes at its minimum epoch (1, 1, 2: steps 6, 12, 18)
    assert replay_rows(out)[always][:1] == [6] and "MinEpoch" in out


def test_replay_of_a_seq_lens_run_replays_the_curriculum_its_settings_made(tmp_path, capsys):
    """A run of sequence-length phases only (--cutoffs '' --seq-lens) replays under its own curriculum, not the
    spectral one: the recorded raises, no departure."""
    ckpt = tmp_path / "run.pt"
    flags = ["--cutoffs", "", "--seq-lens", "8,16", "--min-epochs", "1,2", "--plateau-window", "4"]
    assert (
        main(
            [
                "train",
                *TINY_MODEL,
                *flags,
                "--plateau-threshold",
                "0.002",
                "--log-every",
                "0",
                "--epochs",
                "4",
                "--ckpt",
                str(ckpt),
            ]
        )
        == 0
    )
    recorded = [r.global_step for r in RunFiles(ckpt).read_history() if r.point == "epoch_end"]
    capsys.readouterr()
    assert main(["replay", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "recorded curriculum: windows of 8, 16 bytes then 32; min epochs 1, 2;" in out
    assert "switch 1" in out and "raise 1" not in out  # a raise is the cutoff curriculum's word
    assert replay_rows(out) == {"recorded": recorded, "replay": recorded} and len(recorded) == 2


def file_trained_run(tmp_path: Path) -> tuple[Path, str]:
    """A tiny run trained with --curriculum FILE (the spectral curriculum, threshold 0.002), and that file."""
    from engine import save_curriculum
    from policies import spectral_curriculum

    curriculum = spectral_curriculum(n_bins=17, cutoffs=(4, 8, 16), min_epochs=(1, 1, 2), window=4, threshold=0.002)
    path = str(save_curriculum(curriculum, tmp_path / "trained.toml"))
    ckpt = tmp_path / "run.pt"
    argv = ["train", *TINY_MODEL, "--log-every", "0", "--epochs", "4", "--curriculum", path, "--ckpt", str(ckpt)]
    assert main(argv) == 0
    return ckpt, path


def test_replay_refuses_a_file_chunklm_train_would_refuse_and_names_it(tmp_path, capsys):
    """A --curriculum file whose guard reads a metric chunklm train does not pass (though the epochs CSV holds a
    column of that name) is refused as train refuses it, naming the file; repeated --curriculum options add up."""
    from engine import save_curriculum

    ckpt, trained = file_trained_run(tmp_path)
    mean = str(
        save_curriculum(
            Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MetricBelow("val_bpb_mean", 100.0)])]),
            tmp_path / "mean.toml",
        )
    )
    capsys.readouterr()
    assert main(["replay", str(ckpt), "--curriculum", mean]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--curriculum {mean}: MetricBelow('val_bpb_mean', 100.0)" in err
    assert "chunklm train passes only val_bpb, avg_loss there" in err
    assert main(["replay", str(ckpt), "--curriculum", trained, "--curriculum", trained]) == 0
    assert sum(line.startswith(trained) for line in capsys.readouterr().out.splitlines()) == 2


def test_replay_when_the_runs_own_curriculum_cannot_be_rebuilt(tmp_path, capsys):
    """A checkpoint whose stored curriculum does not match its engine state (edited), or a file-trained run whose
    checkpoint stores no curriculum (written before they did): one line pointing to --curriculum FILE; with it,
    the replay runs and says the run's own row is missing."""
    import torch

    ckpt, trained = file_trained_run(tmp_path)
    recorded = [r.global_step for r in RunFiles(ckpt).read_history() if r.point == "epoch_end"]
    data = torch.load(ckpt, weights_only=True)
    edited = json.loads(json.dumps(data["curriculum"]).replace('"window": 4', '"window": 5'))
    assert edited != data["curriculum"]
    for name, change in (("edited", {"curriculum": edited}), ("old", {"curriculum": None, "curriculum_file": None})):
        folder = tmp_path / name
        folder.mkdir()
        for f in tmp_path.glob("run.*"):
            (folder / f.name).write_bytes(f.read_bytes())
        torch.save({k: v for k, v in {**data, **change}.items() if v is not None}, folder / "run.pt")
        capsys.readouterr()
        assert main(["replay", str(folder)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot be rebuilt from it" in err and "--curriculum" in err, err
        assert main(["replay", str(folder), "--curriculum", trained]) == 0
        out = capsys.readouterr().out
        assert "no replay of it in the table" in out and replay_rows(out)[trained] == recorded


def test_chunklm_plot_without_matplotlib_names_the_extra(tiny_run, tmp_path, capsys, monkeypatch):
    """chunklm plot, like python -m engine plot, says in one line which extra brings matplotlib."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails as if not installed
    assert main(["plot", str(tiny_run.ckpt), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "curriculum-engine[plot]"' in err
    assert not (tmp_path / "x.png").exists()
