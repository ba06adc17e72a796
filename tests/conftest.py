import os

import pytest
import torch

# Small tensors dominate the suite; one intra-op thread avoids oversubscription (set
# INVDIFF_TEST_THREADS to change it).
torch.set_num_threads(int(os.environ.get("INVDIFF_TEST_THREADS", "1")))


@pytest.fixture
def gen():
    """A fresh seeded generator per test."""
    return torch.Generator().manual_seed(1234)
