"""Each benchmark's correctness check at tiny sizes: its program and its baseline compute the same results.

The benchmarks (benchmarks/*.py, ``make bench``) time two programs against each other; these tests
run the same two programs, factored out of the scripts, on sizes that take a fraction of a second
and check that they agree, so that a benchmark never compares programs that do different work.
No timing is asserted here. The sweep's check (identical results from every executor) runs inside
bench_sweep.py itself: it needs worker processes, too slow for this suite.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_avg_k  # noqa: E402
import bench_demo  # noqa: E402
import bench_estimates  # noqa: E402
import bench_finetune  # noqa: E402
import bench_hinge  # noqa: E402
import bench_linear_probe  # noqa: E402
import bench_pretrain  # noqa: E402
import run_all  # noqa: E402


@pytest.mark.parametrize("hidden, batch, epochs", [([16], 64, 2), ([24, 8], 100, 1)])
def test_pretrain_and_the_bare_loop_reach_the_same_parameters(hidden, batch, epochs):
    setup = bench_pretrain.make_setup(12, hidden, 6, tuples=300, seed=1)
    largest, tolerance = bench_pretrain.compare_parameters(setup, epochs, batch)
    assert largest <= tolerance, (largest, tolerance)


def test_the_flop_count_is_the_documented_one():
    setup = bench_pretrain.make_setup(256, [512], 128, tuples=8)
    assert bench_pretrain.matmul_weights(setup.initial) == 256 * 512 + 512 * 128
    assert bench_pretrain.training_flops(setup.initial, tuples=10, epochs=2) == 3 * 2 * (3 * 10 * 2) * 196_608


def test_the_sampler_in_blocks_and_in_one_draw_give_the_same_distribution():
    """No generator-level identity is promised (a draw takes its classes first, then its inputs), so
    the two ways are compared in distribution: class frequencies and per-class input means, each
    within 5 standard errors (fixed seeds: deterministic)."""
    setup = bench_pretrain.make_setup(4, [8], 4, tuples=8, seed=0)
    n, block = 12_000, 1000
    programs = bench_pretrain.sampler_programs(setup.world, n, block, torch.Generator().manual_seed(1))
    assert programs["sampler_blocks"][1] == programs["sampler_bulk"][1] == n  # both draw the tuples they claim
    g = torch.Generator().manual_seed(2)
    blocks = [bench_pretrain.draw_tuples(setup.world, block, g, negatives=1) for _ in range(n // block)]
    one = bench_pretrain.draw_tuples(setup.world, n, torch.Generator().manual_seed(3), negatives=1)
    classes = setup.world.classes
    for part in ("anchor_class", "negative_class"):
        a = torch.cat([getattr(t, part).reshape(-1) for t in blocks]).bincount(minlength=classes).double() / n
        b = getattr(one, part).reshape(-1).bincount(minlength=classes).double() / n
        prior = torch.as_tensor(np.asarray(setup.world.prior, dtype=np.float64))
        se = torch.sqrt(2 * prior * (1 - prior) / n)  # of a difference of two frequencies of n draws
        assert torch.all((a - b).abs() <= 5 * se), part
    x_blocks = torch.cat([t.anchor for t in blocks])
    y_blocks = torch.cat([t.anchor_class for t in blocks])
    for c in range(classes):
        a, b = x_blocks[y_blocks == c], one.anchor[one.anchor_class == c]
        se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
        assert torch.all((a.mean(0) - b.mean(0)).abs() <= 5 * se), c


def test_curl_moments_is_the_mean_loss_over_the_tuples_the_sampler_draws():
    world, encoder = bench_estimates.setup(0, classes=5, dim=6, hidden=8, out_dim=4)
    samples = 2 * bench_estimates.PER_BLOCK + 17  # two whole blocks and a partial one
    moments = bench_estimates.curl_moments(encoder, world, samples, torch.Generator().manual_seed(3),
                                           block=bench_estimates.BLOCK)
    mean, count = bench_estimates.reference_mean(encoder, world, samples, seed=3)
    assert moments.count == count == samples
    assert moments.mean == pytest.approx(mean, rel=1e-12, abs=0)


def test_the_forward_baseline_sees_three_inputs_a_tuple():
    world, encoder = bench_estimates.setup(0, classes=5, dim=6, hidden=8, out_dim=4)
    inputs = bench_estimates.draw_inputs(world, 3 * 1000, seed=7)
    assert bench_estimates.forward_program(encoder, inputs, step=999)() == 3000


def test_exact_avg_k_equals_the_loop_over_every_task():
    for k in (2, 3):
        exact, enumerated = bench_avg_k.exact_and_enumerated(classes=9, per_class=6, dim=4, k=k)
        assert exact == pytest.approx(enumerated, rel=1e-12, abs=1e-12)


def test_the_batched_linear_probe_fits_what_scikit_learn_fits():
    """Same problem (C = 2/(n·λ)); scikit-learn stops at its default tol (1e-4 on the gradient), so
    the probabilities agree to about 1e-3, not to machine precision; accuracies within the
    benchmark's 0.5 points."""
    (ours, theirs), (p_ours, p_theirs) = bench_linear_probe.compare(tasks=8, train=60, test=100, dim=5, penalty=1e-2)
    assert abs(100 * (ours.mean() - theirs.mean())) <= 0.5
    np.testing.assert_allclose(p_ours, p_theirs, atol=5e-3)


