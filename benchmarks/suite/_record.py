"""Loading and checking stored benchmark records, with one error message per defect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RecordError", "check_header_fields", "describe_render_error", "load_record"]

# Fields that the Markdown header reads from a suite benchmark's record, as dotted paths.
# Each step of a path must be a JSON object. The numbers are formatted with a fixed
# number of decimals, and of each load average only the first (1-minute) value is shown.
_HEADER_FIELDS = (
    "command",
    "seed",
    "environment.machine.cpu",
    "environment.machine.usable_cores",
    "environment.machine.logical_cores",
    "environment.machine.memory_gib",
    "environment.machine.platform",
    "environment.machine.python",
    "environment.machine.torch_threads",
    "environment.packages.torch",
    "environment.packages.optuna",
    "environment.packages.numpy",
    "environment.packages.scipy",
    "environment.git.commit",
    "environment.git.dirty",
    "environment.timing.started_utc",
)
_NUMBER_FIELDS = ("environment.timing.wall_seconds",)
_LOAD_AVERAGE_FIELDS = (
    "environment.timing.load_average_start",
    "environment.timing.load_average_end",
)
_SIZES = ("quick", "full")


class RecordError(ValueError):
    """A benchmark record that cannot be read or lacks a field that rendering needs."""


def load_record(path: Path) -> dict[str, Any]:
    """Read the JSON record at ``path`` and check its ``benchmark`` and ``size`` fields.

    Raises:
        RecordError: When the file cannot be read, is not valid JSON, is not a JSON
            object, or its ``benchmark`` or ``size`` field is missing or invalid.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecordError("file not found") from None
    except IsADirectoryError:
        raise RecordError("is a directory, not a JSON record") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(f"cannot be read: {_reason(error)}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, but got {_json_type(record)}")
    benchmark = _field(record, "benchmark")
    if not isinstance(benchmark, str):
        raise RecordError(f"field 'benchmark' must be a string, but got {benchmark!r}")
    size = _field(record, "size")
    if size not in _SIZES:
        raise RecordError(f"field 'size' must be 'quick' or 'full', but got {size!r}")
    _field(record, "result")
    return record


def check_header_fields(record: dict[str, Any]) -> None:
    """Check that ``record`` has every field the Markdown header of a suite benchmark reads.

    Raises:
        RecordError: Naming the first missing field or the first field of the wrong type.
    """
    for dotted in _HEADER_FIELDS:
        _field(record, dotted)
    for dotted in _NUMBER_FIELDS:
        value = _field(record, dotted)
        if not _is_number(value):
            raise RecordError(f"field '{dotted}' must be a number, but got {value!r}")
    for dotted in _LOAD_AVERAGE_FIELDS:
        value = _field(record, dotted)
        if not (isinstance(value, list) and value and _is_number(value[0])):
            raise RecordError(
                f"field '{dotted}' must be a non-empty list of numbers, but got {value!r}"
            )


def describe_render_error(error: Exception) -> str:
    """Describe an error raised while rendering a record's ``result`` as a field problem."""
    if isinstance(error, KeyError) and error.args:
        return f"missing field {error.args[0]!r} in 'result'"
    return f"unexpected content in 'result' ({type(error).__name__}: {error})"


def _field(record: dict[str, Any], dotted: str) -> Any:
    """Return the value at the dotted path ``dotted`` of ``record``."""
    value: Any = record
    walked: list[str] = []
    for key in dotted.split("."):
        if not isinstance(value, dict):
            parent = ".".join(walked)
            raise RecordError(
                f"field '{parent}' must be a JSON object, but got {_json_type(value)}"
            )
        if key not in value:
            raise RecordError(f"missing field '{dotted}'")
        value = value[key]
        walked.append(key)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
