"""The engine in torch.distributed.checkpoint (engine.integrations.dcp.EngineState): a fresh engine loads a longer
history, the load checks of load_state_dict, ranks that disagree refused at save, and docs/integrations.md's FSDP2
example resumed under two gloo processes, bit-identical to the run never stopped."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.__main__ import main
from engine.diff import comparable_state, read_checkpoint
from engine.integrations.dcp import EngineState
from policies import MinSteps
from tests.utils import launch

DOC = Path(__file__).resolve().parent.parent / "docs" / "integrations.md"

# DCP's note that it saves and loads in a single process when no process group is set up.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def curriculum(steps: int = 2) -> Curriculum:
    return Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinSteps(steps)], when=Point.STEP_END)])


def engine_after(steps: int, curriculum_steps: int = 2) -> CurriculumEngine:
    engine = CurriculumEngine(curriculum(curriculum_steps))
    engine.start()
    for _ in range(steps):
        engine.step_end(loss=1.0)
    return engine


def test_a_fresh_engine_loads_a_longer_history(tmp_path):
    """Saved after a transition (2 records), loaded into a fresh engine (none): the same state, wall times too."""
    saved = engine_after(3)
    dcp.save({"engine": EngineState(saved)}, checkpoint_id=tmp_path)
    fresh = CurriculumEngine(curriculum())
    dcp.load({"engine": EngineState(fresh)}, checkpoint_id=tmp_path)
    assert len(fresh.history) == 2 and fresh.phase.name == "b"
    assert fresh.state_dict() == saved.state_dict()


def test_loading_under_another_curriculum_is_refused_unless_allowed(tmp_path):
    """A changed guard: the fingerprint check of load_state_dict refuses it; allow_fingerprint_mismatch=True loads."""
    dcp.save({"engine": EngineState(engine_after(3))}, checkpoint_id=tmp_path)
    refused = CurriculumEngine(curriculum(5))
    with pytest.raises(CurriculumError, match="(?s)different curriculum.*allow_fingerprint_mismatch=True"):
        dcp.load({"engine": EngineState(refused)}, checkpoint_id=tmp_path)
    assert refused.clock.global_step == 0
    lenient = CurriculumEngine(curriculum(5))
    dcp.load({"engine": EngineState(lenient, allow_fingerprint_mismatch=True)}, checkpoint_id=tmp_path)
    assert lenient.clock.global_step == 3 and lenient.phase.name == "b"


def test_bad_arguments_are_clear_errors():
    """Not an engine, a flag that is not a bool: a CurriculumError naming the fix."""
    with pytest.raises(CurriculumError, match="must be a CurriculumEngine"):
        EngineState(object())
    with pytest.raises(CurriculumError, match="EngineState: .allow_fingerprint_mismatch. must be a bool"):
        EngineState(engine_after(0), allow_fingerprint_mismatch="yes")


def test_a_checkpoint_without_the_engine_state_is_refused_by_name():
    """load_state_dict given something else than what state_dict() made: the key it expected."""
    with pytest.raises(CurriculumError, match="no engine state under 'curriculum_engine_json'"):
        EngineState(engine_after(0)).load_state_dict({"history": []})


def test_diff_reads_distributed_checkpoints(tmp_path, capsys):
    """Two DCP folders: identical -> 0; one weight changed -> 1 naming it; another engine clock -> 1 naming it."""
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    for name, w, steps in (("a", weights["w"], 3), ("b", weights["w"].clone(), 3), ("c", weights["w"] + 0.5, 3)):
        dcp.save({"model": {"w": w}, "engine": EngineState(engine_after(steps))}, checkpoint_id=tmp_path / name)
    dcp.save({"model": weights, "engine": EngineState(engine_after(4))}, checkpoint_id=tmp_path / "d")
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "(distributed checkpoint)" in capsys.readouterr().out
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "first difference: model.w: max |d| 0.5 (6 of 6 elements differ) (at step 3)" in capsys.readouterr().out
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "d")]) == 1
    assert "first difference: engine clock.global_step: A: 3, B: 4" in capsys.readouterr().out


class _Touch:
    """Unpickled, runs ``open(path, 'w')``: a file whose metadata would run code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_diff_runs_no_code_from_a_checkpoints_metadata(tmp_path, capsys):
    """A .metadata that would create a file when unpickled: refused in one line (exit 2), the file not created."""
    folder = tmp_path / "ckpt"
    dcp.save({"engine": EngineState(engine_after(1))}, checkpoint_id=folder)
    (folder / ".metadata").write_bytes(pickle.dumps(_Touch(str(tmp_path / "ran"))))
    assert main(["diff", str(folder), str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not a distributed checkpoint's metadata" in err and err.count("\n") == 1
    assert not (tmp_path / "ran").exists()


def test_ranks_that_disagree_are_refused_at_save_on_every_rank(tmp_path):
    """Two gloo ranks, rank 1's engine one step ahead: both raise a CurriculumError naming the fix; nothing saved."""
    launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "tests.dcp_ranks",
            str(tmp_path),
        ],
        timeout=240,
    )
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert "ranks hold different engine states (2 groups of ranks that agree: [0], [1])" in text, text
        assert "all_reduce" in text
    assert not (tmp_path / "ckpt" / ".metadata").exists()


# -- the docs' FSDP2 example, under two processes ------------------------------------------------------------------


def example_script(tmp: Path) -> Path:
    match = re.search(r"<!-- example: fsdp-dcp -->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/integrations.md has no example block marked 'fsdp-dcp'"
    script = tmp / "train_fsdp.py"
    script.write_text(match.group(1))
    return script


def torchrun(script: Path, *args) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    launch(cmd, timeout=300)


def test_the_fsdp_example_resumed_from_a_distributed_checkpoint_is_bit_identical(tmp_path, capsys):
    """The docs' FSDP2 script: stopped after step 6 and resumed from step-4 in fresh processes, its step-8 and step-12
    checkpoints equal the uninterrupted run's bit for bit (weights, optimizer, schedule, engine, history); both
    transitions fired, the second after the resume."""
    script = example_script(tmp_path)
    torchrun(script, str(tmp_path / "whole"))
    torchrun(script, str(tmp_path / "resumed"), "--stop-at", "6")
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["step-4"]
    torchrun(script, str(tmp_path / "resumed"))
    for step in (8, 12):
        a, b = tmp_path / "whole" / f"step-{step}", tmp_path / "resumed" / f"step-{step}"
        assert main(["diff", str(a), str(b)]) == 0, capsys.readouterr().out
        assert "identical:" in capsys.readouterr().out
    whole = read_checkpoint(tmp_path / "whole" / "step-12")
    history = [(r["dest"], r["global_step"]) for r in whole.engine["history"]]
    assert [dest for dest, _ in history] == ["warmup", "main", "final"] and history[1][1] == 3, history
    assert history[2][1] > 6, history  # decided by the plateau window the resume restored
    assert {"model.0.weight", "optim.state.0.weight.exp_avg_sq", "schedule.cycle_start"} <= whole.values.keys()
    assert whole.values["model.0.weight"].shape == (16, 4)  # gathered whole from the two ranks' shards
    resumed = read_checkpoint(tmp_path / "resumed" / "step-12")
    assert comparable_state(resumed.engine) == comparable_state(whole.engine)
