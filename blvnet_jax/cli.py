"""The flags parser of our programs: `app.run(main, flags_parser=cli.parse_flags)`.

A config file that does not exist, a `--config.*` override naming no field of the config or
giving a value of the wrong type, or a flag that does not parse, ends the program with one line
saying what was wrong and what to do, where ml_collections would end it with a traceback (and absl
with two lines). Light on purpose (the standard library, absl and ml_collections): `main.py`
imports it before jax.
"""
import difflib
import importlib.util
import os
import re

import ml_collections
from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but the config mistakes above, a value of the wrong type and an unknown flag exit
    with status 1 and one line."""
    path = config_file(argv)
    missing = path is not None and missing_file(path.split(":", 1)[0])  # FILE:ARGUMENT: get_config(ARGUMENT)
    if missing:
        raise SystemExit(f"Config error: --config={path}: {missing}")
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # a value that does not parse, an unknown or missing flag
        raise SystemExit(f"Flag error: {wrong_type(error, path) or error} (--helpfull lists the flags)") from None
    except (AttributeError, KeyError, TypeError):  # what ml_collections raises for a path it cannot follow
        wrong = unknown_override(argv, path)
        if wrong is None:
            raise
        raise SystemExit(f"Config error: {wrong}") from None


def wrong_type(error: Exception, path: str | None) -> str | None:
    """'--config.model.num_frames=abc: config.model.num_frames is of type int (...)' when `error` is about a
    `--config.*` value of the wrong type; None otherwise."""
    match = re.match(r"flag (--config\.([\w.]+)=\S*): (.*)", str(error))
    if path is None or match is None:
        return None
    value = load_config(path)
    if missing_field(value, match[2]):
        return None
    for field in match[2].split("."):
        value = value[field]
    return f"{match[1]}: config.{match[2]} is of type {type(value).__name__} ({match[3]})"


def config_file(argv: list[str]) -> str | None:
    """The value of `--config=FILE` (or `--config FILE`) in `argv`; None if it is not there."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def missing_file(path: str) -> str | None:
    """Why there is no file `path`, with the closest file name of its folder if one is close; None if there is."""
    if os.path.isfile(path):
        return None
    folder = os.path.dirname(path) or "."
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    close = difflib.get_close_matches(os.path.basename(path), names, 1, 0.75)
    if close:
        return f"no such file; did you mean {os.path.join(os.path.dirname(path), close[0])}?"
    return f"no such file (a relative path starts from {os.getcwd()})"


def unknown_override(argv: list[str], path: str | None) -> str | None:
    """'--config.model.nme=tsn: config.model has no field 'nme'; did you mean 'name'?' for the first
    override in `argv` that names no field of the config file `path` (read again); None if none."""
    overrides = [(arg, match[1]) for arg in argv[1:] if (match := re.match(r"--config\.([\w.]+)(=|$)", arg))]
    if path is None or not overrides:
        return None
    config = load_config(path)
    for arg, field_path in overrides:
        problem = missing_field(config, field_path)
        if problem:
            return f"{arg}: {problem}"
    return None


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of the file `path` (`FILE:ARGUMENT`: `get_config(ARGUMENT)`), as `--config` loads it."""
    file, *argument = path.split(":", 1)
    spec = importlib.util.spec_from_file_location("config_file", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*argument)


def missing_field(config: ml_collections.ConfigDict, field_path: str) -> str | None:
    """Why `config` has no field `field_path` ('model.name'), naming the closest field or, if none is
    close, all of them; None if it has it."""
    node, where = config, "config"
    for field in field_path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return f"{where} is a {type(node).__name__} ({node!r}), not a group of fields: it has no field {field!r}"
        if field not in node:
            fields = sorted(node.keys())
            close = difflib.get_close_matches(field, fields, 1, 0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"its fields are {', '.join(fields)}"
            return f"{where} has no field {field!r}; {hint}"
        node, where = node[field], f"{where}.{field}"
    return None
