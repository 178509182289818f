"""Ready-made policies for the curriculum engine: guards, actions, LR schedules, curricula and data
mixtures (docs/reference.md lists them).

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
