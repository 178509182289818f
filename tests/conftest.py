"""Shared pytest setup."""

import os

# Triton reads this once, when it is first imported, and the framework tests import it through
# transformers and lightning before tests/test_triton_conv.py is collected: set it before anything.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# The property tests use the examples derived from each test's source, so any run of the test command (CI's
# too) can be reproduced; HYPOTHESIS_PROFILE=explore draws new examples on each run, to look for more.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP threads stall badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
