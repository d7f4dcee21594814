"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test, as `run_in_ray` gives a one-CPU trial. On the tiny matrices of
    these tests a second OpenMP thread only adds synchronisation, which on a busy 2-core machine once
    made a DN test take 96 s instead of 5."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
