"""The phase param ``mix`` and MixtureSampler: exact per-step proportions, epochs without replacement,
exact resume, a mix change at the next step, rank shards, bad input in one line."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import policies
from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from policies import WSD, MinSteps, MixtureSampler, anneal_curriculum
from policies.mixture import mix_weights, source_permutation
from tests.utils import DATA, TINY_MODEL, assert_same_run, resume, sources

SIZES = {"web": 13, "code": 7, "books": 5}


def two_mixes(at_step: int = 4) -> Curriculum:
    """``general`` (web 2 : code 1) until step ``at_step``, then ``anneal`` (code 3 : books 1, web 0)."""
    return Curriculum(
        [
            Phase("general", params={"mix": {"web": 2, "code": 1}}),
            Phase("anneal", params={"mix": {"code": 3, "books": 1}}),
        ],
        [Transition("general", "anneal", guards=[MinSteps(at_step)], when=Point.STEP_END)],
    )


def run(sampler: MixtureSampler, engine: CurriculumEngine | None, steps: int) -> list[list[tuple[str, int]]]:
    batches = []
    for _ in range(steps):
        batches.append(sampler.next_batch())
        if engine is not None:
            engine.step_end(loss=1.0)
    return batches


def test_each_step_has_the_mix_proportions_exactly():
    """Every step holds batch_size examples, each source within one of its share, and over steps the counts
    follow the weights to within one example."""
    sampler = MixtureSampler(SIZES, 10, seed=0, default={"web": 0.5, "code": 0.3, "books": 0.2})
    total = Counter()
    for step in range(1, 30):
        counts = Counter(name for name, _ in sampler.next_batch())
        assert counts == {"web": 5, "code": 3, "books": 2}
        total += counts
    sampler = MixtureSampler(SIZES, 4, seed=0, default={"web": 1, "code": 1, "books": 1})
    total = Counter()
    for step in range(1, 31):
        counts = Counter(name for name, _ in sampler.next_batch())
        assert sum(counts.values()) == 4 and all(abs(counts[s] - Fraction(4, 3)) < 1 for s in SIZES)
        total += counts
        assert all(abs(total[s] - Fraction(4 * step, 3)) < 1 for s in SIZES)


def test_each_source_is_read_without_replacement_in_shuffled_epochs():
    """Each epoch of a source holds every index once, in an order that differs between epochs and sources."""
    sampler = MixtureSampler(SIZES, 5, seed=3, default={"web": 1})
    drawn = [i for _ in range(13) for _, i in sampler.next_batch()]  # 65 = 5 epochs of web
    epochs = [drawn[k : k + 13] for k in range(0, 65, 13)]
    assert all(sorted(e) == list(range(13)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 5
    assert list(source_permutation(3, "web", 0, 13)) == epochs[0]
    assert list(source_permutation(3, "web", 0, 13)) != list(source_permutation(3, "code", 0, 13))
    assert list(source_permutation(3, "web", 0, 13)) != list(source_permutation(4, "web", 0, 13))


def test_a_mix_change_applies_from_the_next_step():
    """A transition fired at step 4's end: steps 1-4 draw web 2 : code 1, from step 5 on no web at all."""
    engine = CurriculumEngine(two_mixes(4))
    engine.start()
    sampler = MixtureSampler(SIZES, 4, seed=0, engine=engine)
    batches = run(sampler, engine, 8)
    general = [{"web": 3, "code": 1}, {"web": 2, "code": 2}, {"web": 3, "code": 1}, {"web": 3, "code": 1}]
    assert [Counter(n for n, _ in b) for b in batches[:4]] == general  # a credit of web -1/3, code 1/3 is left
    assert [Counter(n for n, _ in b) for b in batches[4:]] == [{"code": 3, "books": 1}] * 4
    # a credit left in favour of a source the next mix drops must not give it an example
    curriculum = Curriculum(
        [
            Phase("a", params={"mix": {"web": 3, "code": 1, "books": 1}}),
            Phase("b", params={"mix": {"code": 1, "books": 1}}),
        ],
        [Transition("a", "b", guards=[MinSteps(3)], when=Point.STEP_END)],
    )
    engine = CurriculumEngine(curriculum)
    engine.start()
    batches = run(MixtureSampler(SIZES, 3, seed=0, engine=engine), engine, 6)
    assert not any(name == "web" for b in batches[3:] for name, _ in b)


