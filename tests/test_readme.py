"""The code examples of the README and docs/reference.md run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
REFERENCE = README.parent / "docs" / "reference.md"


def example(marker: str, doc: Path = README) -> str:
    text = doc.read_text()
    match = re.search(rf"<!-- example: {marker}.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{doc.name} has no example block marked {marker!r}"
    return match.group(1)


def test_the_loop_contract_at_the_top_runs_in_a_loop():
    """The README's first block, a curriculum and the five calls, runs as written once its loop is filled in: a flat
    loss plateaus, so short->long fires at the end of epoch 2 (not before), and every epoch saves the state."""
    import engine
    import policies

    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    saved = []
    namespace = {**vars(engine), **vars(policies), "optimizer": object(), "epochs": 4, "loader": range(60)}
    namespace.update(loss=1.0, val_loss=1.0, save=saved.append)
    exec(compile(code, "README.md", "exec"), namespace)
    history = namespace["engine"].history
    assert [(r.source, r.dest, r.global_step, r.epoch) for r in history if r.source] == [("short", "long", 120, 2)]
    assert len(saved) == 4 and saved[-1]["curriculum"]["phase"] == "long"


def test_custom_curriculum_example_runs(capsys):
    """The custom-curriculum example executes and fires both transitions at the steps it claims."""
    namespace = {"__name__": "__main__"}
    exec(compile(example("custom-curriculum"), "README.md", "exec"), namespace)
    engine = namespace["engine"]
    assert [(r.source, r.dest, r.global_step) for r in engine.history] == [
        (None, "short", 0),
        ("short", "medium", 100),
        ("medium", "long", 300),
    ]
    assert engine.phase.params["seq_len"] == 2048
    printed = capsys.readouterr().out
    shown = README.read_text().split("It prints why and when each transition fired:")[1].split("```")[1].strip("\n")
    assert printed.strip("\n") == shown


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
def test_hf_trainer_example_runs(tmp_path, capsys, monkeypatch):
    """The Hugging Face example, model and data included, trains, fires short->long at step 4 and leaves the engine
    state in its checkpoints."""
    import json

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(example("hf-trainer"), "README.md", "exec"), namespace)
    engine = namespace["callback"].engine
    assert [(r.source, r.dest, r.global_step) for r in engine.history if r.source] == [("short", "long", 4)]
    printed = capsys.readouterr().out
    assert "short -> long  at step 4 (epoch 1, step_end)" in printed and "action RestartLR(): " in printed
    assert "peak=5e-05" in printed  # the Trainer's own schedule, restarted to TrainingArguments' learning_rate
    checkpoint = tmp_path / "out" / "hf-example" / "checkpoint-4"
    state = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["curriculum_engine"]
    assert (state["phase"], state["clock"]["global_step"]) == ("long", 4)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*", "ignore::UserWarning:lightning.*")
def test_lightning_example_runs(tmp_path, capsys, monkeypatch):
    """The Lightning example, data included, fires warm->main at step 6 and main->final at the end of epoch 2, and
    checkpoints the engine."""
    import torch

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(example("lightning"), "README.md", "exec"), namespace)
    engine = namespace["callback"].engine
    assert [(r.source, r.dest, r.global_step) for r in engine.history if r.source] == [
        ("warm", "main", 6),
        ("main", "final", 8),
    ]
    assert "warm -> main  at step 6" in capsys.readouterr().out
    (ckpt,) = (tmp_path / "out" / "lightning").rglob("*.ckpt")
    state = torch.load(ckpt, weights_only=False)["callbacks"]["CurriculumCallback"]["engine"]
    assert (state["phase"], state["clock"]["global_step"]) == ("final", 12)


def test_backoff_example_backs_off_at_most_twice(capsys):
    """The back-off example runs, backs off exactly twice and prints the history docs/reference.md shows."""
    namespace = {"__name__": "__main__"}
    exec(compile(example("backoff", REFERENCE), "reference.md", "exec"), namespace)
    history = namespace["engine"].history
    assert [r.dest for r in history if r.source == "long"] == ["short", "short"]
    printed = capsys.readouterr().out
    shown = (
        REFERENCE.read_text()
        .split("It backs off twice, then stays at 1024 through the rise:")[1]
        .split("```")[1]
        .strip("\n")
    )
    assert printed.strip("\n") == shown


def test_readme_points_to_the_semantics_in_the_repository():
    """The README links docs/semantics.md, which exists, and no longer sends readers to a DESIGN.md outside it."""
    text = README.read_text()
    assert "docs/semantics.md" in text and (README.parent / "docs" / "semantics.md").exists()
    assert "DESIGN.md" not in text


def test_semantics_document_covers_the_contract():
    """docs/semantics.md has a section per topic, and states the tie-break: the first declared transition wins."""
    text = (README.parent / "docs" / "semantics.md").read_text()
    for heading in [
        "The loop's contract",
        "The clock",
        "Evaluation points",
        "Firing order and tie-break",
        "Atomicity",
        "Errors",
        "State and fingerprint",
        "History",
    ]:
        assert f"\n## {heading}\n" in text, heading
    assert "the first declared wins" in text and "first declared fires" in README.read_text()


def test_every_flag_the_chunklm_manual_names_exists():
    """Each --flag in docs/chunklm.md is a flag of the chunklm subcommand it is listed under (train unless named)."""
    from runs.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    known = {name: {s for a in sub._actions for s in a.option_strings} for name, sub in subparsers.items()}
    text = (README.parent / "docs" / "chunklm.md").read_text()
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z_-]*[a-z])", text))
    from torch.distributed.run import get_args_parser  # the torchrun lines: flags torchrun has

    torchrun = {s for a in get_args_parser()._actions for s in a.option_strings}
    every = set().union(*known.values()) | torchrun
    assert named and named <= every, sorted(named - every)
    assert {"--plateau-test", "--plateau-alpha", "--micro-batch", "--stop-after"} <= named & known["train"]


def test_the_chunklm_manual_documents_every_flag():
    """Every flag of every chunklm subcommand is named in docs/chunklm.md, so a new flag cannot go undocumented."""
    from runs.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    text = (README.parent / "docs" / "chunklm.md").read_text()
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z_-]*[a-z])", text))
    missing = {
        f"{name} {flag}"
        for name, sub in subparsers.items()
        for a in sub._actions
        for flag in a.option_strings
        if flag.startswith("--") and flag != "--help" and flag not in named
    }
    assert not missing, sorted(missing)


def test_every_raw_output_benchmarks_md_names_exists():
    """Each benchmarks/results/ path in BENCHMARKS.md is a file in the repository, and the results index lists it."""
    text = (README.parent / "BENCHMARKS.md").read_text()
    paths = set(re.findall(r"benchmarks/results/[\w./-]*\.\w+", text)) - {"benchmarks/results/README.md"}
    index = (README.parent / "benchmarks" / "results" / "README.md").read_text()
    assert paths
    for path in paths:
        assert (README.parent / path).is_file(), path
        assert path.removeprefix("benchmarks/results/") in index, path


def test_the_module_table_lists_every_module():
    """docs/reference.md's module table names every module of the packages, so a new file cannot go unlisted."""
    text = (README.parent / "docs" / "reference.md").read_text()
    root = README.parent
    modules = [p for pkg in ("engine", "policies", "chunklm", "runs") for p in (root / pkg).rglob("*.py")]
    missing = [str(p.relative_to(root)) for p in modules if p.name != "__init__.py" or p.parent.name == "integrations"]
    missing = [m for m in missing if f"`{m}`" not in text]
    assert not missing, missing
