"""Named, commented configs shipped with preadapt (``preadapt presets`` lists them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from preadapt.experiment.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file() and (PRESET_DIR / "sweeps" / f"{name}.yaml").is_file():
        raise ConfigError(f"--preset: {name!r} is a sweep preset; run it with: preadapt sweep --preset {name}")
    if not path.is_file():
        raise ConfigError(f"--preset: got {name!r}; allowed: {', '.join(preset_names())}")
    return path


def preset_data(name: str) -> dict[str, Any]:
    return yaml.safe_load(preset_path(name).read_text()) or {}


def first_comment(path: Path) -> str:
    """A preset's one-line description: the first comment line of its file."""
    first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
    return first.lstrip("# ").strip()


def preset_descriptions() -> dict[str, str]:
    """Each preset's one-line description."""
    return {name: first_comment(PRESET_DIR / f"{name}.yaml") for name in preset_names()}