def test_resume_mid_phase_continues_bit_for_bit():
    """Sampler and engine state through JSON at every step: the batches and the weights of a tiny model
    trained on them equal an uninterrupted run's, across the mix change."""
    data = {
        name: torch.randn(n, 3, generator=torch.Generator().manual_seed(k)) for k, (name, n) in enumerate(SIZES.items())
    }

    def train(stop: int | None) -> tuple[list, torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        engine = CurriculumEngine(two_mixes(5))
        engine.start()
        sampler = MixtureSampler(SIZES, 4, seed=7, engine=engine, default={"books": 1})
        batches = []
        for step in range(10):
            if step == stop:  # a fresh process: everything rebuilt, the state loaded from JSON
                saved = json.loads(json.dumps({"engine": engine.state_dict(), "sampler": sampler.state_dict()}))
                engine = CurriculumEngine(two_mixes(5))
                engine.load_state_dict(saved["engine"])
                sampler = MixtureSampler(SIZES, 4, seed=7, engine=engine, default={"books": 1})
                sampler.load_state_dict(saved["sampler"])
            batch = sampler.next_batch()
            x = torch.stack([data[name][i] for name, i in batch])
            loss = model(x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            engine.step_end(loss=loss.item())
            batches.append(batch)
        return batches, torch.cat([p.detach().flatten() for p in model.parameters()])

    batches, weights = train(None)
    for stop in (1, 2, 3, 5, 6, 9):
        resumed, resumed_weights = train(stop)
        assert resumed == batches
        assert torch.equal(resumed_weights, weights)


def test_rank_shards_are_disjoint_and_cover_the_stream():
    """Three ranks draw disjoint examples whose union is what one process reads of each source's stream."""
    sizes = {"web": 13, "code": 12}
    ranks = [MixtureSampler(sizes, 4, seed=1, rank=r, world_size=3) for r in range(3)]
    drawn = [[x for _ in range(2) for x in s.next_batch()] for s in ranks]  # 2 steps: 12 of each source
    flat = [x for d in drawn for x in d]
    assert len(set(flat)) == len(flat) == 24
    assert sorted(i for n, i in flat if n == "web") == sorted(source_permutation(1, "web", 0, 13)[:12].tolist())
    assert sorted(i for n, i in flat if n == "code") == list(range(12))
    assert all(Counter(n for n, _ in d) == {"web": 4, "code": 4} for d in drawn)


def test_a_data_loader_reads_the_flat_indices():
    """As a DataLoader's batch_sampler over a ConcatDataset of the sources, in order: the same examples."""
    datasets = [torch.arange(n) + 100 * k for k, n in enumerate(SIZES.values())]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.ConcatDataset(datasets),
        batch_sampler=MixtureSampler(SIZES, 5, seed=2, steps=3, default={"web": 1, "books": 1}),
    )
    reference = MixtureSampler(SIZES, 5, seed=2, default={"web": 1, "books": 1})
    expected = [[100 * list(SIZES).index(n) + i for n, i in reference.next_batch()] for _ in range(3)]
    assert [b.tolist() for b in loader] == expected and len(loader) == 3


def test_weights_are_normalised_and_absent_sources_are_zero():
    assert mix_weights({"web": 3, "code": 1}, tuple(SIZES), "x") == {
        "web": Fraction(3, 4),
        "code": Fraction(1, 4),
        "books": 0,
    }


@pytest.mark.parametrize(
    "mix, message",
    [
        ({"wbe": 1}, "phase 'general': mix names the source 'wbe', and the sources are web, code, books"),
        ({"web": 0, "code": 0}, "phase 'general': mix weights must have a positive sum"),
        ({"web": -1, "code": 2}, "phase 'general': mix weight of 'web' must be a finite number >= 0, got -1"),
        ({"web": float("nan")}, "mix weight of 'web' must be a finite number >= 0, got nan"),
        ([1, 2], "phase 'general': mix must be a table of source name -> weight"),
    ],
)
def test_bad_mixes_are_refused_in_one_line_when_the_sampler_is_built(mix, message):
    engine = CurriculumEngine(Curriculum([Phase("general", params={"mix": mix})], []))
    with pytest.raises(CurriculumError, match="^[^\n]*$") as info:
        MixtureSampler(SIZES, 4, seed=0, engine=engine)
    assert message in str(info.value)


def test_a_state_of_other_sources_is_refused():
    state = MixtureSampler(SIZES, 4, seed=0).state_dict()
    with pytest.raises(CurriculumError, match="saved with sizes .* resume with the same sources"):
        MixtureSampler({**SIZES, "web": 14}, 4, seed=0).load_state_dict(state)
    with pytest.raises(CurriculumError, match="saved with seed 0"):
        MixtureSampler(SIZES, 4, seed=1).load_state_dict(state)


# -- chunklm train with named sources ----------------------------------------------------------------------------

MIX_FILE = """version = 1

[[phases]]
name = "stable"
params = { mix = { general = 3, target = 1 } }

[[phases]]
name = "anneal"
params = { mix = { target = 1 } }

[[transitions]]
source = "stable"
dest = "anneal"
when = "step_end"
guards = [{ type = "MinSteps", n = 7 }]
"""


def mixed_train(tmp: Path, name: str, *extra: str, data: list[str] | None = None, mix: str = MIX_FILE) -> int:
    from runs.cli import main

    (tmp / "mix.toml").write_text(mix)
    args = [*TINY_MODEL, "--log-every", "0", "--epochs", "3", "--curriculum", str(tmp / "mix.toml")]
    args[args.index("--data") + 1 : args.index("--data") + 2] = data or sources(tmp)
    return main(["train", *args, "--ckpt", str(tmp / f"{name}.pt"), *extra])


def test_named_sources_train_by_the_mix_and_report_bpb_per_source(tmp_path, capsys):
    """The epoch line and epochs.csv hold val_bpb per source, the checkpoint one fingerprint per source."""
    from runs.artifacts import RunFiles, read_csv
    from runs.checkpoint import load_checkpoint

    assert mixed_train(tmp_path, "run") == 0
    out = capsys.readouterr().out
    assert "val_bpb/general=" in out and "val_bpb/target=" in out
    rows = read_csv(RunFiles(tmp_path / "run.pt").epochs)
    assert len(rows) == 3 and all(float(r["val_bpb/general"]) > 0 and float(r["val_bpb/target"]) > 0 for r in rows)
    saved = load_checkpoint(tmp_path / "run.pt")
    assert list(saved.data["sources"]) == ["general", "target"]
    state = saved.trainer["sampler"]
    assert state["step"] == 18 and sum(state["consumed"].values()) == 18 * 4
    assert state["consumed"]["target"] == 7 + 11 * 4  # 1 of 4 for 7 steps, then every window


def test_named_sources_resume_mid_phase_exactly(tmp_path, capsys):
    """Stopped before and after the mix change, then resumed: the same run as an uninterrupted one."""
    assert mixed_train(tmp_path, "whole") == 0
    for stop in ("5", "9"):
        assert mixed_train(tmp_path, f"split{stop}", "--stop-after", stop) == 0
        assert resume(tmp_path, f"split{stop}") == 0
        assert_same_run(tmp_path, "whole", f"split{stop}")


def test_a_resume_with_a_source_changed_is_refused_unless_allowed(tmp_path, capsys):
    assert mixed_train(tmp_path, "run", "--stop-after", "2") == 0
    (tmp_path / "target" / "textwrap.py").write_text("changed\n" * 400)
    capsys.readouterr()
    assert resume(tmp_path, "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data differs from the checkpoint's: source target: 1 file changed size" in err[0]
    assert resume(tmp_path, "run", "--allow-data-change") == 0  # knowingly: the sampler goes on over the new sizes
    assert "continuing on changed data" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mix, data, message",
    [
        (
            MIX_FILE.replace("target = 1 } }\n\n[[trans", "tagret = 1 } }\n\n[[trans"),
            None,
            "phase 'anneal': mix names the source 'tagret', and the sources are general, target",
        ),
        (
            MIX_FILE.replace("{ target = 1 }", "{ target = 0 }"),
            None,
            "phase 'anneal': mix weights must have a positive sum",
        ),
        (MIX_FILE.replace("general = 3", "general = -3"), None, "mix weight of 'general' must be a finite number >= 0"),
        (MIX_FILE, [DATA], "phase 'stable' has a mix, and --data names no sources"),
        (MIX_FILE, [f"general={DATA}", DATA], "some --data items name their source (NAME=PATH) and this one does not"),
        (MIX_FILE, "tiny", "--data source 'target': corpus too small"),
    ],
)
def test_bad_sources_and_mixes_exit_2_in_one_line_before_training(tmp_path, capsys, mix, data, message):
    if data == "tiny":
        (tmp_path / "small").mkdir()
        (tmp_path / "small" / "a.txt").write_text("too short")
        data = [f"general={DATA}", f"target={tmp_path / 'small'}"]
    assert mixed_train(tmp_path, "run", data=data, mix=mix) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0], captured.err
    assert "Epoch" not in captured.out and not (tmp_path / "run.pt").exists()


