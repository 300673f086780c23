"""The Interface section's "same pre-training loss, different downstream" pairs, on hand-built results
whose answers are known: which pairs qualify, how replicates are averaged (against scipy's Student t),
which encoders are compared (equal steps across grid points; checkpoints within one run), and the
sentence when none qualifies."""

import numpy as np
import pytest
from scipy import stats

from preadapt.experiment.store import tidy_frame
from preadapt.report.html import interface_context
from preadapt.report.interface import downstream_contrasts, interface_analysis, trained_encoders, interface_points


def point_rows(run, step, pre, star, adapter="linear", half=0.1):
    """An L_pre row and an L_adapt_star row of one run at one step, each with a CI of ± ``half``."""
    common = dict(run=run, step=step, n=100, level=0.95, method="t")
    return [dict(common, quantity="L_pre", value=pre, lower=pre - half, upper=pre + half, split="fresh"),
            dict(common, quantity="L_adapt_star", value=star, lower=star - half, upper=star + half, adapter=adapter,
                 split="id", task_classes=2)]


def sweep_results(values):
    """``values``: {(group, replicate): {step: (L_pre, L*_adapt)}} → tidy results and the runs' groups."""
    records, groups = [], {}
    for (group, replicate), by_step in values.items():
        run = f"{group}-{replicate}"
        groups[run] = group
        for step, (pre, star) in by_step.items():
            records += point_rows(run, step, pre, star)
    return tidy_frame(records), groups


LOOKUP = {0: (-15.5, 1.05), 10: (-15.8, 1.03)}
LINEAR = {0: (-3.6, 0.45), 10: (-11.0, 0.05)}


def test_grid_points_are_averaged_over_replicates_with_the_t_interval_and_compared_at_equal_steps():
    jitter = [-0.1, 0.0, 0.1]
    values = {("lookup", r): {s: (p + jitter[r], a + jitter[r] / 10) for s, (p, a) in LOOKUP.items()} for r in range(3)}
    values |= {("linear", r): {s: (p + jitter[r], a + jitter[r] / 10) for s, (p, a) in LINEAR.items()} for r in range(3)}
    results, groups = sweep_results(values)
    (view,) = interface_analysis(results, groups=groups)
    # two steps, one pair each: grid points are never compared across steps (unequal training)
    assert view.compared == 2
    # at step 0 the lookup table also adapts worse and has the lower L_pre; at step 10 too: both qualify,
    # the latest step first
    assert [(c.worse.name, c.better.name, c.worse.step, c.relation) for c in view.contrasts] == [
        ("lookup", "linear", 10, "lower"), ("lookup", "linear", 0, "lower")]
    worse = view.contrasts[0].worse
    # the oracle: the mean of the 3 replicates and scipy's t-interval (2 degrees of freedom) around it
    pre = np.array([values[("lookup", r)][10][0] for r in range(3)])
    half = stats.t.ppf(0.975, df=2) * pre.std(ddof=1) / np.sqrt(3)
    assert worse.runs == 3 and worse.method_pre == "replicates-t"
    # the same mean and t quantile in float64 by another summation order: a few ulps of ~16, far inside rtol 1e-12
    np.testing.assert_allclose(worse.pre, (pre.mean(), pre.mean() - half, pre.mean() + half), rtol=1e-12)
    assert view.contrast_sentence.startswith(
        "linear, ID tasks: same pre-training loss, different downstream: at step 10, lookup (3 runs) has L_pre "
        "-15.8000 [-16.0484, -15.5516], lower than linear's -11.0000 [-11.2484, -10.7516] (CIs apart), yet L*_adapt ")
    assert view.contrast_sentence.endswith("; 2 such pairs of 2 compared.")


def test_one_replicate_keeps_its_own_interval():
    results, groups = sweep_results({("lookup", 0): LOOKUP, ("linear", 0): LINEAR, ("linear", 1): LINEAR})
    encoders = {(e.name, e.step): e for e in trained_encoders(interface_points(results), groups)}
    single = encoders[("lookup", 10)]
    assert single.runs == 1 and single.pre == (-15.8, -15.8 - 0.1, -15.8 + 0.1) and single.method_pre == "t"
    twice = encoders[("linear", 10)]  # two equal replicates: a t-interval of width 0 around them
    assert twice.runs == 2 and twice.pre == (-11.0, -11.0, -11.0)


@pytest.mark.parametrize("pre_worse, pre_better, relation", [
    (-11.05, -11.0, "same"),                # each L_pre inside the other's CI (± 0.1)
    (-11.15, -11.0, "lower, CIs overlap"),  # lower, but the CIs overlap without containing each other's value
    (-12.0, -11.0, "lower"),                # lower, CIs apart
    (-10.5, -11.0, None),                   # higher beyond the CIs: the order agrees with L*_adapt, no pair
    (-10.95, -11.0, "same"),                # higher but within each other's CIs: still the same
])
def test_which_pairs_qualify(pre_worse, pre_better, relation):
    results, groups = sweep_results({("a", 0): {5: (pre_worse, 1.0)}, ("b", 0): {5: (pre_better, 0.5)},
                                     ("c", 0): {5: (pre_better, 0.95)}})  # c: L*_adapt within a's CI
    encoders = trained_encoders(interface_points(results), groups)
    found, compared = downstream_contrasts(encoders)
    assert compared == 3  # a-b, a-c, b-c at step 5
    pairs = [(c.worse.name, c.better.name, c.relation) for c in found]
    expected = [] if relation is None else [("a", "b", relation)]
    # c adapts worse than b, beyond the CIs, with the same L_pre as b: always a pair
    assert ("c", "b", "same") in pairs
    assert [pair for pair in pairs if pair[0] == "a"] == expected  # a and c: L*_adapt CIs overlap, never a pair


def test_within_one_run_the_checkpoints_are_the_encoders():
    records = point_rows("r", 0, -3.0, 0.9) + point_rows("r", 10, -8.0, 0.30) + point_rows("r", 20, -8.02, 0.6)
    (view,) = interface_analysis(tidy_frame(records))
    assert view.compared == 3
    (found,) = view.contrasts  # step 20: the same L_pre as step 10, a worse L*_adapt
    assert (found.worse.name, found.better.name, found.relation) == ("step 20", "step 10", "same")
    assert "step 20 has L_pre -8.0200 [-8.1200, -7.9200] and step 10's -8.0000 [-8.1000, -7.9000] within each " \
           "other's CIs, yet L*_adapt 0.6000 [0.5000, 0.7000] against 0.3000 [0.2000, 0.4000] (CIs apart)." \
           in view.contrast_sentence


def test_the_page_says_plainly_when_no_pair_was_found(tmp_path):
    records = point_rows("r", 0, -3.0, 0.9) + point_rows("r", 10, -8.0, 0.30) + point_rows("r", 20, -9.0, 0.28)
    context = interface_context(tidy_frame(records), tmp_path / "figures" / "interface.png", pre_unit="bits",
                                star_unit="bits")
    assert context["contrasts"] == [{"found": False, "sentence": (
        "linear, ID tasks: no such pair: no two encoders whose L_pre lie within each other's CIs, or are ordered "
        "against their L*_adapt, have L*_adapt CIs apart (3 pairs compared).")}]
