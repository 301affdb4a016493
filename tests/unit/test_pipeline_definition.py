"""dvc.yaml and the library's stage registry must not drift apart."""

from pathlib import Path

import yaml
from pydantic import BaseModel

from tests.helpers import REPO_PARAMS, REPO_ROOT
from visionloop.config import load_config
from visionloop.pipeline.stages import STAGES

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def declared_paths(stage: dict) -> list[str]:
    paths = list(stage.get("deps", []))
    for kind in ("outs", "metrics", "plots"):
        paths += [next(iter(e)) if isinstance(e, dict) else e for e in stage.get(kind, [])]
    return paths


def test_dvc_yaml_has_exactly_the_registered_stages_in_order():
    assert list(DVC_YAML) == list(STAGES)


def test_every_command_calls_its_stage_through_the_cli():
    for name, stage in DVC_YAML.items():
        assert stage["cmd"] == f"visionloop stage {name}"


def test_params_are_exactly_what_each_stage_reads():
    for name, stage in DVC_YAML.items():
        assert stage.get("params", []) == list(STAGES[name].params), name


def test_params_named_in_dvc_yaml_exist_in_params_yaml():
    params = yaml.safe_load(REPO_PARAMS.read_text())
    for stage in STAGES.values():
        for key in stage.params:
            node = params
            for part in key.split("."):
                assert part in node, f"{stage.name}: {key} is not in params.yaml"
                node = node[part]


def configured_paths(section: BaseModel) -> list[Path]:
    """Every path in the config, at any depth (raw_dir, split.dir, validation.report_dir...)."""
    found = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, Path):
            found.append(value)
        elif isinstance(value, BaseModel):
            found += configured_paths(value)
    return found


def test_data_paths_live_under_the_folders_params_yaml_configures():
    config = load_config(REPO_PARAMS)
    paths = [p for p in configured_paths(config) if p != REPO_ROOT and p.is_relative_to(REPO_ROOT)]
    roots = [str(p.relative_to(REPO_ROOT)) for p in paths]
    for name, stage in DVC_YAML.items():
        for path in declared_paths(stage):
            if path.startswith("src/"):
                assert (REPO_ROOT / path).is_file(), f"{name}: {path} does not exist"
            else:
                assert any(path == r or path.startswith(r + "/") for r in roots), (name, path)


def test_the_split_keeps_its_previous_assignments_across_reruns():
    outs = {next(iter(e)): e[next(iter(e))] for e in DVC_YAML["split"]["outs"]}
    assert outs["data/splits/split.csv"]["persist"] is True
    assert outs["data/splits/state.json"]["persist"] is True


def test_each_stage_depends_on_its_own_module():
    for name, stage in DVC_YAML.items():
        module = "src/" + STAGES[name].module.replace(".", "/") + ".py"
        assert module in stage["deps"], name
        assert (REPO_ROOT / module).is_file(), module
