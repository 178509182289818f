"""The README's code examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- example: {marker}.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no example block marked {marker!r}"
    return match.group(1)


def test_custom_curriculum_example_runs(capsys):
    """The custom-curriculum example executes and fires both transitions at the steps it claims."""
    namespace = {"__name__": "__main__"}
    exec(compile(example("custom-curriculum"), "README.md", "exec"), namespace)
    engine = namespace["engine"]
    assert [(r.source, r.dest, r.global_step) for r in engine.history] == [(None, "short", 0), ("short", "medium", 100), ("medium", "long", 300)]
    assert engine.phase.params["seq_len"] == 2048
    printed = capsys.readouterr().out
    shown = README.read_text().split("It prints why and when each transition fired:")[1].split("```")[1].strip("\n")
    assert printed.strip("\n") == shown
