"""The one typed configuration, read from params.yaml.

Every stage gets the `Config` object passed in; nothing reads params.yaml on its own.
Relative paths in the file are resolved against the folder the file is in, so the
same params work whichever folder a command is started from.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from visionloop.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


def _resolve_against_root(value: Path, info: ValidationInfo) -> Path:
    root = (info.context or {}).get("root")
    if root is None or value.is_absolute():
        return value
    return Path(root) / value


ProjectPath = Annotated[Path, AfterValidator(_resolve_against_root)]


class Section(BaseModel):
    """Base of every section: immutable, and a misspelt key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoConfig(Section):
    image_size: int = Field(32, ge=8, le=1024)
    drop_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 0


class DataConfig(Section):
    incoming_dir: ProjectPath = Path("data/incoming")
    raw_dir: ProjectPath = Path("data/raw")
    quarantine_dir: ProjectPath = Path("data/quarantine")
    demo: DemoConfig = DemoConfig()


class SplitConfig(Section):
    dir: ProjectPath = Path("data/splits")


class PrepareConfig(Section):
    dir: ProjectPath = Path("data/prepared")


class TrainConfig(Section):
    dir: ProjectPath = Path("models/candidate")
    seed: int = 0


class EvaluateConfig(Section):
    dir: ProjectPath = Path("reports/evaluate")


class GateConfig(Section):
    dir: ProjectPath = Path("reports/gate")


class RegistryConfig(Section):
    model_name: str = "visionloop-classifier"
    experiment: str = "visionloop"
    # A relative sqlite:/// path is relative to params.yaml's folder; MLFLOW_TRACKING_URI wins.
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: ProjectPath = Path("mlruns/artifacts")


class FlowsConfig(Section):
    prefect_home: ProjectPath = Path(".prefect")
    retrain_cron: str = "0 3 * * *"  # nightly; standard 5-field cron
    timezone: str = "UTC"
    watch_interval_seconds: int = Field(30, ge=1)  # how often the drop watcher looks
    settle_seconds: float = Field(60, ge=0)  # a drop quiet this long (or marked READY) is whole
    lock_file: ProjectPath = Path(".visionloop/retrain.lock")
    stage_timeout_seconds: int = Field(6 * 3600, ge=1)
    server_port: int = Field(4200, ge=1024, le=65535)  # local `prefect server` of flows serve
    push_after_retrain: bool = True  # `dvc push` once a retraining is recorded
    notify_block: str = ""  # a Prefect notification block ("slack-webhook/ops"); "" = none


class Config(Section):
    root: Path = Field(Path("."), exclude=True)
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    flows: FlowsConfig = FlowsConfig()


def load_config(
    path: str | Path = DEFAULT_PARAMS, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read and validate params.yaml; `overrides` is a nested dict merged on top (for tests)."""
    path = Path(path)
    raw = _read_yaml(path)
    if overrides:
        raw = _deep_merge(raw, overrides)
    root = path.resolve().parent
    try:
        return Config.model_validate({**raw, "root": root}, context={"root": root})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; run from the project folder or pass --params PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if "root" in raw:
        raise ConfigError(f"{path}: root: unknown key (paths are relative to this file's folder)")
    return raw


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError) -> str:
    """All problems on one line: `key.path: problem` joined by '; '."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(err["loc"][:-1]))
            parts.append(f"{key}: unknown key (allowed here: {allowed})")
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _allowed_keys(section_loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in section_loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name, field in model.model_fields.items() if not field.exclude]
