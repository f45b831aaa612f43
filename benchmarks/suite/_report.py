"""Writing benchmark results: one JSON file per run and one marked Markdown section."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "replace_section", "section_markers", "write_json"]


def jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples and non-finite floats to plain JSON values.

    NaN and infinities become ``None``, because JSON has no literal for them.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"{type(value).__name__} value {value!r} has no JSON form.")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    return path


def section_markers(name: str) -> tuple[str, str]:
    """Return the opening and closing HTML comments around benchmark ``name``'s section."""
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of ``name`` in the Markdown file ``path``.

    An existing section with the same markers is replaced in place, so a rerun replaces
    its own section and nothing else. Without one, the section is appended at the end
    of the file. A missing file is created.
    """
    opening, closing = section_markers(name)
    section = f"{opening}\n{body.strip()}\n{closing}"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(opening) + r".*?" + re.escape(closing), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
