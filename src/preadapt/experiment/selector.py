"""Quantity selectors: one quantity of the tidy table with some context columns pinned, as a sweep
file's ``report.quantities`` names them (``acc_avg[adapter=mean,task_classes=2]``). The sweep
validates them; the sweep report (``preadapt.report.sweep``) selects rows with them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from preadapt.experiment.errors import ConfigError

SELECTOR_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(.*)\])?\s*$")
SELECTOR_CONTEXT = ("negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split", "bound", "status",
                    "term")
"""The context columns a selector may pin (the tidy table's, DESIGN.md section 3)."""
INTEGER_CONTEXT = ("negatives", "block_size", "task_classes", "top_r", "shots")
"""The context columns whose pinned values are whole numbers."""


@dataclass(frozen=True)
class Selector:
    """One quantity of the tidy table with some context columns pinned, written
    ``quantity[column=value,...]``; the context columns it leaves free may vary (one series each).

    >>> parse_selector("acc_avg[adapter=mean, task_classes=2]")
    Selector(quantity='acc_avg', context={'adapter': 'mean', 'task_classes': 2})
    >>> str(parse_selector("L_un"))
    'L_un'

    ``none`` pins a column to "not applicable" (``acc_avg[adapter=mean,shots=none]``: the exact
    AVG-k of the population means, not the few-shot mean classifier).
    """

    quantity: str
    context: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        pinned = ",".join(f"{key}={'none' if value is None else value}" for key, value in self.context.items())
        return f"{self.quantity}[{pinned}]" if pinned else self.quantity


def parse_selector(text: str) -> Selector:
    """Read ``quantity[column=value,...]``; raise ConfigError naming what is wrong."""
    match = SELECTOR_PATTERN.match(str(text))
    if match is None:
        raise ConfigError(f"report.quantities: got {text!r}; expected QUANTITY or QUANTITY[column=value,...], "
                          f"for example acc_avg[adapter=mean,task_classes=2]")
    quantity, inside = match.group(1), match.group(2)
    context: dict[str, Any] = {}
    for item in (inside.split(",") if inside and inside.strip() else []):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in SELECTOR_CONTEXT or not value:
            raise ConfigError(f"report.quantities: got {text!r}; each pin is column=value with column one of "
                              f"{', '.join(SELECTOR_CONTEXT)}")
        if value.lower() == "none":  # the column does not apply: e.g. acc_avg[adapter=mean,shots=none]
            context[key] = None
        elif key in INTEGER_CONTEXT:
            if not re.fullmatch(r"[0-9]+", value):
                raise ConfigError(f"report.quantities: got {text!r}; {key} must be a whole number")
            context[key] = int(value)
        else:
            context[key] = value
    return Selector(quantity, context)