def test_hinge_and_logistic_measure_the_same_quantities():
    config = bench_hinge.EvaluateConfig(samples=400, mean_samples=30, test_per_class=10, task_classes=[2], top_r=[1],
                                        probe_tasks=4, probe_shots=8, probe_val=8, star_samples=20, bootstrap=10)
    results = bench_hinge.both_losses(bench_hinge.tiny_world(4, 4), config)
    logistic, hinge = results["logistic"], results["hinge"]
    assert bench_hinge.measurement_keys(logistic) == bench_hinge.measurement_keys(hinge)
    for quantity in ("tau", "R", "align", "uniform", "s_f"):  # ℓ plays no part in these: same samples, same value
        assert logistic.get(quantity).value == hinge.get(quantity).value, quantity
    assert logistic.get("acc_avg", adapter="mean", task_classes=2).value == \
        hinge.get("acc_avg", adapter="mean", task_classes=2).value


def test_finetune_by_vmap_and_by_the_loop_agree():
    fits = bench_finetune.both_paths(bench_finetune.make_task(2, 6, seed=0), max_steps=10, eval_every=5)
    assert fits["vmap"].path == "vmap" and fits["loop"].path == "loop"
    assert fits["vmap"].chosen == fits["loop"].chosen
    # The same float64 arithmetic per task, batched one way or the other: products and sums differ by
    # rounding (~1e-16 relative), which 10 Adam steps of lr ≤ 1e-2 on weights of size ~1 keep around 1e-14
    # (Adam divides by √v̂ + 1e-8, which no rounding moves); 1e-9 leaves room on any IEEE-754 CPU.
    torch.testing.assert_close(fits["vmap"].weights, fits["loop"].weights, rtol=0, atol=1e-9)


def _store_with_timings(path: Path, rows) -> Path:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (run_id TEXT, threads INTEGER)")
    connection.execute("INSERT INTO runs VALUES ('r', 1)")
    if rows is not None:
        connection.execute("CREATE TABLE timings (run TEXT, stage TEXT, seconds REAL, calls INTEGER)")
        connection.executemany("INSERT INTO timings VALUES ('r', ?, ?, ?)", rows)
    connection.commit()
    connection.close()
    return path


def test_the_demo_breakdown_groups_the_stages(tmp_path):
    rows = [("start-up", 0.5, 1), ("sampling", 1.0, 1), ("pretraining", 2.0, 1), ("evaluation", 6.0, 4),
            ("evaluation/L_un", 1.0, 4), ("evaluation/adapters", 4.5, 4), ("evaluation/adapters/linear", 3.0, 8),
            ("bound checks", 0.25, 5), ("bound checks/theorems", 0.25, 1), ("report", 1.0, 1)]
    store = _store_with_timings(tmp_path / "results.sqlite", rows)
    result = bench_demo.breakdown(bench_demo.read_timings(store), wall=12.0)
    assert result.groups == {"start-up": 0.5, "sampling": 1.0, "pretraining": 2.0, "evaluation": 6.0, "report": 1.0,
                             "bound checks": 0.25}
    assert result.unaccounted == pytest.approx(1.25) and result.share("evaluation") == 0.5
    assert [stage for stage, _, _ in result.children("evaluation")] == ["evaluation/adapters", "evaluation/L_un"]
    evaluation = next(line for line in bench_demo.detail_lines(result) if line.startswith("evaluation"))
    assert "adapters 4.50 s ×4 [linear 3.00]" in evaluation
    assert bench_demo.read_threads(store) == 1


