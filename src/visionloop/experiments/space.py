"""The search space of `tune.space`: sampling a trial's params, applying them to a Config,
and the best params as a params.yaml patch (a diff; written into the file only on request).

Keys are dotted params keys (`train.lr`); each has a range (low, high, log, step, integer)
or choices. Their names were checked against the typed config when params.yaml was read.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from visionloop.atomic import write_text_atomic
from visionloop.config import Config, SpaceParam, deep_merge
from visionloop.errors import ConfigError


def require_space(config: Config) -> dict[str, SpaceParam]:
    if not config.tune.space:
        raise ConfigError(
            "tune.space is empty: declare what to search in params.yaml, e.g. "
            "`train.lr: {low: 0.0003, high: 0.01, log: true}` (docs/experiments.md)"
        )
    return dict(config.tune.space)


def space_fingerprint(space: dict[str, SpaceParam]) -> str:
    """The space as canonical JSON: a study is only continued over the same space."""
    return json.dumps(
        {key: param.model_dump(mode="json") for key, param in sorted(space.items())},
        sort_keys=True,
    )


def suggest(trial, space: dict[str, SpaceParam]) -> dict[str, Any]:
    """One value per key, drawn by the study's sampler."""
    values = {}
    for key, param in space.items():
        if param.choices is not None:
            values[key] = trial.suggest_categorical(key, list(param.choices))
        elif param.integer:
            step = int(param.step or 1)
            values[key] = trial.suggest_int(
                key, int(param.low), int(param.high), step=step, log=param.log
            )
        else:
            values[key] = trial.suggest_float(
                key, param.low, param.high, step=param.step, log=param.log
            )
    return values


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"train.lr": 0.01} -> {"train": {"lr": 0.01}}."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *sections, leaf = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return tree


def with_values(config: Config, values: dict[str, Any], extra: dict[str, Any]) -> Config:
    """The config with a trial's values (and `extra` overrides) on top, validated again."""
    raw = config.model_dump(mode="json")
    merged = deep_merge(deep_merge(raw, nested(values)), extra)
    try:
        return Config.model_validate({**merged, "root": config.root}, context={"root": config.root})
    except ValueError as exc:
        raise ConfigError(f"tune.space: these values do not make a valid config: {exc}") from None


# ---- the params.yaml patch --------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:][^:#]*?):(?P<rest>.*)$")


def patched_text(text: str, values: dict[str, Any]) -> str:
    """params.yaml's text with each dotted key's value replaced in place (its comment and
    every other line kept); a key the file does not have is added under its section."""
    lines = text.splitlines(keepends=True)
    for key, value in values.items():
        lines = _set_value(lines, key.split("."), _scalar(value))
    return "".join(lines)


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _set_value(lines: list[str], path: list[str], value: str) -> list[str]:
    stack: list[tuple[int, str]] = []  # (indent, key) of the sections we are in
    last_in_section = None
    for number, line in enumerate(lines):
        match = _KEY_LINE.match(line.rstrip("\n"))
        if not match:
            continue
        indent, key = len(match["indent"]), match["key"].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        here = [k for _, k in stack] + [key]
        if here == path:
            lines[number] = _replace_value(line, match, value)
            return lines
        if here[: len(path) - 1] == path[:-1] and len(here) >= len(path) - 1:
            last_in_section = number
        stack.append((indent, key))
    return _insert(lines, path, value, last_in_section)


def _replace_value(line: str, match: re.Match, value: str) -> str:
    """The value swapped; a trailing comment stays, at its column when the value fits."""
    body, hash_, comment = match["rest"].partition(" #")
    head = f"{match['indent']}{match['key']}: {value}"
    if not hash_:
        return head + _newline(line)
    column = len(match["indent"]) + len(match["key"]) + 1 + len(body)
    return f"{head.ljust(column)} #{comment}" + _newline(line)


def _newline(line: str) -> str:
    return "\n" if line.endswith("\n") else ""


def _insert(lines: list[str], path: list[str], value: str, after: int | None) -> list[str]:
    if after is None:  # the section itself is missing: append it whole
        block = yaml.safe_dump(nested({".".join(path): yaml.safe_load(value)}), sort_keys=False)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return [*lines, block]
    indent = "  " * (len(path) - 1)
    return [*lines[: after + 1], f"{indent}{path[-1]}: {value}\n", *lines[after + 1 :]]


def params_diff(path: Path, values: dict[str, Any]) -> tuple[str, str]:
    """(the patched text, a unified diff of it against the file)."""
    text = path.read_text(encoding="utf-8")
    patched = patched_text(text, values)
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        patched.splitlines(keepends=True),
        fromfile=f"{path.name}",
        tofile=f"{path.name} (best trial)",
    )
    return patched, "".join(diff)


def apply_patch(path: Path, patched: str) -> None:
    write_text_atomic(path, patched)
