"""The results a run gives are the results recorded, to the last bit, and the recorded ones are where the
adapter seam (issue 11) and the fast paths (issue 15) left them.

- The adapter seam changed no result: with the default adapters ([mean, linear]) a digits run gives every
  row it gave before the seam (the reference written at commit c148f82, before it). Where issue 15
  changed the arithmetic (fused Adam's rounding in training, the linear adapter's float32 fits along the
  penalty path: docs/benchmarks.md), within a twentieth of the row's interval half-width (the linear
  adapter's rows: a quarter); elsewhere the same numbers.
- The reference tables reference_{demo,digits}.csv were written by tests/experiment/data/make_reference.py
  with the fast paths of issue 15, for the demo preset and a small digits run, on one thread; a run gives
  them bit for bit. (The demo's own reference before issue 15 is not kept: issue 15 reassociated the
  warp of the Gaussian world's sampler, which moves its draws by float32 rounding and so every number of a
  run by a little; the digits world samples stored examples, so its draws did not move.)
"""

from pathlib import Path

import pandas as pd
import pytest
import torch

from preadapt import run
from preadapt.experiment.presets import preset_data

DATA = Path(__file__).parent / "data"
KEYS = ["step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split", "bound",
        "status", "term", "statement"]


def _config(name: str) -> dict:
    """The configs make_reference.py ran (keep the two in step)."""
    data = preset_data(name)
    data["device"], data["threads"] = "cpu", 1
    if name == "digits":
        data["pretrain"].update(tuples=2000, epochs=1, checkpoints=[0, 8])
        data["evaluate"]["samples"] = 2000
    return data


def _key(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (int, float)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in KEYS if k in frame.columns]
    frame = frame.copy()
    for key in keys:  # a CSV reads integer context columns back as floats: one spelling for both
        frame[key] = [_key(value) for value in frame[key]]
    return frame.set_index(keys).sort_index()


@pytest.fixture(scope="module")
def runs() -> dict[str, pd.DataFrame]:
    """The tidy results of the two reference configs, each run once for the module."""
    threads = torch.get_num_threads()
    try:
        return {name: run(_config(name)).results for name in ("demo", "digits")}
    finally:
        torch.set_num_threads(threads)


def _compare(before: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    before = _keyed(before)
    now = _keyed(results.drop(columns=["run"]))
    missing = before.index.difference(now.index)
    assert missing.empty, f"rows gone: {list(missing)[:5]}"
    assert not now.index.duplicated().any()
    return before, now.loc[before.index]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "digits"])
def test_a_run_gives_every_row_of_the_reference_to_the_last_bit(runs, name):
    before, now = _compare(pd.read_csv(DATA / f"reference_{name}.csv"), runs[name])
    for column in ["value", "lower", "upper", "n", "level"]:
        # the same computation on the same samples in the same order: equal to the last bit (the CSV
        # holds 17 significant digits, which round-trip a float64 exactly)
        pd.testing.assert_series_equal(now[column].astype(float), before[column].astype(float), check_exact=True,
                                       check_names=False)
    assert (now["method"] == before["method"]).all()
    # L*_adapt ≤ L_adapt within the interval, for every shots value (the protocol's one draw at
    # probe_shots here): the interval of L_adapt − L*_adapt never lies entirely below 0
    results = runs[name]
    excess = results[results.quantity == "link_adapt_excess"]
    assert len(excess) == 2 * results.step.nunique()  # mean and linear at every checkpoint
    assert (excess.upper >= 0).all(), excess[["step", "adapter", "shots", "value", "lower", "upper"]]


@pytest.mark.slow
def test_the_seam_and_the_fast_paths_moved_the_results_only_within_their_intervals(runs):
    before, now = _compare(pd.read_csv(DATA / "reference_digits_c148f82.csv"), runs["digits"])
    step = before.index.get_level_values("step")
    linear = before.index.get_level_values("adapter") == "linear"
    untouched = (step == 0) & ~linear  # before any training, outside the float32 heads: the very same numbers
    for column in ["value", "lower", "upper", "n", "level"]:
        pd.testing.assert_series_equal(now.loc[untouched, column].astype(float),
                                       before.loc[untouched, column].astype(float), check_exact=True, check_names=False)
    assert (now["n"] == before["n"]).all() and (now["method"] == before["method"]).all()
    # After training, fused Adam's float32 rounding moves the encoder by a few ulps a step: far inside the
    # sampling error. Measured (2026-12-05): 2e-6 of the half-width outside the linear adapter; required:
    # 1/20 of it. The linear adapter's heads are something else: it fits in float32 and along the penalty
    # path (each fit warm-started from the stronger penalty's), and a fit is determined only to its
    # stopping tolerance, so its heads moved within that and a few test points near a boundary changed
    # side. Measured: at most 0.12 of the half-width (acc_top of the one full-problem probe at step 8: two
    # test points of 361), 0.019 for acc_avg, averaged over 50 tasks; required: a quarter of it, well inside
    # the interval the row states. Rows without an interval (bound terms, exact given the encoder) moved by
    # at most 9e-10 relatively; required: 1e-6 (eight steps of an ulp-level change, 6e-8 relatively, with room).
    half = (before.upper - before.lower) / 2
    moved = (now.value - before.value).abs()
    wide = half > 0
    allowed = half / 20
    allowed[linear] = half[linear] / 4
    assert (moved[wide] <= allowed[wide]).all(), pd.DataFrame({"moved": moved, "half": half})[wide & (moved > allowed)]
    exact = moved[~wide] <= 1e-6 * before.value[~wide].abs()
    assert exact.all(), pd.DataFrame({"before": before.value, "now": now.value})[~wide][~exact]
