"""docs/curriculum-files.md's examples run as written (plain Lightning and the configs here; LightningCLI and
Hydra themselves where jsonargparse / hydra-core are installed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import engine.datafile
from engine import Curriculum, Phase, Point, Registry, Transition, curriculum_to_dict, load_curriculum
from policies import MinEpoch, MinSteps, RestartLR

DOC = Path(__file__).resolve().parent.parent / "docs" / "curriculum-files.md"
LIGHTNING_WARNINGS = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*", "ignore::UserWarning:lightning.*", "ignore::UserWarning:jsonargparse.*"
)


def block(marker: str) -> str:
    match = re.search(rf"<!-- example: {marker} -->\s*```\w+\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/curriculum-files.md has no example block marked {marker!r}"
    return match.group(1)


def code_curriculum() -> Curriculum:
    """The curriculum the doc's TOML file describes, in code."""
    return Curriculum(
        [Phase("warm", params={"seq_len": 256}), Phase("main"), Phase("final")],
        [
            Transition("warm", "main", [MinSteps(6)], [RestartLR()], when=Point.STEP_END),
            Transition("main", "final", [MinEpoch(2)]),
        ],
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding the doc's curriculum.toml, as the current directory (the examples name it relatively)."""
    (tmp_path / "curriculum.toml").write_text(block("curriculum-toml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def module_namespace() -> dict:
    namespace = {"__name__": "train"}  # not __main__: define the module, do not start LightningCLI
    exec(compile(block("lightning-module"), "curriculum-files.md", "exec"), namespace)
    return namespace


def transitions(engine) -> list:
    return [(r.source, r.dest, r.global_step) for r in engine.history if r.source]


def test_the_toml_example_is_the_curriculum_in_code(workdir):
    """The layout example loads into the curriculum it describes: the same fingerprint as in code."""
    assert load_curriculum("curriculum.toml").fingerprint() == code_curriculum().fingerprint()


def test_the_registration_example_names_the_users_guard(monkeypatch):
    """The registered class is built from the dict; before registration the name is unknown."""
    monkeypatch.setattr(engine.datafile, "default_registry", Registry())
    namespace = {"__name__": "__main__"}
    exec(compile(block("register"), "curriculum-files.md", "exec"), namespace)
    (guard,) = namespace["curriculum"].transitions[0].guards
    assert type(guard) is namespace["LossBelow"] and guard.value == 0.5
    written = curriculum_to_dict(namespace["curriculum"])
    assert written["transitions"][0]["guards"] == [{"type": "LossBelow", "value": 0.5}]


@LIGHTNING_WARNINGS
@pytest.mark.parametrize("config", ["lightning-cli-yaml", "lightning-cli-inline-yaml"])
def test_the_lightning_configs_train_the_curriculum(workdir, config):
    """The YAML configs, read as LightningCLI hands them to the module and the Trainer, fire both transitions."""
    pl = pytest.importorskip("lightning.pytorch")  # the optional extra
    yaml = pytest.importorskip("yaml")

    cfg = yaml.safe_load(block(config))
    model = module_namespace()["Regressor"](**cfg["model"])
    pl.Trainer(**cfg["trainer"], default_root_dir=str(workdir)).fit(model)
    assert model.engine.curriculum.fingerprint() == code_curriculum().fingerprint()
    assert transitions(model.engine) == [("warm", "main", 6), ("main", "final", 8)]


@LIGHTNING_WARNINGS
def test_lightning_cli_runs_the_config(workdir):
    """LightningCLI itself parses the config and trains with the file's curriculum (needs jsonargparse)."""
    pytest.importorskip("lightning")
    pytest.importorskip("jsonargparse")
    from lightning.pytorch.cli import LightningCLI

    (workdir / "config.yaml").write_text(block("lightning-cli-inline-yaml"))
    cli = LightningCLI(
        module_namespace()["Regressor"],
        args=["fit", "--config", "config.yaml"],
        save_config_callback=None,
        trainer_defaults={"default_root_dir": str(workdir)},
    )
    assert cli.model.engine.curriculum.fingerprint() == code_curriculum().fingerprint()
    assert transitions(cli.model.engine) == [("warm", "main", 6), ("main", "final", 8)]


def test_the_hydra_config_value_loads(workdir):
    """Hydra's config as it reads it (a path, or the curriculum as a table) gives the file's curriculum."""
    yaml = pytest.importorskip("yaml")

    cfg = yaml.safe_load(block("hydra-yaml"))
    assert load_curriculum(cfg["curriculum"]).fingerprint() == code_curriculum().fingerprint()
    inline = yaml.safe_load(block("lightning-cli-inline-yaml"))["model"]["curriculum"]
    assert load_curriculum(inline, name="config.yaml: curriculum").fingerprint() == code_curriculum().fingerprint()


def test_hydra_composes_the_config_and_builds_the_engine(workdir):
    """With hydra-core: the composed config (a path, an override, or an inline DictConfig) builds the engine."""
    pytest.importorskip("hydra")
    from hydra import compose, initialize_config_dir

    namespace = {"__name__": "train_hydra"}
    exec(compile(block("hydra"), "curriculum-files.md", "exec"), namespace)
    (workdir / "config.yaml").write_text(block("hydra-yaml"))
    (workdir / "inline.yaml").write_text(
        block("lightning-cli-inline-yaml").replace("model:\n  curriculum:", "curriculum:").replace("\n  ", "\n")
    )
    with initialize_config_dir(config_dir=str(workdir), version_base=None):
        for name in ("config", "inline"):
            eng = namespace["build_engine"](compose(config_name=name))
            assert eng.curriculum.fingerprint() == code_curriculum().fingerprint(), name
    import torch

    from policies import Restartable

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    eng.bind(optimizer=optimizer, schedule=Restartable(torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)))
    eng.start()
    for _ in range(6):
        eng.step_end(loss=1.0)
    assert eng.phase.name == "main"


def _constant(step: int) -> float:
    return 1.0
