"""A fused causal convolution for short kernels in Triton: ``y[b, d, t] = sum_{j < K} k[d, j] u[b, d, t - j]``.

The same operation as ``chunklm.model.causal_fft_conv``, computed directly on the tensor cores as
block-Toeplitz matrix products, with float32 accumulation (bf16 or fp16 in and out; float32 in and
out with IEEE float32 products). Causal by construction: a tap at lag ``t - s`` is read only
where ``0 <= t - s < K``, and inputs before position 0 are zeros, so no output reads a later input.

Three kernels, one program per (channel, block of positions[, block of batch rows]):

* forward: ``Y[b, t-block] = sum_i U[b, s-block i] @ W_i`` with ``W_i[s, t] = k[t - s]``;
* grad u:  ``dU[b, s-block] = sum_i dY[b, t-block i] @ W_i^T`` (the anti-causal correlation);
* grad k:  rows ``(b, m)`` cut every sequence into blocks of P positions; the tensor cores form
  ``G[p, x] = sum_{b, m} dy[b, mP + p] u[b, mP - (K - 1) + x]`` (P x (P + K - 1) per channel) and
  ``dk[j] = sum_p G[p, p + K - 1 - j]``: a diagonal sum, done by a strided view. Deterministic:
  no atomics, a fixed summation order.

Run on CPU tensors with ``TRITON_INTERPRET=1`` set before this module is imported (the tests do).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["triton_causal_conv", "BLOCK_T"]

BLOCK_T = 64  # positions per program (and the P of the grad-k blocks)
BLOCK_B = 32  # batch rows per program in forward and grad u (padded to 16 at least by tl.dot)
BLOCK_R = 64  # (b, m) rows reduced per iteration of grad k
BLOCK_X = 64  # columns of G per grad-k program


@triton.jit
def _toeplitz(k_ptr, d, K, t, s):
    """(S, T) tile W[s, t] = k[d, t - s] where 0 <= t - s < K, else 0."""
    lag = t[None, :] - s[:, None]
    return tl.load(k_ptr + d * K + lag, mask=(lag >= 0) & (lag < K), other=0.0)


@triton.jit
def _conv_fwd_kernel(
    u_ptr,
    k_ptr,
    y_ptr,
    B,
    T,
    K,
    stride_b,
    stride_d,
    N_LAG_BLOCKS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    d, t0, b0 = tl.program_id(0), tl.program_id(1) * BLOCK_T, tl.program_id(2) * BLOCK_B
    rows = b0 + tl.arange(0, BLOCK_B)
    t = t0 + tl.arange(0, BLOCK_T)  # output positions
    base = u_ptr + rows[:, None] * stride_b + d * stride_d
    acc = tl.zeros((BLOCK_B, BLOCK_T), dtype=tl.float32)
    for i in range(N_LAG_BLOCKS):  # input blocks t0, t0 - BLOCK_T, ...: lags 0 .. K - 1
        s = t0 - i * BLOCK_T + tl.arange(0, BLOCK_T)
        u = tl.load(base + s[None, :], mask=(rows[:, None] < B) & (s[None, :] >= 0) & (s[None, :] < T), other=0.0)
        acc = tl.dot(u, _toeplitz(k_ptr, d, K, t, s), acc, input_precision=PRECISION)  # (BB, S) @ (S, T)
    out = y_ptr + rows[:, None] * stride_b + d * stride_d + t[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(rows[:, None] < B) & (t[None, :] < T))


@triton.jit
def _conv_bwd_u_kernel(
    dy_ptr,
    k_ptr,
    du_ptr,
    B,
    T,
    K,
    stride_b,
    stride_d,
    N_LAG_BLOCKS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    d, s0, b0 = tl.program_id(0), tl.program_id(1) * BLOCK_T, tl.program_id(2) * BLOCK_B
    rows = b0 + tl.arange(0, BLOCK_B)
    s = s0 + tl.arange(0, BLOCK_T)  # input positions whose gradient this program writes
    base = dy_ptr + rows[:, None] * stride_b + d * stride_d
    acc = tl.zeros((BLOCK_B, BLOCK_T), dtype=tl.float32)
    for i in range(N_LAG_BLOCKS):  # output blocks s0, s0 + BLOCK_T, ...: lags 0 .. K - 1
        t = s0 + i * BLOCK_T + tl.arange(0, BLOCK_T)
        g = tl.load(base + t[None, :], mask=(rows[:, None] < B) & (t[None, :] < T), other=0.0)
        w_t = tl.trans(_toeplitz(k_ptr, d, K, t, s))  # (T, S): W[s, t] transposed
        acc = tl.dot(g, w_t, acc, input_precision=PRECISION)  # (BB, T) @ (T, S)
    out = du_ptr + rows[:, None] * stride_b + d * stride_d + s[None, :]
    tl.store(out, acc.to(du_ptr.dtype.element_ty), mask=(rows[:, None] < B) & (s[None, :] < T))


@triton.jit
def _conv_bwd_k_kernel(
    dy_ptr,
    u_ptr,
    g_ptr,
    B,
    T,
    K,
    M,
    X,
    stride_b,
    stride_d,
    P: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_X: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """G[d, p, x] = sum over rows r = (b, m) of dy[b, d, mP + p] * u[b, d, mP - (K - 1) + x]."""
    d, x0 = tl.program_id(0), tl.program_id(1) * BLOCK_X
    p = tl.arange(0, P)
    x = x0 + tl.arange(0, BLOCK_X)
    acc = tl.zeros((P, BLOCK_X), dtype=tl.float32)
    for r0 in range(0, B * M, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        b, m = r // M, r % M
        row = (r < B * M)[:, None]
        base = b[:, None] * stride_b + d * stride_d
        t = m[:, None] * P + p[None, :]  # (R, P)
        g = tl.load(dy_ptr + base + t, mask=row & (t < T), other=0.0)
        s = m[:, None] * P - (K - 1) + x[None, :]  # (R, X)
        u = tl.load(u_ptr + base + s, mask=row & (s >= 0) & (s < T), other=0.0)
        acc = tl.dot(tl.trans(g), u, acc, input_precision=PRECISION)  # (P, R) @ (R, X)
    out = g_ptr + d * P * X + p[:, None] * X + x[None, :]
    tl.store(out, acc, mask=x[None, :] < X)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit inputs


def _n_lag_blocks(K: int) -> int:
    """Blocks of BLOCK_T positions whose lags t - s cover 0 .. K - 1 (block i: lags around i * BLOCK_T)."""
    return (K + BLOCK_T - 2) // BLOCK_T + 1


def _grid_bt(B: int, D: int, T: int) -> tuple[int, int, int]:
    return (D, triton.cdiv(T, BLOCK_T), triton.cdiv(B, BLOCK_B))


def _forward(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    B, D, T = u.shape
    K = k.shape[-1]
    y = torch.empty_like(u)
    _conv_fwd_kernel[_grid_bt(B, D, T)](
        u,
        k,
        y,
        B,
        T,
        K,
        u.stride(0),
        u.stride(1),
        N_LAG_BLOCKS=_n_lag_blocks(K),
        BLOCK_B=BLOCK_B,
        BLOCK_T=BLOCK_T,
        PRECISION=_precision(u.dtype),
    )
    return y


def _backward(dy: torch.Tensor, u: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, D, T = u.shape
    K = k.shape[-1]
    du = torch.empty_like(u)
    _conv_bwd_u_kernel[_grid_bt(B, D, T)](
        dy,
        k,
        du,
        B,
        T,
        K,
        u.stride(0),
        u.stride(1),
        N_LAG_BLOCKS=_n_lag_blocks(K),
        BLOCK_B=BLOCK_B,
        BLOCK_T=BLOCK_T,
        PRECISION=_precision(u.dtype),
    )
    P, M, X = BLOCK_T, triton.cdiv(T, BLOCK_T), BLOCK_T + K - 1
    g = torch.empty(D, P, X, dtype=torch.float32, device=u.device)  # (D, P, P + K - 1)
    _conv_bwd_k_kernel[(D, triton.cdiv(X, BLOCK_X))](
        dy,
        u,
        g,
        B,
        T,
        K,
        M,
        X,
        u.stride(0),
        u.stride(1),
        P=P,
        BLOCK_R=BLOCK_R,
        BLOCK_X=BLOCK_X,
        PRECISION=_precision(u.dtype),
    )
    diagonals = g.as_strided((D, K, P), (P * X, 1, X + 1))  # [d, c, p] = G[d, p, p + c], c = K - 1 - j
    return du, diagonals.sum(-1).flip(-1)  # (D, K) float32


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # u (B, D, T), k (D, K)
        u = u.contiguous()
        k_u = k.to(u.dtype).contiguous()  # the tensor cores multiply in u's dtype, accumulate in float32
        ctx.save_for_backward(u, k_u)
        ctx.k_dtype = k.dtype
        return _forward(u, k_u)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, k_u = ctx.saved_tensors
        du, dk = _backward(dy.to(u.dtype).contiguous(), u, k_u)
        return du, dk.to(ctx.k_dtype)


def triton_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """u: (B, D, T) float32, bf16 or fp16; k: (D, K) -> (B, D, T) in u's dtype, accumulated in float32."""
    if u.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(
            f"triton_causal_conv takes float32, bfloat16 or float16 inputs: got {u.dtype}; use causal_fft_conv"
        )
    return _CausalConv.apply(u, k)
