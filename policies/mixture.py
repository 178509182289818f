"""Data mixtures: a phase param ``mix`` (``params={"mix": {"web": 3, "code": 1}}``) and a deterministic,
resumable sampler that follows it: exact per-step proportions (largest remainder with a carried credit,
in fractions), epochs of each source seeded by sha256 (never Python's salted ``hash``). docs/mixtures.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from fractions import Fraction
from typing import Any, Iterator, Mapping

import attrs
import numpy as np
import torch

from engine import Curriculum, CurriculumError
from policies._checks import check_int
from policies.wsd import adaptive_cooldown

__all__ = ["MIX", "mix_weights", "phase_mixes", "source_permutation", "MixtureSampler", "anneal_curriculum"]

MIX = "mix"  # the phase param


def mix_weights(mix: Any, sources: tuple[str, ...], where: str) -> dict[str, Fraction]:
    """``mix`` (a mapping of source name -> weight) normalised over ``sources``, exactly (as fractions;
    absent sources 0). Refuses, in one line naming ``where``: a non-mapping, an unknown source name, a
    weight that is not a finite number >= 0, and weights whose sum is not positive."""
    if not isinstance(mix, Mapping):
        raise CurriculumError(
            f"{where}: mix must be a table of source name -> weight, got {mix!r}; e.g. mix = {{ {sources[0]} = 1 }}"
        )
    weights = {}
    for name, weight in mix.items():
        if name not in sources:
            raise CurriculumError(
                f"{where}: mix names the source {name!r}, and the sources are {', '.join(sources)}; "
                "use those names (or add the source)"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise CurriculumError(
                f"{where}: mix weight of {name!r} must be a finite number >= 0, got {weight!r}; e.g. {name} = 1"
            )
        weights[name] = Fraction(weight)
    total = sum(weights.values(), Fraction(0))
    if total <= 0:
        raise CurriculumError(
            f"{where}: mix weights must have a positive sum, got {dict(mix)!r}; give at least one source a weight > 0"
        )
    return {name: weights.get(name, Fraction(0)) / total for name in sources}


def phase_mixes(
    curriculum: Curriculum | None, sources: tuple[str, ...], default: Mapping[str, Any] | None = None
) -> dict[str | None, dict[str, Fraction]]:
    """Each phase's normalised mix (key: phase name), checked once; key ``None``: the default, for a
    phase without ``mix`` (equal weights over ``sources`` unless ``default`` is given)."""
    mixes = {None: mix_weights(dict.fromkeys(sources, 1) if default is None else default, sources, "default mix")}
    for phase in curriculum.phases if curriculum is not None else ():
        if MIX in phase.params:
            mixes[phase.name] = mix_weights(phase.params[MIX], sources, f"phase {phase.name!r}")
    return mixes


def source_permutation(seed: int, name: str, epoch: int, size: int) -> np.ndarray:
    """Epoch ``epoch`` of source ``name``: a permutation of ``range(size)`` seeded by sha256 of
    ``[seed, name, epoch]`` (stable across processes and machines)."""
    digest = hashlib.sha256(json.dumps([int(seed), str(name), int(epoch)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "big")).permutation(size)


def _counts(weights: dict[str, Fraction], credit: dict[str, Fraction], n: int) -> tuple[dict, dict]:
    """Largest remainder: the counts (summing to ``n``) of ``weights * n + credit``, and the new credit."""
    quota = {s: credit[s] + w * n for s, w in weights.items()}
    counts = {s: math.floor(q) for s, q in quota.items()}
    short = n - sum(counts.values())
    order = sorted(quota, key=lambda s: quota[s] - counts[s], reverse=True)  # stable: ties by source order
    for s in order[:short]:
        counts[s] += 1
    return counts, {s: quota[s] - counts[s] for s in quota}


def _fraction(text: Any, where: str) -> Fraction:
    try:
        return Fraction(text)
    except (TypeError, ValueError, ZeroDivisionError):
        raise CurriculumError(f"{where}: {text!r} is not a fraction; load a state saved by MixtureSampler") from None


class MixtureSampler(torch.utils.data.Sampler):
    """Each step's ``batch_size`` examples from named sources, by the current phase's ``mix``.

    ``sizes``: source name -> number of examples, in a fixed order (the order of a ``ConcatDataset``
    over them). ``engine``: a :class:`engine.CurriculumEngine` whose phases may carry ``mix``
    (None: the ``default`` mix throughout). ``seed``: the run's. ``rank``/``world_size``: this
    process's shard (default: ``torch.distributed``'s when initialised, else 0 of 1); ``batch_size``
    is per rank. ``steps``: how many batches iterating yields in all (a ``DataLoader``'s length);
    None: endless.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int,
        *,
        seed: int,
        engine: Any = None,
        default: Mapping[str, Any] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        steps: int | None = None,
    ) -> None:
        where = "MixtureSampler"
        if not isinstance(sizes, Mapping) or not sizes:
            raise CurriculumError(f"{where}: sizes must map each source's name to its size, got {sizes!r}")
        self.sizes = {str(name): check_int(where, f"sizes[{name!r}]", n, 1, "a source needs one example at least")
                      for name, n in sizes.items()}  # fmt: skip
        self.sources = tuple(self.sizes)
        self.batch_size = check_int(where, "batch_size", batch_size, 1, "examples per step, e.g. 8")
        self.seed = check_int(where, "seed", seed, 0, "the run's seed, e.g. 0")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if world_size is None:
            world_size = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        self.world_size = check_int(where, "world_size", world_size, 1, "the number of ranks")
        self.rank = check_int(where, "rank", rank, 0, "this process's rank")
        if self.rank >= self.world_size:
            raise CurriculumError(f"{where}: rank {rank} must be below world_size {world_size}")
        self.steps = None if steps is None else check_int(where, "steps", steps, 0, "batches in all, or None")
        self.engine = engine
        self.mixes = phase_mixes(getattr(engine, "curriculum", None), self.sources, default)
        self.offsets = dict(zip(self.sources, np.cumsum([0, *self.sizes.values()]).tolist()))
        self.step = 0
        self.consumed = dict.fromkeys(self.sources, 0)  # positions of each source's stream, over all ranks
        self.credit = dict.fromkeys(self.sources, Fraction(0))
        self.credit_mix: dict[str, Fraction] | None = None  # the mix the credit was carried under
        self._perms: dict[str, tuple[int, np.ndarray]] = {}

    def current_mix(self) -> dict[str, Fraction]:
        """The normalised mix of the engine's current phase (the default when it has none)."""
        name = self.engine.phase.name if self.engine is not None else None
        return self.mixes.get(name, self.mixes[None])

    def _index(self, name: str, position: int) -> int:
        epoch, i = divmod(position, self.sizes[name])
        cached = self._perms.get(name)
        if cached is None or cached[0] != epoch:
            cached = self._perms[name] = (epoch, source_permutation(self.seed, name, epoch, self.sizes[name]))
        return int(cached[1][i])

    def next_batch(self) -> list[tuple[str, int]]:
        """This rank's examples of the next step, as (source name, index in the source), grouped by
        source in the sources' order; advances the position."""
        mix = self.current_mix()
        credit = self.credit if mix == self.credit_mix else dict.fromkeys(self.sources, Fraction(0))
        counts, self.credit = _counts(mix, credit, self.batch_size)
        self.credit_mix = mix
        batch = []
        for name, n in counts.items():
            start = self.consumed[name] + self.rank
            batch += [(name, self._index(name, start + k * self.world_size)) for k in range(n)]
            self.consumed[name] += n * self.world_size
        self.step += 1
        return batch

    def flat(self, batch: list[tuple[str, int]]) -> list[int]:
        """``batch``'s examples as indices into a ``ConcatDataset`` of the sources in their order."""
        return [self.offsets[name] + i for name, i in batch]

    def __iter__(self) -> Iterator[list[int]]:
        while self.steps is None or self.step < self.steps:
            yield self.flat(self.next_batch())

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("MixtureSampler(steps=None) is endless; pass steps= to give it a length")
        return self.steps

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The position, JSON-safe: steps drawn, examples consumed per source, the credit and its mix
        (fractions as text), and the sizes and seed it was drawn with (checked on load)."""
        return {
            "step": self.step,
            "consumed": dict(self.consumed),
            "credit": {s: str(c) for s, c in self.credit.items()},
            "credit_mix": None if self.credit_mix is None else {s: str(w) for s, w in self.credit_mix.items()},
            "sizes": dict(self.sizes),
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any], *, other_sizes: bool = False) -> None:
        """Continue from ``state`` (from :meth:`state_dict`); refuses a state of other sources, sizes,
        seed or world size (the stream it positions is another). ``other_sizes``: the sources (same names)
        changed knowingly; each continues at its count of examples consumed, in epochs of its new size."""
        where = "MixtureSampler.load_state_dict"
        for key in ("sizes", "seed", "world_size"):
            mine, saved = getattr(self, key), state.get(key)
            if key == "sizes" and other_sizes:  # the same names, each of another size
                mine, saved = set(mine), set(saved or ())
            if saved != mine:
                raise CurriculumError(
                    f"{where}: the state was saved with {key} {state.get(key)!r}, and this sampler has "
                    f"{getattr(self, key)!r}; resume with the same sources, seed and ranks"
                )
        step = check_int(where, "step", state["step"], 0, "load a state saved by MixtureSampler")
        consumed = {
            s: check_int(where, f"consumed[{s!r}]", state["consumed"][s], 0, "a saved state") for s in self.sources
        }
        credit = {s: _fraction(state["credit"][s], where) for s in self.sources}
        saved_mix = state["credit_mix"]
        self.credit_mix = None if saved_mix is None else {s: _fraction(saved_mix[s], where) for s in self.sources}
        self.step, self.consumed, self.credit = step, consumed, credit


def anneal_curriculum(
    min_epoch: int,
    stable: Mapping[str, float],
    cooldown: Mapping[str, float],
    window: int = 50,
    threshold: float = 0.005,
    test: str = "relative",
    alpha: float | None = None,
) -> Curriculum:
    """WSD with an anneal: :func:`~policies.adaptive_cooldown` whose ``stable`` and ``cooldown`` phases read
    the mixes ``stable`` and ``cooldown`` (e.g. heavy on the target data), so the data follows the LR."""
    base = adaptive_cooldown(min_epoch, window, threshold, test, alpha)
    mixes = {"stable": stable, "cooldown": cooldown}
    phases = [attrs.evolve(p, params={**p.params, MIX: dict(mixes[p.name])}) for p in base.phases]
    return attrs.evolve(base, phases=phases)
