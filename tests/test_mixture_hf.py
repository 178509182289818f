"""A data mixture under the Hugging Face Trainer (engine.integrations.hf.MixtureTrainer): a mix change at a step
end applies from the next optimizer step, and a run resumed from any checkpoint equals the uninterrupted one.

Two sources of 12 windows each (source "a" writes tokens 0-7, "b" tokens 8-15), 4 examples an optimizer step
(4 x 1, or 2 x 2 with gradient accumulation), 2 epochs of 6 steps, a checkpoint at every step, a model with dropout.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from transformers import TrainingArguments

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.integrations.hf import MIXTURE_KEY, CurriculumCallback, MixtureTrainer
from policies import MinSteps, MixtureSampler
from tests.hf_tiny import DropoutLM
from tests.utils import HF_LENGTH, HF_VOCAB

SIZES = {"a": 12, "b": 12}
STEPS = 12
CHANGE = 3  # the step at whose end the mix changes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class Source(torch.utils.data.Dataset):
    """Windows whose tokens are all in [low, low + 8): the source of an example is readable from its tokens."""

    def __init__(self, low: int, size: int) -> None:
        self.low, self.size = low, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.low * 1000 + i)
        x = torch.randint(self.low, self.low + HF_VOCAB // 2, (HF_LENGTH,), generator=g)
        return {"input_ids": x, "labels": (x * 3 + 1) % HF_VOCAB}


def curriculum() -> Curriculum:
    """``general`` (a 3 : b 1) until the end of step CHANGE, then ``target`` (b only)."""
    return Curriculum(
        [Phase("general", params={"mix": {"a": 3, "b": 1}}), Phase("target", params={"mix": {"b": 1}})],
        [Transition("general", "target", [MinSteps(CHANGE)], when=Point.STEP_END)],
    )


def train(out, accum: int, resume=None, batch_size: int = 4, **mixture):
    """One run; returns (engine, sampler, model, the sources each optimizer step trained on)."""
    engine = CurriculumEngine(curriculum())
    sampler = MixtureSampler(SIZES, batch_size, **{"seed": 0, **mixture}, engine=engine)
    model = DropoutLM()
    seen = Counter()

    def record(module, args, kwargs):
        if module.training:  # the engine's clock has not counted the step in progress yet
            for row in kwargs["input_ids"]:
                seen[engine.clock.global_step + 1, "a" if row[0] < HF_VOCAB // 2 else "b"] += 1

    model.register_forward_pre_hook(record, with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4 // accum,
        gradient_accumulation_steps=accum,
        num_train_epochs=STEPS * 4 // sum(SIZES.values()),
        learning_rate=1e-2,
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    sources = torch.utils.data.ConcatDataset([Source(0, SIZES["a"]), Source(HF_VOCAB // 2, SIZES["b"])])
    trainer = MixtureTrainer(
        model=model, args=args, train_dataset=sources, mixture=sampler, callbacks=[CurriculumCallback(engine)]
    )
    trainer.train(resume_from_checkpoint=resume)
    steps = {}
    for (step, name), n in sorted(seen.items()):
        steps.setdefault(step, {})[name] = n
    return engine, sampler, model, steps


@pytest.fixture(scope="module", params=[1, 2], ids=["accum1", "accum2"])
def full(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mixture-accum{request.param}")
    return request.param, out, *train(out, request.param)


def test_a_mix_change_at_a_step_end_applies_from_the_next_optimizer_step(full):
    """Steps 1-3 train on a 3 : b 1, the transition fires at step 3's end, and steps 4-12 train on b only."""
    _, _, engine, sampler, _, steps = full
    (change,) = [r for r in engine.history if r.source is not None]
    assert (change.dest, change.global_step, change.point) == ("target", CHANGE, "step_end")
    assert steps == {step: {"a": 3, "b": 1} if step <= CHANGE else {"b": 4} for step in range(1, STEPS + 1)}
    assert sampler.state_dict()["step"] == STEPS


def test_each_checkpoint_holds_the_mixture_at_the_model_step(full):
    """The position saved in checkpoint-N is after N steps' draws, not one ahead."""
    _, out, *_ = full
    for step in range(1, STEPS + 1):
        state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["stateful_callbacks"][MIXTURE_KEY]["step"] == step


@pytest.mark.parametrize("at", [2, CHANGE, 8], ids=["mid-phase", "at-the-mix-change", "after-the-change"])
def test_a_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(full, at, tmp_path):
    """Weights, engine history, mixture position and the sources of every step after the resume, bit for bit."""
    accum, out, engine, sampler, model, steps = full
    engine2, sampler2, model2, steps2 = train(tmp_path, accum, resume=str(out / f"checkpoint-{at}"))
    assert steps2 == {step: steps[step] for step in range(at + 1, STEPS + 1)}
    assert [r.comparable() for r in engine2.history] == [r.comparable() for r in engine.history]
    assert sampler2.state_dict() == sampler.state_dict()
    a, b = model.state_dict(), model2.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_another_seed_is_refused(full, tmp_path):
    """The checkpoint's mixture position belongs to seed 0: a sampler of seed 1 is refused before training."""
    accum, out, *_ = full
    with pytest.raises(CurriculumError, match="seed"):
        train(tmp_path, accum, resume=str(out / "checkpoint-2"), seed=1)


@pytest.mark.parametrize(
    "mixture, message",
    [
        ({"batch_size": 2}, "the mixture draws 2 examples a step and the Trainer trains on 4"),
        ({"rank": 0, "world_size": 2}, "the mixture is rank 0 of 2 and this process rank 0 of 1"),
    ],
    ids=["batch-size", "ranks"],
)
def test_a_mixture_that_does_not_fit_the_trainer_is_refused_before_training(mixture, message, tmp_path):
    """The sampler draws the optimizer step's examples (per device x accumulation) of this process's rank."""
    with pytest.raises(CurriculumError, match=message):
        train(tmp_path, 2, **mixture)
    assert not list(tmp_path.glob("checkpoint-*"))
