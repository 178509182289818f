"""Ready guards: plateau, minimum epoch and steps, metric thresholds, and their combinators.

Guards decide and never act (:mod:`engine.protocols`); each repr reads like the call that made it,
keyword arguments only when they differ from their default. What each holds on: docs/reference.md.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from typing import Any

import attrs

from engine import Clock, Context, CurriculumError, describe
from engine.core import Guard, check_callable, truth_value
from engine.protocols import AllOf, capabilities
from policies._checks import choice, fail, flag, integer, metric_name, policy, real
from policies._stats import student_t_sf

__all__ = [
    "Plateau",
    "MinEpoch",
    "MinSteps",
    "MetricBelow",
    "MetricAbove",
    "all_of",
    "any_of",
    "not_",
    "Cooldown",
    "MaxVisits",
    "WorseThanBest",
]

# Every finite double is an integer multiple of 2**-1074 (the smallest subnormal), so scaling by
# 2**1074 turns it into an exact Python int. Sums of those ints are exact, and int / int is
# correctly rounded in Python: the running sums never drift, whatever the stream.
_SHIFT = 1074


_TESTS = ("relative", "welch")
_MODE = choice(("min", "max"), '"min" (lower is better) or "max"', 'use mode="min" for a loss')


def _exact(x: float) -> int:
    num, den = x.as_integer_ratio()  # den is a power of two
    return num << (_SHIFT - (den.bit_length() - 1))


def _ratio(num: int, den: int) -> float:
    """``num / den`` correctly rounded; +-inf when it overflows a float."""
    try:
        return num / den
    except OverflowError:
        return math.inf if (num > 0) == (den > 0) else -math.inf  # the ints may not fit a float


def _metric(guard: Any) -> tuple[str, ...]:
    """A guard's ``metrics``: its one ``metric`` (the engine checks that the loop passes it)."""
    return (guard.metric,)