def test_the_anneal_starts_on_a_plateau_or_with_the_automatic_cooldown():
    """anneal_curriculum: a flat loss switches the mix at the first epoch end past the floor, starting the
    cooldown there; a loss still falling switches it at the step WSD's own cooldown starts."""
    for losses, cooldown_start in ((lambda s: 1.0, 10), (lambda s: 10.0 - 0.1 * s, 48)):
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        schedule = WSD(optimizer, base_lr=1.0, total_steps=60, cooldown_fraction=0.2)
        engine = CurriculumEngine(
            anneal_curriculum(2, {"web": 1}, {"code": 1}, window=4, threshold=0.01), schedule=schedule
        )
        engine.start()
        sampler = MixtureSampler({"web": 7, "code": 5}, 2, seed=0, engine=engine)
        drawn = []
        for step in range(60):
            drawn.append({name for name, _ in sampler.next_batch()})
            optimizer.step()
            schedule.step()
            engine.step_end(loss=losses(step))
            if (step + 1) % 5 == 0:
                engine.epoch_end()
        assert schedule.cooldown_start == cooldown_start
        assert drawn == [{"web"}] * cooldown_start + [{"code"}] * (60 - cooldown_start)


def test_the_shipped_anneal_file_trains_on_named_sources(tmp_path, capsys):
    shipped = Path(policies.__file__).parent / "curricula" / "wsd_anneal.toml"
    from runs.cli import main

    args = [*TINY_MODEL, "--log-every", "0", "--epochs", "1", "--schedule", "wsd", "--curriculum", str(shipped)]
    args[args.index("--data") + 1 : args.index("--data") + 2] = sources(tmp_path)
    assert main(["train", *args, "--ckpt", str(tmp_path / "run.pt")]) == 0
    assert "val_bpb/target=" in capsys.readouterr().out
