"""Ready-made policies for the curriculum engine: guards, actions, the LR schedule, the seed's curriculum.

Guards (decide): :class:`Plateau`, :class:`MinEpoch`, :class:`MinSteps`, :class:`MetricBelow`,
:class:`MetricAbove`, the combinators :func:`all_of`, :func:`any_of`, :func:`not_`, and for
loop-backs :class:`Cooldown`, :class:`MaxVisits`, :class:`WorseThanBest`.
Actions (act): :class:`RestartLR`, :class:`SetCutoff`, :class:`ResetWindow`.
Schedules: :class:`StagedCosine`, the stage-aligned cosine LR with restarts (a torch ``LRScheduler``),
and :class:`Restartable`, which lets :class:`RestartLR` restart any torch LR scheduler.
Curriculum: :func:`spectral_curriculum` (cutoff 128 -> 256 -> 512 -> full) and
:func:`phase_for_epoch`, the phase to resume in from a checkpoint without engine state;
:func:`seq_len_curriculum` (sequence-length warmup, phase param ``seq_len``).
Data mixtures: the phase param ``mix`` and :class:`MixtureSampler`, which draws each step's examples by it;
:func:`anneal_curriculum` (WSD whose cooldown reads another mix).
Warmup-stable-decay: :class:`WSD` (a torch ``LRScheduler``), whose cooldown the action
:class:`StartCooldown` starts; :func:`adaptive_cooldown` starts it when the stable phase plateaus.

Importing this package registers its guards and actions in :data:`engine.datafile.default_registry`,
so that curriculum files can name them.
"""

from engine.datafile import default_registry
from policies.actions import ResetWindow, RestartLR, SetCutoff
from policies.guards import (
    Cooldown,
    MaxVisits,
    MetricAbove,
    MetricBelow,
    MinEpoch,
    MinSteps,
    Plateau,
    WorseThanBest,
    _AllOf,
    _AnyOf,
    _Not,
    all_of,
    any_of,
    not_,
)
from policies.mixture import MixtureSampler, anneal_curriculum, mix_weights
from policies.schedule import SEED_STAGES, Restartable, StagedCosine, StageUnit
from policies.seqlen import seq_len_curriculum
from policies.spectral import phase_for_epoch, spectral_curriculum
from policies.wsd import WSD, CooldownDue, CooldownShape, StartCooldown, adaptive_cooldown

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
    "RestartLR",
    "SetCutoff",
    "ResetWindow",
    "StagedCosine",
    "StageUnit",
    "Restartable",
    "SEED_STAGES",
    "spectral_curriculum",
    "phase_for_epoch",
    "seq_len_curriculum",
    "WSD",
    "CooldownShape",
    "StartCooldown",
    "adaptive_cooldown",
    "CooldownDue",
    "MixtureSampler",
    "mix_weights",
    "anneal_curriculum",
]

for _guard in (Plateau, MinEpoch, MinSteps, MetricBelow, MetricAbove, Cooldown, MaxVisits, WorseThanBest, CooldownDue):
    default_registry.register_guard(_guard)
for _guard, _name in ((_AllOf, "all_of"), (_AnyOf, "any_of"), (_Not, "not_")):
    default_registry.register_guard(_guard, _name)
for _action in (RestartLR, SetCutoff, StartCooldown):
    default_registry.register_action(_action)
default_registry.refuse(
    "ResetWindow",
    "it holds the very guard objects of a transition, which a data file cannot point at; "
    "build a curriculum that uses it in code",
)
