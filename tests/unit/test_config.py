from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_PARAMS, run_cli
from visionloop.config import Config, load_config
from visionloop.errors import ConfigError


def write_params(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def repo_params_dict() -> dict:
    return yaml.safe_load(REPO_PARAMS.read_text())


def test_repo_params_load_and_resolve_paths_against_the_file():
    config = load_config(REPO_PARAMS)
    assert isinstance(config, Config)
    assert config.data.incoming_dir == REPO_PARAMS.parent / "data" / "incoming"
    assert config.data.demo.image_size == 32


def test_every_section_of_the_schema_is_present_in_the_repo_params():
    sections = {name for name, field in Config.model_fields.items() if not field.exclude}
    assert sections == set(repo_params_dict())


def test_config_is_frozen():
    config = load_config(REPO_PARAMS)
    with pytest.raises(Exception, match="frozen"):
        config.data.demo.image_size = 64  # type: ignore[misc]


def test_unknown_key_is_rejected_with_its_path_and_the_allowed_keys(tmp_path):
    params = repo_params_dict()
    params["data"]["demo"]["imag_size"] = 64
    with pytest.raises(ConfigError) as info:
        load_config(write_params(tmp_path, params))
    message = str(info.value)
    assert "params.yaml" in message
    assert "data.demo.imag_size: unknown key" in message
    assert "image_size" in message  # the allowed keys are listed
    assert "\n" not in message


def test_unknown_section_is_rejected(tmp_path):
    params = repo_params_dict() | {"trian": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_config(write_params(tmp_path, params))


def test_wrong_type_is_rejected_with_the_key_and_the_value(tmp_path):
    params = repo_params_dict()
    params["data"]["demo"]["image_size"] = "big"
    with pytest.raises(ConfigError, match=r"data\.demo\.image_size: .*integer.*'big'"):
        load_config(write_params(tmp_path, params))


def test_out_of_range_value_is_rejected(tmp_path):
    params = repo_params_dict()
    params["data"]["demo"]["image_size"] = 2
    with pytest.raises(ConfigError, match=r"data\.demo\.image_size: .*greater than or equal to 8"):
        load_config(write_params(tmp_path, params))


@pytest.mark.parametrize(
    "text, problem",
    [("data: [unclosed", "not valid YAML at line 1"), ("- a\n- b\n", "expected a mapping")],
)
def test_unparsable_files_name_the_problem(tmp_path, text, problem):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="file not found; run from the project folder"):
        load_config(tmp_path / "params.yaml")


def test_overrides_merge_into_the_file_without_losing_siblings():
    config = load_config(REPO_PARAMS, overrides={"data": {"demo": {"image_size": 16}}})
    assert config.data.demo.image_size == 16
    assert config.data.demo.drop_fractions == (0.8, 0.1, 0.1)


def test_cli_reports_a_bad_params_file_in_one_line_with_exit_code_2(tmp_path):
    params = repo_params_dict()
    params["data"]["demo"]["seed"] = "zero"
    path = write_params(tmp_path, params)
    result = run_cli("--params", str(path), "data", "demo", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "data.demo.seed" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
