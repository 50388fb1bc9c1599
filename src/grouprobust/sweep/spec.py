"""Sweep files (YAML or TOML): what to run, read and checked up front.

A sweep file names datasets (with options), methods (with fixed values, grids and random draws of
hyper-parameters), seeds, the label regime and the selection rule::

    name: toy
    seed: 0                      # seeds the random hyper-parameter draws
    seeds: [0, 1, 2]             # or a count: seeds: 3
    regime: full
    select: val_worst_group_acc
    set: {epochs: 3}             # fixed for every method
    datasets:
      spurious-gaussian: {n: 400}
    methods:
      erm:
        grid: {lr: [0.001, 0.01]}
      groupdro:
        random: {count: 4, params: [lr, weight_decay]}
        expected: {worst_group_acc: 0.914, source: "paper, table (backbone)"}  # optional: shown by the report
    track: mlflow                # optional: mlflow, tensorboard or [mlflow, tensorboard]

Every problem is a `GroupRobustError` naming the file and the key, and saying how to fix it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grouprobust.errors import GroupRobustError
from grouprobust.output import missing_file, read_text
from grouprobust.sweep.expected import Expected, parse_expected
from grouprobust.tracking import parse_track

TOP_KEYS = ("name", "seed", "seeds", "regime", "select", "set", "datasets", "methods", "track")
METHOD_KEYS = ("set", "grid", "random", "expected")
RANDOM_KEYS = ("count", "params")


@dataclass(frozen=True)
class MethodSpec:
    """One method's part of a sweep: fixed values, a grid and random draws (``random_count`` of them)."""

    name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    random_count: int = 0
    random_params: list[str] | None = None
    expected: dict[str | None, Expected] = field(default_factory=dict)  # published results (sweep.expected)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file; `grouprobust.sweep.trials.expand` turns it into trials."""

    path: Path
    name: str
    datasets: dict[str, dict[str, Any]]
    methods: list[MethodSpec]
    seeds: list[int]
    fixed: dict[str, Any] = field(default_factory=dict)
    regime: str = "full"
    select: str | None = None
    sweep_seed: int = 0
    raw: dict[str, Any] = field(default_factory=dict)
    track: list[str] = field(default_factory=list)  # experiment trackers for every trial (grouprobust.tracking)

    def where(self, key: str) -> str:
        """``"<file>: <key>"``, the prefix of every error about ``key``."""
        return f"{self.path}: {key}"


def _fail(path: Path, key: str, problem: str) -> GroupRobustError:
    key = key if key.isprintable() else repr(key)  # a control character in a key would break the one line
    return GroupRobustError(f"{path}: {key}: {problem}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is written twice (line {seen[key]} and line {line})",
                        key_node.start_mark)
                seen[key] = line
            except TypeError:  # an unhashable key: construct_mapping names it
                continue
        return super().construct_mapping(node, deep)


