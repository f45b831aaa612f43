"""Encodings of topselect's artifacts, and the only ways topselect reads them back.

Artifacts are JSON, PNG, NPZ, CSV or safetensors files, each with a schema version:
a ``schema_version`` field in JSON, a ``topselect.schema_version`` text chunk in PNG, a
``schema_version`` array in NPZ, a ``schema_version`` column in CSV and a
``schema_version`` metadata entry in safetensors. Readers parse JSON with
:func:`json.loads` and NPZ with ``numpy.load(allow_pickle=False)``, so no artifact can run
code when it is read, and they never open a file of any other type.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from topselect.exceptions import InvalidInputError, TopselectError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from topselect.landscape import LandscapeResult

__all__ = [
    "ALLOWED_SUFFIXES",
    "SCHEMA_VERSION",
    "ArtifactError",
    "check_artifact_name",
    "csv_bytes",
    "diagram_from_json",
    "diagram_to_json",
    "png_bytes",
    "read_json_artifact",
    "read_npz_artifact",
]

#: Version of the MLflow layout and of every artifact topselect writes.
SCHEMA_VERSION = 1

#: File types topselect writes as artifacts.
ALLOWED_SUFFIXES = (".json", ".png", ".npz", ".csv", ".safetensors")

#: Key of the PNG text chunk that contains the schema version.
PNG_SCHEMA_KEY = "topselect.schema_version"


class ArtifactError(TopselectError):
    """An artifact is missing, corrupt, of a foreign format or of an unknown schema."""


def check_artifact_name(name: str) -> None:
    """Raise unless ``name`` is a relative file name with an allowed suffix.

    Raises:
        InvalidInputError: For a suffix outside :data:`ALLOWED_SUFFIXES`, an absolute
            path or a path that leaves the artifact folder.
    """
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InvalidInputError(
            f"artifact name must be a relative path inside the artifact folder, but got {name!r}."
        )
    if path.suffix.lower() not in ALLOWED_SUFFIXES:
        raise InvalidInputError(
            f"artifact {name!r} has the suffix {path.suffix!r}; topselect writes only "
            f"{', '.join(ALLOWED_SUFFIXES)} files, none of which runs code when read."
        )


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes with the schema version in a text chunk."""
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="png",
        dpi=dpi,
        bbox_inches="tight",
        metadata={PNG_SCHEMA_KEY: str(SCHEMA_VERSION)},
    )
    return buffer.getvalue()


def csv_bytes(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """Encode rows as CSV with a leading ``schema_version`` column; ``None`` is empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["schema_version", *columns])
    for row in rows:
        writer.writerow([SCHEMA_VERSION, *("" if value is None else value for value in row)])
    return buffer.getvalue().encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def read_json_artifact(path: str | Path, *, label: str, max_version: int = SCHEMA_VERSION):
    """Parse a topselect JSON artifact and check its schema version.

    Args:
        path: The downloaded file.
        label: How messages name the file (e.g. ``"run 3f2a... topselect/diagram.json"``).
        max_version: Newest ``schema_version`` this reader understands.

    Returns:
        The parsed document (a dict).

    Raises:
        ArtifactError: When the file is not standard JSON, is not an object, has no
            integer ``schema_version`` or a newer one than ``max_version``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = json.loads(text, parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{label} is not a readable JSON file: {error}") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{label} is not a JSON object but a {type(document).__name__}.")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(
            f"{label} has no integer schema_version (got {version!r}); it was not written by "
            "topselect."
        )
    if version > max_version:
        raise ArtifactError(
            f"{label} has schema_version {version}, newer than {max_version}; upgrade "
            "topselect to read it."
        )
    return document


def read_npz_artifact(
    path: str | Path, *, label: str, required: Sequence[str]
) -> dict[str, np.ndarray]:
    """Load an NPZ artifact without unpickling anything, and check its arrays.

    Arrays of ``object`` dtype need pickle to load; ``allow_pickle=False`` makes numpy
    raise for them, and the error is reported as a corrupt file.

    Raises:
        ArtifactError: When the file is not an NPZ archive, needs pickle, lacks an array
            of ``required`` or carries a newer ``schema_version``.
    """
    import zipfile

    import numpy as np

    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ArtifactError(f"{label} is a single .npy array, not an NPZ archive.")
            arrays = {name: np.array(archive[name]) for name in archive.files}
    except ArtifactError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{label} is not a readable NPZ archive: {error}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ArtifactError(
            f"{label} lacks the arrays {missing}; it contains {sorted(arrays)}. It was not "
            "written by topselect."
        )
    version = arrays.get("schema_version")
    if version is None or version.shape != () or int(version) > SCHEMA_VERSION:
        raise ArtifactError(
            f"{label} has schema_version {None if version is None else version.tolist()}, "
            f"but this reader understands scalar versions up to {SCHEMA_VERSION}."
        )
    return arrays


def _pairs(bars: np.ndarray) -> list[list[float | None]]:
    return [[float(b), float(d) if math.isfinite(d) else None] for b, d in bars]


def diagram_to_json(result: LandscapeResult) -> dict[str, Any]:
    """Encode a slice's persistence diagrams as standard JSON (``diagram.json``).

    Each diagram is a list of ``[birth, death]`` pairs in loss units. An infinite death
    (the essential H0 class) is written as ``null``, as ``"infinite_death"`` states, so
    the file contains only finite numbers.
    """
    d = result.diagrams
    return {
        "schema_version": SCHEMA_VERSION,
        "infinite_death": "null",
        "filtration": "sublevel, 8-connected grid (T-construction)",
        "h0": _pairs(d.h0),
        "h1": _pairs(d.h1),
        "n_nonfinite": d.n_nonfinite,
        "fill_value": d.fill_value,
        "value_range": list(d.value_range),
        "grid_size": len(result.axis),
        "radius": float(result.axis[-1]),
        "seed": result.seed,
        "probe_fingerprint": result.probe_fingerprint,
    }


def diagram_from_json(data: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Decode ``diagram.json`` back to ``{"h0": [...], "h1": [...]}`` with ``inf`` deaths.

    Raises:
        ArtifactError: When a diagram is not a list of ``[birth, death]`` pairs of
            numbers (``null`` allowed as a death only).
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for key in ("h0", "h1"):
        pairs = data.get(key, [])
        if not isinstance(pairs, list):
            raise ArtifactError(f"diagram {key!r} is a {type(pairs).__name__}, not a list.")
        bars = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and _is_number(pair[0])):
                raise ArtifactError(
                    f"diagram {key!r} contains {pair!r}, not a [birth, death] pair."
                )
            death = pair[1]
            if death is not None and not _is_number(death):
                raise ArtifactError(f"diagram {key!r} contains the invalid death {death!r}.")
            bars.append((float(pair[0]), math.inf if death is None else float(death)))
        out[key] = bars
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
