"""Mermaid and DOT text of a curriculum: guards and actions on the edges, the current phase marked.

transitions' GraphMachine labels guards only, so the text is emitted from the Curriculum itself.
Neither format needs the graphviz binary; Mermaid renders on GitHub. An edge reads as UML writes a
transition, ``point [guards] / actions``.
"""

from __future__ import annotations

from engine.core import Curriculum, describe

__all__ = ["to_mermaid", "to_dot", "edge_label"]


def edge_label(curriculum: Curriculum, index: int) -> str:
    """``when [guard and guard] / action, action`` for transition ``index``."""
    tr = curriculum.transitions[index]
    label = f"{tr.when.value} [" + " and ".join(describe(g) for g in tr.guards) + "]"
    if tr.actions:
        label += " / " + ", ".join(describe(a) for a in tr.actions)
    return label


def _mermaid_label(text: str) -> str:
    # A Mermaid label ends at the next ':' or ';' and "#...;" reads as an entity code: look-alikes instead.
    return text.replace(":", "\ua789").replace(";", ",").replace("#", "\uff03")


def to_mermaid(curriculum: Curriculum, current: str | None = None) -> str:
    """Mermaid ``stateDiagram-v2`` text; in an edge label ':' is written as the look-alike U+A789,
    ';' as ',' and '#' as U+FF03 (docs/reference.md). The on-enter notes keep a real colon."""
    lines = ["stateDiagram-v2", f"    [*] --> {curriculum.initial_name}"]
    for i, tr in enumerate(curriculum.transitions):
        lines.append(f"    {tr.source} --> {tr.dest} : {_mermaid_label(edge_label(curriculum, i))}")
    for phase in curriculum.phases:
        if phase.on_enter:
            actions = ", ".join(describe(a) for a in phase.on_enter)
            lines += [f"    note right of {phase.name}", f"        on enter: {actions}", "    end note"]
    if current is not None:
        lines.append("    classDef current fill:#f96,stroke:#333,stroke-width:3px")
        lines.append(f"    class {current} current")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(curriculum: Curriculum, current: str | None = None) -> str:
    lines = ["digraph curriculum {", "    rankdir=LR;", '    node [shape=box, style="rounded"];']
    lines.append('    __start [shape=point, label=""];')
    lines.append(f"    __start -> {curriculum.initial_name};")
    for phase in curriculum.phases:
        label = phase.name
        if phase.on_enter:
            label += "\\non enter: " + ", ".join(_dot_text(describe(a)) for a in phase.on_enter)
        style = ', style="rounded,filled,bold", fillcolor="#ff9966"' if phase.name == current else ""
        lines.append(f'    {phase.name} [label="{label}"{style}];')
    for i, tr in enumerate(curriculum.transitions):
        lines.append(f'    {tr.source} -> {tr.dest} [label="{_dot_text(edge_label(curriculum, i))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