def test_the_demo_breakdown_without_its_own_group_row_sums_the_sub_stages(tmp_path):
    rows = [("evaluation/L_un", 1.0, 1), ("evaluation/adapters", 2.0, 1), ("evaluation/adapters/linear", 1.5, 1)]
    result = bench_demo.breakdown(bench_demo.read_timings(_store_with_timings(tmp_path / "s.sqlite", rows)), wall=4.0)
    assert result.groups == {"evaluation": 3.0}


def test_a_store_without_timings_has_no_breakdown(tmp_path):
    assert bench_demo.read_timings(_store_with_timings(tmp_path / "results.sqlite", None)) is None


def test_the_demo_breakdown_of_a_tiny_run(tmp_path):
    """A real run's store, read as the benchmark reads the demo's (in-process: no CLI start-up here)."""
    from preadapt.experiment.run import run

    run({"name": "tiny", "world": {"kind": "gaussian", "classes": 4, "dim": 4},
         "encoder": {"kind": "linear", "out_dim": 4},
         "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
         "evaluate": {"samples": 512, "mean_samples": 64, "test_per_class": 16, "task_classes": [2, 3], "top_r": [1],
                      "probe_tasks": 4, "probe_shots": 8, "probe_val": 8, "star_samples": 32, "bootstrap": 10}},
        out=tmp_path / "run")
    rows = bench_demo.read_timings(tmp_path / "run" / "results.sqlite")
    if rows is None:
        pytest.skip("this store has no timings table yet")
    result = bench_demo.breakdown(rows, wall=1e6)
    assert {"pretraining", "evaluation"} <= set(result.groups)
    assert all(seconds >= 0 for seconds in result.groups.values())
    assert result.children("evaluation")
    assert bench_demo.describe(result).startswith("wall ")


def test_the_demo_command_is_the_console_script_with_the_threads_in_the_environment(tmp_path):
    command = bench_demo.demo_command(tmp_path / "out")
    assert command[-6:] == ["run", "--preset", "demo", "--out", str(tmp_path / "out"), "--force"]
    assert bench_demo.thread_env(1)["OMP_NUM_THREADS"] == "1"


def test_run_all_orders_the_issue_rows_first_and_rewrites_only_its_block(tmp_path):
    def row(name, passed=True):
        return {"bench": name, "target": "", "measured": "m | n", "ratio": 1.0, "goal": ">= 1x", "passed": passed,
                "ratio_text": "1.00x", "detail": []}

    rows = run_all.ordered([row("hinge vs logistic, small"), row("`make demo` (demo)", False),
                            row("pretrain() vs bare loop, wide"), row("pretrain() vs bare loop, demo")])
    assert [r["bench"] for r in rows] == ["pretrain() vs bare loop, demo", "pretrain() vs bare loop, wide",
                                          "`make demo` (demo)", "hinge vs logistic, small"]
    lines = run_all.table(rows)
    assert lines[0] == "| benchmark | measured | ratio | target | verdict |"
    assert r"m \| n" in lines[2] and lines[4].endswith("| **FAIL** |")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{run_all.BEGIN}\nold\n{run_all.END}\n\n## History\n\nkept\n")
    run_all.write_doc(f"{run_all.BEGIN}\nnew\n{run_all.END}", doc)
    assert doc.read_text() == f"# Benchmarks\n\nintro\n\n{run_all.BEGIN}\nnew\n{run_all.END}\n\n## History\n\nkept\n"
    assert run_all.parse_rows('x\nSUMMARY {"bench": "b", "passed": null}\n') == [{"bench": "b", "passed": None}]
