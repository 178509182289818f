"""Shared fakes for the engine tests: small guards and actions with readable reprs."""

from __future__ import annotations


class LossBelow:
    """Holds when the step's loss is below ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, ctx) -> bool:
        return ctx.metric("loss") < self.value

    def evidence(self, ctx) -> dict:
        return {"loss": ctx.metric("loss"), "value": self.value}

    def __repr__(self) -> str:
        return f"LossBelow({self.value})"


class Always:
    def __call__(self, ctx) -> bool:
        return True

    def __repr__(self) -> str:
        return "Always()"


class Never:
    def __call__(self, ctx) -> bool:
        return False

    def __repr__(self) -> str:
        return "Never()"


class EpochAtLeast:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, ctx) -> bool:
        return ctx.clock.epoch >= self.n

    def __repr__(self) -> str:
        return f"EpochAtLeast({self.n})"


class CountBelow:
    """Stateful guard: counts observed losses below ``value`` since its phase began; holds at ``need``."""

    def __init__(self, value: float, need: int) -> None:
        self.value, self.need, self.count = value, need, 0

    def observe(self, ctx) -> None:
        if ctx.metric("loss") < self.value:
            self.count += 1

    def reset(self) -> None:
        self.count = 0

    def __call__(self, ctx) -> bool:
        return self.count >= self.need

    def evidence(self, ctx) -> dict:
        return {"count": self.count, "need": self.need}

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.count = d["count"]

    def __repr__(self) -> str:
        return f"CountBelow({self.value}, need={self.need})"


class Log:
    """Action that appends its name to a shared list (the call order) and returns an effect."""

    def __init__(self, name: str, calls: list, requires: tuple = ()) -> None:
        self.name, self.calls, self.requires = name, calls, requires

    def __call__(self, ctx) -> dict:
        self.calls.append(self.name)
        return {"name": self.name, "step": ctx.clock.global_step}

    def __repr__(self) -> str:
        return f"Log({self.name!r})"


class FakeModel:
    """Stands in for ChunkLM: records set_cutoff calls and exposes .cutoff (513 bins when full)."""

    def __init__(self, cutoff=513):
        self.cutoff, self.calls = cutoff, []

    def set_cutoff(self, n, preserve=True):
        self.calls.append((n, preserve))
        self.cutoff = 513 if n is None else n


class ValBelow:
    """Holds when the epoch's ``val`` metric is below ``value``; declares the metric it reads."""

    metrics = ("val",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, ctx) -> bool:
        return ctx.metric("val") < self.value

    def __repr__(self) -> str:
        return f"ValBelow({self.value})"


class CrashIf:
    """Guard that raises when the loop passes ``crash=...`` (a user guard with a bug), else never holds."""

    def __call__(self, ctx) -> bool:
        if "crash" in ctx.metrics:
            raise RuntimeError("guard crashed")
        return False

    def __repr__(self) -> str:
        return "CrashIf()"


class ExplodeIf:
    """Action that raises when the loop passed ``explode=...`` at the point it runs (a user action with a bug)."""

    def __init__(self, calls: list | None = None) -> None:
        self.calls = calls if calls is not None else []

    def __call__(self, ctx) -> dict:
        if "explode" in ctx.metrics:
            raise ValueError("action exploded")
        self.calls.append("explode_if")
        return {"ok": 1}

    def __repr__(self) -> str:
        return "ExplodeIf()"
