import pytest

TINY = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "world": {"kind": "gaussian", "classes": 5, "dim": 4, "warp": True},
    "encoder": {"kind": "mlp", "hidden": [8], "out_dim": 4, "norm_bound": 3.0},
    "objective": {"kind": "curl", "loss": "logistic", "negatives": 2, "block_size": 2},
    "pretrain": {"tuples": 256, "epochs": 2, "batch_size": 64, "checkpoints": [0, 3]},
    "evaluate": {"samples": 600, "mean_samples": 60, "test_per_class": 12, "task_classes": [2, 3], "top_r": [1, 2],
                 "probe_tasks": 4, "probe_shots": 10, "probe_val": 10, "sup_samples": 30, "bootstrap": 10},
}

DIVERGING = {
    **TINY,
    "name": "boom",
    "encoder": {"kind": "linear", "out_dim": 4, "norm_bound": None},
    "objective": {"kind": "curl", "loss": "hinge"},
    "pretrain": {"tuples": 512, "epochs": 5, "batch_size": 64, "optimizer": "sgd", "lr": 1e30, "checkpoints": [0]},
}


@pytest.fixture
def tiny():
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in TINY.items()}


SWEEP_BASE = {**TINY, "name": "base", "threads": 1,
              "objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1},
              "pretrain": {"tuples": 256, "epochs": 2, "batch_size": 64, "checkpoints": [0]}}
"""A run of about a second: the base of the test sweeps (one torch thread, so that every backend
computes bit for bit the same)."""

TWELVE = {"name": "twelve", "base": "base.yaml", "grid": {"objective.negatives": [1, 2, 4], "objective.block_size": [1, 2]},
          "replicates": 2}
"""The 12-run sweep of the acceptance tests: 3 × 2 points × 2 replicates."""


def write_sweep(folder, spec, base=None):
    """Write base.yaml and sweep.yaml into ``folder``; return the sweep file's path."""
    import yaml

    (folder / "base.yaml").write_text(yaml.safe_dump(base or SWEEP_BASE))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sorted_results(frame):
    """A results table in a canonical row order (runs complete in any order)."""
    keys = ["run", "step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split",
            "bound", "term"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)