@policy
class Plateau:
    """Holds when the metric stopped improving over the last ``window`` observed values: the newer
    half of the window improves on the older by less than ``threshold`` (relative, or by a Welch test).

    The halves' running sums are kept exactly (each float as an integer multiple of 2**-1074), so
    decisions never drift and a restored window is bit-identical.
    """

    window: int = attrs.field(default=50, converter=integer(2, "use an even window >= 2, e.g. window=50"))
    threshold: float = attrs.field(default=0.005, converter=real("e.g. threshold=0.005 (0.5% relative improvement)"))
    metric: str = attrs.field(default="loss", validator=metric_name('e.g. metric="loss"'))
    mode: str = attrs.field(default="min", validator=_MODE)
    test: str = attrs.field(
        default="relative",
        validator=choice(_TESTS, '"relative" or "welch"', 'use test="welch" for a noise-aware plateau'),
    )
    alpha: float | None = None
    _named = ("window", "threshold")  # the knobs, named in the repr even at their defaults

    def __attrs_post_init__(self) -> None:
        window, alpha, self._welch = self.window, self.alpha, self.test == "welch"
        if window % 2:
            expected = "even (older and newer halves of equal size)"
            raise fail("Plateau", "window", expected, window, f"use window={window + 1}")
        if not self._welch and alpha is not None:
            expected = 'None with test="relative" (a level is for the Welch test)'
            raise fail("Plateau", "alpha", expected, alpha, 'drop alpha, or pass test="welch"')
        if self._welch:
            alpha = 0.05 if alpha is None else alpha
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
                raise fail("Plateau", "alpha", "a level in (0, 1)", alpha, "e.g. alpha=0.05")
            if window < 4:
                expected = 'even and >= 4 with test="welch" (two values per half for a variance)'
                raise fail("Plateau", "window", expected, window, "use window=4 or more")
            self.alpha = float(alpha)
        self._half = window // 2
        self.reset()

    # -- accumulate ------------------------------------------------------------------------------

    metrics = property(_metric, doc="The metric ``observe`` reads at every step_end.")

    def observe(self, ctx: Context) -> None:
        """Append this step's value of the metric (skipped when non-finite)."""
        self.push(ctx.metric(self.metric))

    def push(self, value: Any) -> None:
        """Append one value to the window (what ``observe`` does with the step's metric)."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise CurriculumError(
                f"{self!r}: metric {self.metric!r} must be a number, got {type(value).__name__}: {value!r}; "
                "pass a float (e.g. loss.item()) to engine.step_end"
            ) from None
        if not math.isfinite(x):
            return
        xi = _exact(x)
        item = (xi, xi * xi if self._welch else 0)  # the value as an exact int, and its square for the Welch test
        if len(self._newer) == self._half:  # the oldest of the newer half moves to the older half
            moved = self._newer.popleft()
            self._newer_sum -= moved[0]
            self._newer_sq -= moved[1]
            if len(self._older) == self._half:
                gone = self._older.popleft()
                self._older_sum -= gone[0]
                self._older_sq -= gone[1]
            self._older.append(moved)
            self._older_sum += moved[0]
            self._older_sq += moved[1]
        self._newer.append(item)
        self._newer_sum += item[0]
        self._newer_sq += item[1]
        values = self._values
        values.append(x)
        if len(values) == 2 * self.window:  # the window is its last `window` values: drop the rest now and then
            del values[: self.window]

    def reset(self) -> None:
        """Empty the window (the engine calls this when the guard's phase is entered)."""
        self._older, self._newer = deque(), deque()
        self._values: list[float] = []  # the values pushed, the window's at its end: state_dict() copies a slice
        self._older_sum = self._newer_sum = 0
        self._older_sq = self._newer_sq = 0

    # -- decide ----------------------------------------------------------------------------------

    @property
    def filled(self) -> int:
        """How many values the window holds (``window`` when full)."""
        return len(self._older) + len(self._newer)

    @property
    def full(self) -> bool:
        return len(self._older) == self._half

    def improvement(self) -> float | None:
        """The relative improvement ``r`` of the newer half over the older, or None until full."""
        if not self.full:
            return None
        gain = self._older_sum - self._newer_sum if self.mode == "min" else self._newer_sum - self._older_sum
        return _ratio(gain, abs(self._older_sum)) if self._older_sum else 0.0

    def welch(self) -> tuple[float, float | None, float] | None:
        """``(t, dof, p)`` of the one-sided Welch test that the newer half improves on the older
        by more than ``threshold`` (relative to the older mean), or None until the window is full.

        ``t = (improvement in mean - threshold * |older mean|) / sqrt(s_old**2 / n + s_new**2 / n)``
        with ``n = window // 2`` and sample variances ``s**2``; ``dof`` by Welch-Satterthwaite;
        ``p = P(T_dof > t)``. ``t**2`` and ``dof`` are correctly rounded from the exact sums. When
        both halves are constant ``dof`` is None and ``p`` is 0, 1/2 or 1 as the improvement is
        above, at or below the margin.
        """
        if not self.full:
            return None
        n = self._half
        var_old = n * self._older_sq - self._older_sum * self._older_sum  # n (n - 1) s**2, scale 2**2148
        var_new = n * self._newer_sq - self._newer_sum * self._newer_sum
        gain = self._older_sum - self._newer_sum if self.mode == "min" else self._newer_sum - self._older_sum
        p_thr, q_thr = self.threshold.as_integer_ratio()
        margin = gain * q_thr - p_thr * abs(self._older_sum)  # q_thr * n * (gain - margin) in mean units
        spread = var_old + var_new
        if spread == 0:
            if margin == 0:
                return 0.0, None, 0.5
            return (math.inf, None, 0.0) if margin > 0 else (-math.inf, None, 1.0)
        t = math.sqrt(_ratio((n - 1) * margin * margin, q_thr * q_thr * spread))
        t = t if margin >= 0 else -t
        dof = _ratio((n - 1) * spread * spread, var_old * var_old + var_new * var_new)
        return t, dof, student_t_sf(t, dof)

    def __call__(self, ctx: Context) -> bool:
        if self._welch:
            test = self.welch()
            return test is not None and test[2] >= self.alpha
        r = self.improvement()
        return r is not None and r < self.threshold

    def evidence(self, ctx: Context) -> dict:
        """Window size and fill, the halves' means, relative improvement, threshold (and the Welch test's)."""
        full = self.full
        scale = self._half << _SHIFT
        out = {
            "window": self.window,
            "filled": self.filled,
            "older_mean": _ratio(self._older_sum, scale) if full else None,
            "newer_mean": _ratio(self._newer_sum, scale) if full else None,
            "improvement": self.improvement(),
            "threshold": self.threshold,
        }
        if self._welch:
            t, dof, p = self.welch() or (None, None, None)
            out.update(test="welch", t=t, dof=dof, p=p, alpha=self.alpha)
        return out

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The window's values, oldest first (finite floats: JSON round-trips them exactly)."""
        return {"values": self._values[-self.window :]}

    def load_state_dict(self, state: dict) -> None:
        """Refill the window from ``state_dict()``; the sums are rebuilt exactly as they were."""
        values = state.get("values") if isinstance(state, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise CurriculumError(
                f"{self!r}.load_state_dict: expected {{'values': [finite numbers]}} from Plateau.state_dict(), "
                f"got {state!r}; pass the dict that state_dict() returned"
            )
        self.reset()
        for v in values:  # a longer list (saved with a larger window) keeps its last `window` values
            self.push(v)


@policy
class _Counter:
    """Shared shape of MinEpoch and MinSteps: a clock counter >= n."""

    _key = ""  # the evidence key of n
    _fields = ("", "")  # the clock counter read: over the run, in the phase

    n: int = attrs.field(converter=integer(0, "e.g. {cls}(2)"))
    in_phase: bool = attrs.field(default=False, validator=flag("in_phase=True counts since the phase was entered"))

    def _counter(self, clock: Clock) -> tuple[str, int]:
        name = self._fields[self.in_phase]
        return name, getattr(clock, name)

    def __call__(self, ctx: Context) -> bool:
        return self._counter(ctx.clock)[1] >= self.n

    def evidence(self, ctx: Context) -> dict:
        name, count = self._counter(ctx.clock)
        return {name: count, self._key: self.n}


@policy
class MinEpoch(_Counter):
    """Holds once ``clock.epoch >= n`` (epochs completed), or ``clock.epochs_in_phase >= n``
    with ``in_phase=True``. At the boundary after the third epoch the clock reads ``epoch == 3``."""

    _key = "min_epoch"
    _fields = ("epoch", "epochs_in_phase")


@policy
class MinSteps(_Counter):
    """Holds once ``clock.global_step >= n`` (optimizer steps completed), or
    ``clock.steps_in_phase >= n`` with ``in_phase=True``."""

    _key = "min_steps"
    _fields = ("global_step", "steps_in_phase")


@policy
class _Threshold:
    _word, _compare = "", staticmethod(operator.lt)

    metric: str = attrs.field(validator=metric_name("e.g. {cls}('val_bpb', 1.5)"))
    value: float = attrs.field(converter=real("e.g. {cls}('val_bpb', 1.5)"))

    metrics = property(_metric, doc="The metric read when deciding, at the transition's point.")

    def __call__(self, ctx: Context) -> bool:
        return self._compare(ctx.metric(self.metric), self.value)

    def evidence(self, ctx: Context) -> dict:
        return {"metric": self.metric, "value": ctx.metric(self.metric), self._word: self.value}


@policy
class MetricBelow(_Threshold):
    """Holds when the metric ``metric`` passed at this point is below ``value`` (NaN never holds)."""

    _word = "below"


@policy
class MetricAbove(_Threshold):
    """Holds when the metric ``metric`` passed at this point is above ``value`` (NaN never holds)."""

    _word, _compare = "above", staticmethod(operator.gt)


def _children(guards: Any, self: Any) -> tuple:
    name = self._name
    guards = tuple(guards)
    if not guards:
        raise fail(name, "guards", "at least one guard", guards, f"e.g. {name}(MinEpoch(2), Plateau())")
    return tuple(check_callable(g, f"{name}: guards[{i}]") for i, g in enumerate(guards))


class _Combinator:
    """A guard made of guards: observe, reset and state pass through to every child."""

    _name: str
    _holds: Any  # the children's values -> whether it holds
    guards: tuple

    def __attrs_post_init__(self) -> None:
        # The children's optional members, looked up once (engine.protocols).
        self._caps = caps = tuple(capabilities(g) for g in self.guards)
        self._observing = tuple(c.observe for c in caps if c.observe)
        self._resetting = tuple(c.reset for c in caps if c.reset)

    def _values(self, ctx: Context) -> list[bool]:
        # Every child is evaluated (no short-circuit), so a missing metric fails at the first
        # evaluation point rather than only once the other children happen to hold.
        return [truth_value(g, g(ctx)) for g in self.guards]

    def __call__(self, ctx: Context) -> bool:
        return self._holds(self._values(ctx))

    def observe(self, ctx: Context) -> None:
        for observe in self._observing:
            observe(ctx)

    def reset(self) -> None:
        for reset in self._resetting:
            reset()

    def evidence(self, ctx: Context) -> dict:
        """Per child, keyed by its repr: whether it holds, and its own evidence."""
        out: dict[str, dict] = {}
        for g, holds, c in zip(self.guards, self._values(ctx), self._caps):
            key, k = describe(g), 2
            while key in out:  # the same guard twice: keep both
                key, k = f"{describe(g)}#{k}", k + 1
            out[key] = {"holds": holds, **(c.evidence(ctx) if c.evidence else {})}
        return out

    def state_dict(self) -> dict:
        return {"guards": [c.state_dict() if c.state_dict else None for c in self._caps]}

    def load_state_dict(self, state: dict) -> None:
        states = state.get("guards") if isinstance(state, dict) else None
        if not isinstance(states, list) or len(states) != len(self.guards):
            raise CurriculumError(
                f"{self!r}.load_state_dict: expected {{'guards': [one entry per child, {len(self.guards)}]}} "
                f"from its state_dict(), got {state!r}"
            )
        for c, s in zip(self._caps, states):
            if c.load_state_dict and s is not None:
                c.load_state_dict(s)

    def __repr__(self) -> str:
        return f"{self._name}({', '.join(describe(g) for g in self.guards)})"


@policy
class _Many(_Combinator):
    guards: tuple[Guard, ...] = attrs.field(converter=attrs.Converter(_children, takes_self=True))


@policy
class _AllOf(_Many, AllOf):
    _name, _holds = "all_of", staticmethod(all)


@policy
class _AnyOf(_Many):
    _name, _holds = "any_of", staticmethod(any)


@policy
class _Not(_Combinator):
    _name, _holds = "not_", staticmethod(lambda values: not values[0])

    guard: Guard = attrs.field(converter=attrs.Converter(lambda g, self: _children((g,), self)[0], takes_self=True))

    @property
    def guards(self) -> tuple:  # type: ignore[override]
        return (self.guard,)


def all_of(*guards: Any) -> _AllOf:
    """A guard that holds when every one of ``guards`` holds (all are evaluated)."""
    return _AllOf(guards)


def any_of(*guards: Any) -> _AnyOf:
    """A guard that holds when at least one of ``guards`` holds (all are evaluated)."""
    return _AnyOf(guards)


def not_(guard: Any) -> _Not:
    """A guard that holds when ``guard`` does not."""
    return _Not(guard)


# -- guards for loop-backs: wait after a move, cap the visits, react to a worse metric ---------------


@policy
class Cooldown:
    """Holds once ``n`` epochs (or steps, ``unit="steps"``) have passed since the phase was entered:
    on a loop-back, ``Cooldown(2)`` keeps a run from ping-ponging."""

    n: int = attrs.field(converter=integer(1, "e.g. Cooldown(2) waits two epochs after a transition"))
    unit: str = attrs.field(
        default="epochs",
        validator=choice(("epochs", "steps"), '"epochs" or "steps"', 'e.g. Cooldown(500, unit="steps")'),
    )

    def _since(self, ctx: Context) -> int:
        return ctx.clock.epochs_in_phase if self.unit == "epochs" else ctx.clock.steps_in_phase

    def __call__(self, ctx: Context) -> bool:
        return self._since(ctx) >= self.n

    def evidence(self, ctx: Context) -> dict:
        return {f"{self.unit}_since_transition": self._since(ctx), "cooldown": self.n}


@policy
class MaxVisits:
    """Holds while the transition's destination has been entered fewer than ``n`` times (counted in
    ``ctx.history``, the start included): ``MaxVisits(3)`` on a back-off allows two back-offs."""

    n: int = attrs.field(converter=integer(1, "e.g. MaxVisits(3): the destination entered at most 3 times"))

    def _visits(self, ctx: Context) -> tuple[str, int]:
        transition = ctx.transition
        if transition is None:
            raise CurriculumError(
                f"{self!r} is evaluated outside a transition (ctx.transition is None); use it as a transition's guard"
            )
        return transition.dest, sum(1 for record in ctx.history if record.dest == transition.dest)

    def __call__(self, ctx: Context) -> bool:
        return self._visits(ctx)[1] < self.n

    def evidence(self, ctx: Context) -> dict:
        dest, visits = self._visits(ctx)
        return {"dest": dest, "visits": visits, "max_visits": self.n}


@policy
class WorseThanBest:
    """Holds when ``metric`` has been worse than its best by more than ``min_delta`` (with
    ``relative=True``: ``min_delta * |best|``) for ``patience`` consecutive evaluations at its transition's
    point; ``since="run"`` keeps the best across visits of the phase."""

    observe_at = None  # at the transition's own evaluation point

    metric: str = attrs.field(validator=metric_name('e.g. WorseThanBest("val_loss")'))
    patience: int = attrs.field(default=1, converter=integer(1, "e.g. patience=2: two evaluations in a row"))
    mode: str = attrs.field(default="min", validator=_MODE)
    min_delta: float = attrs.field(
        default=0.0,
        kw_only=True,
        converter=real("e.g. min_delta=0.01, or min_delta=0.005 with relative=True", nonnegative=True),
    )
    relative: bool = attrs.field(
        default=False, kw_only=True, validator=flag("relative=True: min_delta is a fraction of |best|")
    )
    since: str = attrs.field(
        default="phase",
        kw_only=True,
        validator=choice(
            ("phase", "run"), '"phase" (best of this visit) or "run" (best seen in the run)', 'e.g. since="run"'
        ),
    )
    best: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.reset()

    metrics = property(_metric, doc="The metric ``observe`` reads at its transition's point.")

    def observe(self, ctx: Context) -> None:
        x = ctx.metric(self.metric)
        if not math.isfinite(x):
            return
        self.last, best = x, self.best
        if best is None or (x < best if self.mode == "min" else x > best):
            self.best, self.streak = x, 0
            return
        margin = self.min_delta * abs(best) if self.relative else self.min_delta
        worse = x > best + margin if self.mode == "min" else x < best - margin
        self.streak = self.streak + 1 if worse else 0

    def reset(self) -> None:
        if self.since == "phase":
            self.best = None
        self.last: float | None = None
        self.streak = 0

    def __call__(self, ctx: Context) -> bool:
        return self.streak >= self.patience

    def evidence(self, ctx: Context) -> dict:
        evidence = {
            "metric": self.metric,
            "value": self.last,
            "best": self.best,
            "worse_for": self.streak,
            "patience": self.patience,
        }
        if self.min_delta:
            evidence["min_delta"] = (
                self.min_delta * abs(self.best) if self.relative and self.best is not None else self.min_delta
            )
        return evidence

    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last, "streak": self.streak}

    def load_state_dict(self, state: dict) -> None:
        ok = isinstance(state, dict) and set(state) == {"best", "last", "streak"}
        best, last, streak = (state[k] for k in ("best", "last", "streak")) if ok else (None, None, -1)
        floats = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (best, last))
        if not (ok and floats and isinstance(streak, int) and not isinstance(streak, bool) and streak >= 0):
            raise CurriculumError(
                f"{self!r}.load_state_dict: expected {{'best': float|None, 'last': float|None, 'streak': int >= 0}} "
                f"from WorseThanBest.state_dict(), got {state!r}"
            )
        self.best, self.last = (None if v is None else float(v) for v in (best, last))
        self.streak = streak
