"""Shared pytest setup."""

import os

# Triton reads this once, when it is first imported, and the framework tests import it through
# transformers and lightning before tests/test_triton_conv.py is collected: set it before anything.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# The property tests draw new examples on each run (a developer's run keeps exploring); CI runs them with the
# examples derived from each test's source, so a CI result can be reproduced: HYPOTHESIS_PROFILE=ci (.ci/run).
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP threads stall badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
