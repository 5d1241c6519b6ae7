"""Configuration: load a YAML config, validate it against the schema (filling defaults), merge study files.

Every key is named in ``config.schema.yaml`` beside this module. The typed objects each stage works with are
defined in that stage (``data.config``, ``training.params``, ``segsweep.study``); this module only checks and
completes the dict they are built from.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from segsweep.errors import ConfigError
from segsweep.training.params import CellParams

# libyaml's loader where PyYAML has it (its wheels do): the same documents as yaml.safe_load, read ~10× faster;
# planning reads the schema and every study file in each Snakemake invocation (each Slurm job step too)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str):
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


# --------------------------------------------------------------------------------------------- schema
# Where the schema lists a registry's names, they are filled in here at load, so each name is written once (at
# its registration). The schema file leaves out these enums; a path that no longer leads to a key stops the
# load (checked by construction). The names of plan-level registries (study `mode`, `sampler`, `pruner.name`)
# are not in the schema at all: their registries are defined on top of this module, and their lookups at plan
# time name the key and the known names (`Registry.entry`).
def _registry_enums() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    from segsweep.data.layouts import LAYOUTS
    from segsweep.training.finetune_modes import FINETUNE_MODES
    from segsweep.training.losses import LOSSES
    from segsweep.training.model import MODELS
    from segsweep.training.optim import OPTIMIZERS
    from segsweep.training.regularizers import REGULARIZERS
    from segsweep.training.schedules import SCHEDULES

    cell = ("definitions", "cell", "properties")
    paths = {
        ("definitions", "schedule", "oneOf", 0): SCHEDULES,
        ("definitions", "schedule", "oneOf", 1, "properties", "name"): SCHEDULES,
        ("definitions", "loss_term", "properties", "name"): LOSSES,
        (*cell, "optimizer"): OPTIMIZERS,
        (*cell, "regularizer"): REGULARIZERS,
        (*cell, "model"): MODELS,
        (*cell, "finetune"): FINETUNE_MODES,
    }
    data = ("properties", "data", "properties")
    return (
        *((path, reg.names()) for path, reg in paths.items()),
        ((*data, "source"), ("phantom", *LAYOUTS.names())),  # the phantom, or a real tree in a layout
        ((*data, "phantom", "properties", "layout"), LAYOUTS.names()),
    )


@lru_cache(maxsize=1)
def _schema_file() -> dict:
    text = resources.files("segsweep.plan").joinpath("config.schema.yaml").read_text()
    return load_yaml(text)


def schema() -> dict:
    """The config schema with each registry's names as the enum of its key (a variant registered later, e.g.
    in a test, is in the next call's schema), the data layouts' own keys under `data` (`_layout_option_keys`),
    `train.default`, every cell key's default, from `segsweep.training.params.cell_config_defaults`, and the
    schema of each key declared with `segsweep.training.params.cell_key` (each written once, there). Shared: do
    not modify."""
    from segsweep.training.params import cell_config_defaults, cell_key_schemas

    return _schema_with(
        _registry_enums(),
        json.dumps(cell_config_defaults()),
        json.dumps(cell_key_schemas()),
        _layout_option_keys(),
    )


def _layout_option_keys() -> str:
    """The keys data layouts declare (``LayoutOption``) as JSON [[name, schema], ...]: each becomes a key of
    `data` (and so of each `datasets` entry, a `$ref` to it), with its default named in its description but
    not filled in, so that a key given for a layout that does not read it can be told apart (and refused)."""
    from segsweep.data.layouts import base

    keys = []
    for name, (_, opt) in sorted(base.options().items()):
        default = json.dumps(opt.default, default=list)
        keys.append([name, {**opt.schema, "description": f"{opt.schema.get('description', '')} Default: {default}."}])
    return json.dumps(keys)


@lru_cache(maxsize=8)
def _schema_with(
    enums: tuple, cell_defaults_json: str, cell_keys_json: str = "{}", layout_keys_json: str = "[]"
) -> dict:
    out = copy.deepcopy(_schema_file())
    for path, names in enums:
        node = out
        for part in path:
            node = node[part]  # KeyError: the schema moved a key this table fills (fix the table above)
        if "enum" in node:
            raise ValueError(f"config.schema.yaml lists the enum at {path} that the registry fills: remove it")
        node["enum"] = list(names)
    data = out["properties"]["data"]["properties"]
    for name, key_schema in json.loads(layout_keys_json):
        if name in data:
            raise ValueError(f"config.schema.yaml lists data.{name}, which a data layout declares: remove it")
        data[name] = key_schema
    train, cell = out["properties"]["train"], out["definitions"]["cell"]["properties"]
    if "default" in train:
        raise ValueError("config.schema.yaml lists train.default, which CellParams' defaults fill: remove it")
    train["default"] = json.loads(cell_defaults_json)
    for name, node in json.loads(cell_keys_json).items():
        import jsonschema  # as in _validator: only where a key is generated

        if name in cell:
            raise ValueError(
                f"config.schema.yaml declares the cell key {name}, which CellParams.{name} declares: remove it"
            )
        if not jsonschema.Draft202012Validator(node).is_valid(train["default"][name]):
            raise ValueError(
                f"CellParams.{name}: its default {train['default'][name]!r} is outside its own schema {node}"
            )
        cell[name] = node
    # a field without a schema entry (or a schema key without a field / default) stops every load, naming it
    if set(train["default"]) - set(cell):
        raise ValueError(
            f"CellParams field(s) without a schema: {sorted(set(train['default']) - set(cell))}: declare the key "
            "with segsweep.training.params.cell_key, or write it under definitions.cell in config.schema.yaml"
        )
    if set(cell) - set(train["default"]):
        raise ValueError(
            f"config.schema.yaml's cell key(s) {sorted(set(cell) - set(train['default']))} have no default in "
            "segsweep.training.params.cell_config_defaults (a CellParams field, or CONFIG_DEFAULTS)"
        )
    return out


_SCALARS = {"boolean": (bool,), "integer": (int,), "number": (int, float), "null": (type(None),)}


def coerce_cli_scalars(value, node: Mapping | None = None, root: Mapping | None = None):
    """Snakemake reads a nested ``--config key='{a: true, n: 8}'`` with YAML's BaseLoader, so every scalar in it
    is a string (``'true'``, ``'8'``) and the schema would refuse it. Where the schema wants a boolean, a
    number or null (and not a string) and the value is a string that YAML reads as one, take that reading.
    Mappings are changed in place; returns the value."""
    root = schema() if root is None else root
    node = root if node is None else node
    while "$ref" in node:  # a JSON pointer into the schema: '#/definitions/<name>', '#/properties/data', ...
        target = root
        for part in node["$ref"].lstrip("#").strip("/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    alternatives = node.get("oneOf") or node.get("anyOf")
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                value[k] = coerce_cli_scalars(v, sub, root)
        return value
    if isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [coerce_cli_scalars(v, node["items"], root) for v in value]
    if not isinstance(value, str):
        return value
    types = node.get("type") or [t for alt in alternatives or () for t in _types(alt)]
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types or not any(t in _SCALARS for t in types):
        return value
    try:
        parsed = load_yaml(value)
    except yaml.YAMLError:
        return value
    ok = any(
        isinstance(parsed, _SCALARS[t]) and not (t != "boolean" and isinstance(parsed, bool))
        for t in types
        if t in _SCALARS
    )
    return parsed if ok else value


def _types(node: Mapping) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def cell_defaults() -> dict:
    return copy.deepcopy(schema()["properties"]["train"]["default"])


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_props(validator, properties, instance, sch)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(cfg: dict) -> dict:
    """Validate in place (filling defaults); raise ConfigError with one line per problem (at most 10), each
    naming the key, e.g. ``config key 'train.depht': unknown key (closest known: depth)``."""
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            best = err
            if err.context:  # oneOf: report the branch that got furthest
                best = max(err.context, key=lambda e: len(e.absolute_path))
            lines.extend(_error_lines(best))
        lines = list(dict.fromkeys(lines))
        raise ConfigError(lines[0] if len(lines) == 1 else "invalid configuration:\n  " + "\n  ".join(lines))
    return cfg


def _error_lines(err) -> list[str]:
    """One line per problem of a jsonschema error. An unknown key (a typo) names the key and the closest
    keys the schema knows at that place (difflib ratio >= 0.6), instead of jsonschema's dump of the schema."""
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        known = list((err.schema or {}).get("properties") or {})
        lines = []
        for key in (k for k in err.instance if k not in known):
            close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
            hint = f"closest known: {', '.join(close)}" if close else f"known: {', '.join(known)}"
            lines.append(f"config key '{_where([*err.absolute_path, key])}': unknown key ({hint})")
        if lines:
            return lines
    return [f"config key '{_where(err.absolute_path)}': {err.message}"]


