"""Shared test set-up: one torch thread per test worker (the suite runs with two workers on two cores)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("PREADAPT_TEST_THREADS", "1")))