def read_sweep_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a ``.yaml``/``.yml`` or ``.toml`` file; one-line errors for unreadable files, a
    file in another encoding than UTF-8, and a key written twice in one mapping."""
    path = Path(path)
    if not path.is_file():
        raise GroupRobustError(f"{missing_file(path, 'sweep file')}; pass the path of a .yaml or .toml sweep file")
    suffix = path.suffix.lower()
    text = read_text(path, "sweep file")
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise GroupRobustError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    elif suffix in (".yaml", ".yml"):
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader that refuses repeated keys
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or "syntax error"
            if "written twice" in problem:
                raise GroupRobustError(f"{path}: {problem}; keep one of them") from None
            raise GroupRobustError(f"{path}: not valid YAML ({problem}{where}); fix the syntax") from None
        except RecursionError:
            raise GroupRobustError(f"{path}: nests too deeply; a sweep file is a few levels of mappings") from None
    else:
        raise GroupRobustError(f"{path}: unknown sweep file type {suffix or '(none)'!r}; use .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise GroupRobustError(f"{path}: the file must hold a mapping with keys {', '.join(TOP_KEYS)}; see docs/sweeps.md")
    return data


def _mapping(path: Path, key: str, value: Any, allow_none: bool = True) -> dict[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a mapping of name: value, got {type(value).__name__}")
    return dict(value)


def _check_keys(path: Path, key: str, mapping: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        prefix = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise _fail(path, prefix, f"unknown key; allowed here: {', '.join(allowed)}")


def _int(path: Path, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _seeds(path: Path, value: Any) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(_int(path, "seeds", value, 1)))
    if isinstance(value, list) and value:
        seeds = [_int(path, f"seeds[{i}]", s, 0) for i, s in enumerate(value)]
        if len(set(seeds)) != len(seeds):
            raise _fail(path, "seeds", "lists a seed twice; list each seed once")
        return seeds
    raise _fail(path, "seeds", f"must be a count (seeds: 3) or a non-empty list (seeds: [0, 1, 2]), got {value!r}")


def _method(path: Path, name: str, body: Any, datasets: list[str]) -> MethodSpec:
    key = f"methods.{name}"
    body = _mapping(path, key, body)
    _check_keys(path, key, body, METHOD_KEYS)
    fixed = _mapping(path, f"{key}.set", body.get("set"))
    grid = _mapping(path, f"{key}.grid", body.get("grid"))
    for param, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"{key}.grid.{param}", f"must be a non-empty list of values, e.g. {param}: [0.001, 0.01]")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise _fail(path, f"{key}.grid.{both[0]}", "is also fixed under set; keep it in one place")
    count, params = 0, None
    if body.get("random") is not None:
        random = _mapping(path, f"{key}.random", body["random"], allow_none=False)
        _check_keys(path, f"{key}.random", random, RANDOM_KEYS)
        count = _int(path, f"{key}.random.count", random.get("count"), 1)
        if "params" in random:
            params = random["params"]
            if not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params):
                raise _fail(path, f"{key}.random.params", "must be a non-empty list of hyper-parameter names, "
                            "e.g. params: [lr, weight_decay]")
            clash = sorted(set(params) & (set(fixed) | set(grid)))
            if clash:
                raise _fail(path, f"{key}.random.params", f"{clash[0]!r} is also fixed or on the grid; draw it or fix it, not both")
    expected = parse_expected(path, f"{key}.expected", body.get("expected"), datasets)
    return MethodSpec(name, fixed, grid, count, params, expected)


def _track(path: Path, value: Any) -> list[str]:
    if value is not None and not isinstance(value, (str, list)):
        raise _fail(path, "track", f"must be a tracker name or a list of them (mlflow, tensorboard), got {value!r}")
    try:
        return parse_track(value)
    except GroupRobustError as err:
        raise _fail(path, "track", str(err)) from None


def parse_sweep(data: dict[str, Any], path: Path) -> SweepSpec:
    """Check the structure of a raw sweep mapping; returns the `SweepSpec` (names are checked by `expand`)."""
    path = Path(path)
    _check_keys(path, "", data, TOP_KEYS)
    datasets_raw = data.get("datasets")
    if isinstance(datasets_raw, list) and all(isinstance(d, str) for d in datasets_raw):
        datasets_raw = {d: None for d in datasets_raw}
    datasets = _mapping(path, "datasets", datasets_raw, allow_none=False) if datasets_raw is not None else {}
    if not datasets:
        raise _fail(path, "datasets", "missing or empty; name at least one, e.g. datasets: {spurious-gaussian: {n: 400}}")
    datasets = {str(name): _mapping(path, f"datasets.{name}", opts) for name, opts in datasets.items()}
    methods_raw = data.get("methods")
    if isinstance(methods_raw, list) and all(isinstance(m, str) for m in methods_raw):
        methods_raw = {m: None for m in methods_raw}
    if not methods_raw:
        raise _fail(path, "methods", "missing or empty; name at least one, e.g. methods: {erm: {grid: {lr: [0.001]}}}")
    methods_raw = _mapping(path, "methods", methods_raw, allow_none=False)
    methods = [_method(path, str(name), body, list(datasets)) for name, body in methods_raw.items()]
    for key in ("regime", "select", "name"):
        if key in data and not isinstance(data[key], str):
            raise _fail(path, key, f"must be a string, got {data[key]!r}")
    return SweepSpec(
        path=path,
        name=str(data.get("name", path.stem)),
        datasets=datasets,
        methods=methods,
        seeds=_seeds(path, data.get("seeds")),
        fixed=_mapping(path, "set", data.get("set")),
        regime=data.get("regime", "full"),
        select=data.get("select"),
        sweep_seed=_int(path, "seed", data.get("seed", 0), 0),
        raw=data,
        track=_track(path, data.get("track")),
    )


def load_sweep(path: Path) -> SweepSpec:
    """Read and structurally check the sweep file at ``path``."""
    return parse_sweep(read_sweep_file(path), Path(path))
