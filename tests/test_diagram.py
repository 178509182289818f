"""Mermaid and DOT text of a curriculum (engine.diagram)."""

from engine import Curriculum, CurriculumEngine, Phase, Transition
from engine.diagram import to_mermaid
from tests.utils import Always, Log, LossBelow


def engine():
    calls = []
    cur = Curriculum(
        [Phase("warm", on_enter=[Log("enter", calls)]), Phase("main")],
        [Transition("warm", "main", [LossBelow(0.5), Always()], [Log("restart", calls)], when="step_end")],
    )
    return CurriculumEngine(cur)


def test_mermaid_has_guards_actions_and_current_phase():
    """Mermaid text labels edges with guards and actions and marks the current phase."""
    eng = engine()
    text = eng.to_mermaid()
    assert text.startswith("stateDiagram-v2\n    [*] --> warm\n")
    assert "warm --> main : step_end [LossBelow(0.5) and Always()] / Log('restart')" in text
    assert "note right of warm\n        on enter: Log('enter')\n    end note" in text
    assert "\ua789" not in text  # only a colon inside a repr needs the look-alike
    assert "class warm current" in text
    eng.start()
    eng.step_end(loss=0.1)
    assert "class main current" in eng.to_mermaid()


def test_dot_has_guards_actions_and_current_phase():
    """DOT text (no graphviz binary needed) labels edges and fills the current phase."""
    text = engine().to_dot()
    assert text.startswith("digraph curriculum {")
    assert "warm -> main [label=\"step_end [LossBelow(0.5) and Always()] / Log('restart')\"];" in text
    assert 'warm [label="warm\\non enter: Log(\'enter\')", style="rounded,filled,bold"' in text
    assert text.rstrip().endswith("}")


class Keyed:
    """A guard whose repr holds a colon and a semicolon."""

    def __call__(self, ctx) -> bool:
        return True

    def __repr__(self) -> str:
        return "Keyed({'a': 1}; #2)"


def test_mermaid_labels_carry_no_character_that_ends_them():
    """A ':' or ';' inside a repr would end a Mermaid transition label: they are written as look-alikes."""
    text = to_mermaid(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Keyed()])]))
    label = text.split("a --> b : ", 1)[1].split("\n", 1)[0]
    assert label == "epoch_end [Keyed({'a'\ua789 1}, \uff032)]"
