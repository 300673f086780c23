"""The adapter seam changed no result: with the default adapters ([mean, linear]) a run gives every
row it gave before the seam, with the same values (issue 11's acceptance). The reference tables were
written by tests/experiment/data/make_reference.py at commit c148f82 (before the seam), for the demo
preset and a small digits run, on one thread."""

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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "digits"])
def test_default_adapters_reproduce_every_row_of_before(name):
    threads = torch.get_num_threads()
    try:
        result = run(_config(name))
    finally:
        torch.set_num_threads(threads)
    before = _keyed(pd.read_csv(DATA / f"reference_{name}.csv"))
    now = _keyed(result.results.drop(columns=["run"]))
    missing = before.index.difference(now.index)
    assert missing.empty, f"rows gone: {list(missing)[:5]}"
    assert not now.index.duplicated().any()
    now = now.loc[before.index]
    for column in ["value", "lower", "upper", "n", "level"]:
        # the same computation on the same samples in the same order: equal to the last bit (the CSV
        # holds 17 significant digits, which round-trip a float64 exactly)
        pd.testing.assert_series_equal(now[column].astype(float), before[column].astype(float), check_exact=True,
                                       check_names=False)
    assert (now["method"] == before["method"]).all()
    # L*_adapt ≤ L_adapt within the interval, for every shots value (the protocol's one draw at
    # probe_shots here): the interval of L_adapt − L*_adapt never lies entirely below 0
    excess = result.results[result.results.quantity == "link_adapt_excess"]
    assert len(excess) == 2 * result.results.step.nunique()  # mean and linear at every checkpoint
    assert (excess.upper >= 0).all(), excess[["step", "adapter", "shots", "value", "lower", "upper"]]