def load_config(path: str | Path, overrides: Mapping | None = None) -> dict:
    """Read a YAML config (plus its `study_files`), apply overrides, validate, fill defaults."""
    path = Path(path)
    try:
        cfg = load_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return prepare(cfg, base_dir=path.parent.parent if path.parent.name == "config" else path.parent)


def prepare(cfg: dict, base_dir: str | Path = ".") -> dict:
    """Merge study files into `studies` (and their `datasets`), validate, and fill every default (idempotent)."""
    cfg = copy.deepcopy(dict(cfg))
    for rel in cfg.get("study_files", []) or []:
        sp = Path(rel) if Path(rel).is_absolute() else Path(base_dir) / rel
        try:
            extra = load_yaml(sp.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config key 'study_files': file not found: {sp}") from None
        if not isinstance(extra, dict) or not isinstance(extra.get("studies"), dict):
            raise ConfigError(f"study file {sp} must hold a mapping 'studies: {{name: study}}'")
        for name, study in extra["studies"].items():
            cfg.setdefault("studies", {}).setdefault(name, study)
        # the data sets its studies name (`data: <name>`) may come with them; the config's own entries win
        if not isinstance(extra.get("datasets") or {}, dict):
            raise ConfigError(f"study file {sp}: 'datasets' must be a mapping {{name: data block}}")
        for name, block in (extra.get("datasets") or {}).items():
            cfg.setdefault("datasets", {}).setdefault(name, block)
    cfg["study_files"] = []
    validate(cfg)
    cfg["train"] = deep_merge(cell_defaults(), cfg.get("train") or {})
    if cfg["scale"] != "full" and cfg["scale"] not in cfg["scales"]:
        raise ConfigError(
            f"config key 'scale': unknown preset '{cfg['scale']}' (known: full, {', '.join(cfg['scales'])})"
        )
    if cfg["select"]:
        unknown = [s for s in cfg["select"] if s not in cfg["studies"]]
        if unknown:
            raise ConfigError(
                f"config key 'select': unknown stud{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"(declared: {', '.join(cfg['studies'])})"
            )
        cfg["studies"] = {k: v for k, v in cfg["studies"].items() if k in cfg["select"]}
    if not cfg["studies"]:
        raise ConfigError("config key 'studies': no study is declared")
    return cfg


def scale_preset(cfg: Mapping) -> Mapping:
    """The ``scales`` preset that config key ``scale`` names ({} at ``full``; `prepare` rejected unknown names):
    its ``cell`` keys override every study's cells, its ``size`` the preprocessing's image size."""
    return cfg["scales"].get(cfg["scale"], {}) if cfg["scale"] != "full" else {}


DEMO_REPORT_NAME = "report"  # reports/report.{html,pdf}: the demo's, as the README promises


def report_name(cfg: Mapping, configfiles: Sequence[str | Path] = ()) -> str:
    """The report's file name (reports/<name>.html, .pdf): ``report.name``, else the last ``--configfile``'s
    name without its suffix, so that two configs run in one folder keep their own reports. The demo (no
    config file given) and a file called ``config.yaml`` (Snakemake's conventional name) give ``report``."""
    name = (cfg.get("report") or {}).get("name")
    if name:
        return str(name)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(configfiles[-1]).stem) if configfiles else ""
    return DEMO_REPORT_NAME if stem in ("", "config") else stem


def deep_merge(a: Mapping, b: Mapping) -> dict:
    out = copy.deepcopy(dict(a))
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def cell_params(overrides: Mapping | None = None) -> CellParams:
    """``CellParams`` of the schema's training defaults updated by ``overrides`` (tests, benchmarks)."""
    return CellParams.from_config(deep_merge(cell_defaults(), overrides or {}))
