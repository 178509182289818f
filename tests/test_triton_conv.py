"""The fused Triton causal convolution, run on CPU by Triton's interpreter, against the FFT conv.

Shapes stay tiny: the interpreter runs each program in numpy. The interpreter multiplies bf16 tiles
as raw integers (it stores bf16 as uint16 and tl.dot does not convert them), so the 16-bit path is
checked in fp16 here, through the same kernels; bf16 is checked on a GPU by benchmarks/gpu_check.py.
"""

import os
import subprocess
import sys

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: they run on CPU tensors
pytest.importorskip("triton", reason="the test extras install triton (pip install -e '.[test]')")

import chunklm.model as model_module  # noqa: E402
from chunklm import ChunkLM, ChunkLMConfig  # noqa: E402
from chunklm.model import causal_conv, causal_fft_conv, use_triton_conv  # noqa: E402
from chunklm.triton_conv import triton_causal_conv  # noqa: E402

SHAPES = [  # (B, D, T, K)
    (2, 3, 50, 7),  # T shorter than one block (BLOCK_T = 64)
    (1, 2, 70, 100),  # K > T
    (3, 2, 130, 64),  # T not a multiple of the block, K = one block
    (1, 1, 150, 129),  # lags spanning three blocks
    (2, 1, 64, 1),  # one tap
]


def conv_and_grads(conv, u, k, g):
    u, k = u.detach().requires_grad_(True), k.detach().requires_grad_(True)
    y = conv(u, k)
    return (y, *torch.autograd.grad(y, (u, k), g.to(y.dtype)))


@pytest.mark.parametrize("B, D, T, K", SHAPES)
def test_matches_fft_conv_in_float32(B, D, T, K):
    """Forward, grad u and grad k equal the FFT conv's (float64) within float32 round-off."""
    gen = torch.Generator().manual_seed(B * 1000 + T + K)
    u, k, g = torch.randn(B, D, T, generator=gen), torch.randn(D, K, generator=gen), torch.randn(B, D, T, generator=gen)
    got = conv_and_grads(triton_causal_conv, u, k, g)
    want = conv_and_grads(causal_fft_conv, u.double(), k.double(), g.double())
    assert [t.dtype for t in got] == [torch.float32] * 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)


