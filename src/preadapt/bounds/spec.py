"""Parameters of the theorems' checks (the ``bounds`` section of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BoundsConfig(BaseModel):
    """How Theorems 4.1 and 4.5 of [Arora19] are evaluated (docs/config.md, docs/theory.md).

    Gen_M = rademacher_constant·4√3·L·R·Rad_S(F)/M + confidence_constant·2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M),
    with L the Lipschitz constant of ℓ and Δ_ℓ(R) its range on margins in [−2R², 2R²]
    (``bounds.rademacher.generalisation_term``). The constants of THEORY.md's O(·) are derived there
    (docs/theory.md, "Gen_M with explicit constants"); the two fields multiply the derived terms, and
    their default 1 gives the rigorous upper bound.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    comparator: Literal["best"] | int = Field(
        "best", description="the f that f̂ is compared with: 'best' (lowest held-out L_un) or a checkpoint step")
    delta: float = Field(0.05, gt=0.0, lt=1.0, description="δ: the theorems hold with probability ≥ 1 − δ")
    rademacher_constant: float = Field(
        1.0, ge=0.0, description="multiplies the derived 4√3·L·R·Rad_S(F)/M of Gen_M; 1: the rigorous bound")
    confidence_constant: float = Field(
        1.0, ge=0.0, description="multiplies the derived 2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M) of Gen_M; 1: the rigorous bound")
    rademacher_draws: int = Field(200, ge=2, description="Monte Carlo draws of σ for Rad_S(F) of a linear class")

    @field_validator("comparator", mode="before")
    @classmethod
    def _comparator_ok(cls, value):
        if value == "best" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError("allowed: 'best' or a checkpoint step (an integer ≥ 0)")
