"""Regenerate the settings table of docs/configuration.md from the config model."""

from __future__ import annotations

import re
from pathlib import Path

from sipmesh.runtime.config import describe_settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def table() -> str:
    lines = ["| key | default | environment variable | meaning |", "|---|---|---|---|"]
    for key, default, env, description in describe_settings():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | {shown} | `{env}` | {description} |")
    return "\n".join(lines)


def main() -> None:
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(f"{BEGIN}\n{table()}\n{END}", text))


if __name__ == "__main__":
    main()
