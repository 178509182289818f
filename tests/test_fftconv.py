"""The causal FFT long convolution, against direct convolution."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from chunklm import causal_fft_conv
from chunklm.model import _fast_len


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[b, d, t] = sum_j k[d, j] u[b, d, t - j] with conv1d: left zero padding, flipped kernel."""
    D, K = k.shape
    return F.conv1d(F.pad(u, (K - 1, 0)), k.flip(-1)[:, None, :], groups=D)


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 3),
    D=st.integers(1, 5),
    T=st.integers(1, 80),
    K=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_matches_conv1d(B, D, T, K, seed):
    """FFT convolution equals direct causal convolution in float64, for any lengths."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, D, T, generator=g, dtype=torch.float64)
    k = torch.randn(D, K, generator=g, dtype=torch.float64)
    torch.testing.assert_close(causal_fft_conv(u, k), direct_causal_conv(u, k), rtol=0, atol=1e-10)


def test_later_inputs_do_not_move_earlier_outputs():
    """Changing input t moves no output before t: no wrap-around, even with K close to T."""
    u = torch.randn(2, 3, 64, dtype=torch.float64)
    k = torch.randn(3, 64, dtype=torch.float64)
    for s in (1, 30, 63):
        v = u.clone()
        v[..., s] += 10.0
        diff = (causal_fft_conv(v, k) - causal_fft_conv(u, k)).abs()
        assert diff[..., :s].max() < 1e-12
        assert diff[..., s].max() > 1e-3


def test_fast_len_is_smallest_5_smooth_at_least_n():
    """The FFT size is the smallest 2^a 3^b 5^c that is >= n."""

    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 1200):
        m = _fast_len(n)
        assert m >= n and smooth(m)
        assert not any(smooth(j) for j in range(n, m))


def test_float64_stays_float64():
    """A float64 input is convolved in float64, not rounded through float32."""
    u = torch.randn(1, 2, 10, dtype=torch.float64)
    k = torch.randn(2, 4, dtype=torch.float64)
    assert causal_fft_conv(u, k).dtype == torch.float64


def test_bf16_under_autocast_runs_in_float32():
    """Under bf16 autocast the transform runs in float32 and the result comes back as bf16."""
    u = torch.randn(2, 4, 50)
    k = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = causal_fft_conv(u.bfloat16(), k)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), direct_causal_conv(u.bfloat16().float(), k), rtol=2e-2, atol=5e-2)