def test_fp16_multiplies_in_fp16_and_accumulates_in_float32():
    """16-bit inputs come back in 16 bits, equal to the float32 conv of the rounded inputs up to output rounding."""
    gen = torch.Generator().manual_seed(3)
    u, k, g = (
        torch.randn(2, 3, 90, generator=gen),
        torch.randn(3, 40, generator=gen) / 6,
        torch.randn(2, 3, 90, generator=gen),
    )
    y, du, dk = conv_and_grads(triton_causal_conv, u.half(), k, g.half())
    assert (y.dtype, du.dtype, dk.dtype) == (torch.float16, torch.float16, torch.float32)
    y_ref, du_ref, dk_ref = conv_and_grads(causal_fft_conv, u.half().double(), k.half().double(), g.half().double())
    torch.testing.assert_close(y.double(), y_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(du.double(), du_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(dk.double(), dk_ref, rtol=1e-5, atol=1e-4)  # float32 sums of exact fp16 products


@pytest.mark.parametrize("K", [16, 63, 64])
def test_later_inputs_do_not_move_earlier_outputs(K):
    """Changing input s leaves every output before s bit-identical (taps outside 0..K-1 are exact zeros)."""
    u, k = torch.randn(2, 2, 64), torch.randn(2, K)
    base = triton_causal_conv(u, k)
    for s in (1, 30, 63):
        v = u.clone()
        v[..., s] += 10.0
        diff = (triton_causal_conv(v, k) - base).abs()
        assert diff[..., :s].max() == 0
        assert diff[..., s].max() > 1e-3


def test_outputs_have_no_gradient_from_later_inputs():
    """The gradient of output t w.r.t. inputs after t is exactly zero, and not vacuously."""
    u, k = torch.randn(1, 2, 100, requires_grad=True), torch.randn(2, 70)
    y = triton_causal_conv(u, k)
    for t in (0, 37, 64, 99):
        (grad,) = torch.autograd.grad(y[..., t].sum(), u, retain_graph=True)
        assert (grad[..., t + 1 :] == 0).all()
        assert grad[..., t].abs().max() > 1e-6


def test_model_through_the_triton_conv_matches_the_fft_model(monkeypatch):
    """ChunkLM's loss and gradients are the same (float32 round-off) with the Triton conv in every block."""
    torch.manual_seed(0)
    model = ChunkLM(ChunkLMConfig(d_model=8, n_layers=1, seq_len=40, kernel_len=16, chunk=2))
    windows = torch.randint(0, 256, (2, 42))
    loss_fft, _ = model.loss(windows)
    grads_fft = torch.autograd.grad(loss_fft, list(model.parameters()))
    monkeypatch.setattr(model_module, "causal_conv", triton_causal_conv)
    loss_triton, _ = model.loss(windows)
    grads_triton = torch.autograd.grad(loss_triton, list(model.parameters()))
    torch.testing.assert_close(loss_triton, loss_fft, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_triton, grads_fft):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cpu_dispatch_is_the_fft_conv_bit_for_bit():
    """On CPU causal_conv is causal_fft_conv exactly, in float32 and under bf16 autocast."""
    u, k = torch.randn(2, 3, 50), torch.randn(3, 8)
    assert torch.equal(causal_conv(u, k), causal_fft_conv(u, k))
    assert torch.equal(causal_conv(u.bfloat16(), k), causal_fft_conv(u.bfloat16(), k))


def test_dispatch_rule():
    """The Triton conv is chosen on CUDA for 16-bit inputs and kernels up to TRITON_MAX_K taps only."""
    cuda, cpu, max_k = torch.device("cuda"), torch.device("cpu"), model_module.TRITON_MAX_K
    assert use_triton_conv(cuda, torch.bfloat16, 128) and use_triton_conv(cuda, torch.float16, max_k)
    assert not use_triton_conv(cuda, torch.bfloat16, max_k + 1)
    assert not use_triton_conv(cuda, torch.float32, 128) and not use_triton_conv(cuda, torch.float64, 128)
    assert not use_triton_conv(cpu, torch.bfloat16, 128)


def test_rejects_float64():
    """float64 is the FFT conv's job: a TypeError naming it."""
    with pytest.raises(TypeError, match="causal_fft_conv"):
        triton_causal_conv(torch.randn(1, 1, 8, dtype=torch.float64), torch.randn(1, 2, dtype=torch.float64))


COMPILE_FOR_HOPPER = r"""
import re

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from chunklm import triton_conv as tc

ints = {name: "i32" for name in ("B", "T", "K", "stride_b", "stride_d")}
conv = dict(N_LAG_BLOCKS=3, BLOCK_B=tc.BLOCK_B, BLOCK_T=tc.BLOCK_T, PRECISION="tf32")
grad_k = dict(P=tc.BLOCK_T, BLOCK_R=tc.BLOCK_R, BLOCK_X=tc.BLOCK_X, PRECISION="tf32")
kernels = [
    (tc._conv_fwd_kernel, {"u_ptr": "*bf16", "k_ptr": "*bf16", "y_ptr": "*bf16", **ints}, conv),
    (tc._conv_bwd_u_kernel, {"dy_ptr": "*bf16", "k_ptr": "*bf16", "du_ptr": "*bf16", **ints}, conv),
    (
        tc._conv_bwd_k_kernel,
        {"dy_ptr": "*bf16", "u_ptr": "*bf16", "g_ptr": "*fp32", "M": "i32", "X": "i32", **ints},
        grad_k,
    ),
]
for fn, signature, constexprs in kernels:
    signature = {name: signature.get(name, "constexpr") for name in fn.arg_names}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    # mma.sync or wgmma, f32 += bf16 x bf16
    assert re.search(r"mma\S*\.f32\.bf16\.bf16", compiled.asm["ptx"]), fn.__name__
print("ok")
"""


def test_kernels_compile_for_hopper_with_bf16_tensor_cores():
    """Compiled (not interpreted) for sm_90 without a GPU: the bf16 kernels build and use bf16 MMA with float32
    accumulation."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE_FOR_HOPPER], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
