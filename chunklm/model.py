"""ChunkLM: a byte-level language model whose token mixing is a causal FFT long convolution.

Shapes: B batch, T positions (T <= seq_len), D d_model, K kernel_len, C chunk, V = 256 bytes.

Each block's kernel has K causal taps and is parameterised by its own K-point rfft coefficients.
The spectral cutoff (in bins of a seq_len-point rfft, as the curriculum counts them) keeps the
first ``ceil(cutoff * K / seq_len)`` coefficients: it band-limits the *kernel*, never the product
spectrum, and the convolution is zero-padded (linear, not circular), so no output depends on a
later byte at any cutoff.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from chunklm.config import ChunkLMConfig, ConfigError, KernelInit

__all__ = [
    "causal_fft_conv",
    "causal_conv",
    "chunk_loss",
    "head_loss",
    "SpectralKernel",
    "LongConv",
    "Block",
    "ChunkLM",
]

logger = logging.getLogger(__name__)

VOCAB = 256
_HEAD_BLOCK = 2**21  # logits per block in head_loss (8 MB in float32)
TRITON_MAX_K = 256  # kernels of at most this many taps use the fused Triton conv on CUDA (16-bit inputs)


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes every FFT library (MKL, pocketfft, cuFFT) does fast."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def causal_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal linear convolution ``y[b, d, t] = sum_{j < K} k[d, j] * u[b, d, t - j]`` by FFT.

    u: (B, D, T), k: (D, K) -> (B, D, T). Zero padding to n >= T + K - 1 points makes the circular
    convolution the FFT computes equal to the linear one: nothing wraps around, so no output
    depends on a later input. The kernel is transformed once per call and broadcast over the batch.
    Computed in float32 (float64 stays float64) with autocast off, since cuFFT has no bf16.
    """
    T, K = u.shape[-1], k.shape[-1]
    n = _fast_len(T + K - 1)  # >= T + K - 1: linear, not circular, convolution
    dtype = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast(u.device.type, enabled=False):
        u_f = torch.fft.rfft(u.to(dtype), n=n)  # (B, D, n // 2 + 1)
        k_f = torch.fft.rfft(k.to(dtype), n=n)  # (D, n // 2 + 1)
        y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]  # (B, D, T)
    return y.to(u.dtype)


@functools.cache
def _triton_conv():
    """chunklm.triton_conv.triton_causal_conv, or None where Triton is not installed."""
    try:
        from chunklm.triton_conv import triton_causal_conv
    except ImportError:
        return None
    return triton_causal_conv


def use_triton_conv(device: torch.device, dtype: torch.dtype, kernel_len: int) -> bool:
    """The fused Triton conv for short kernels on CUDA in bf16/fp16 (autocast); the FFT conv otherwise."""
    return (
        device.type == "cuda"
        and dtype in (torch.bfloat16, torch.float16)
        and kernel_len <= TRITON_MAX_K
        and _triton_conv() is not None
    )


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``causal_fft_conv(u, k)``, or the same convolution fused in Triton where ``use_triton_conv`` says."""
    if use_triton_conv(u.device, u.dtype, k.shape[-1]):
        return _triton_conv()(u, k)
    return causal_fft_conv(u, k)


def _offset_targets(windows: torch.Tensor, T: int, C: int) -> torch.Tensor:
    """(B, >= T + C) bytes -> (B, T, C) targets: [b, t, k - 1] = windows[b, t + k], k = 1 .. C."""
    if windows.shape[1] < T + C:
        raise ConfigError(
            f"windows must hold T + chunk = {T + C} bytes: got {windows.shape[1]}; "
            "sample windows of seq_len + chunk bytes (ByteCorpus does)"
        )
    return windows[:, 1 : T + C].unfold(1, C, 1)  # (B, T, C)


def _per_offset_nats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, V) logits, (B, T, C) targets -> (mean nats, (C,) mean nats per offset)."""
    B, T, C, V = logits.shape
    dtype = torch.promote_types(logits.dtype, torch.float32)
    ce = F.cross_entropy(logits.reshape(-1, V).to(dtype), targets.reshape(-1), reduction="none")
    per_offset = ce.view(B * T, C).mean(0)  # (C,)
    return per_offset.mean(), per_offset


def chunk_loss(logits: torch.Tensor, windows: torch.Tensor, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the chunk head, in nats.

    logits: (B, T, C, 256) from ``model(windows[:, :T])``; windows: (B, >= T + C) int64 bytes.
    The target of position t at offset k (1 .. C) is ``windows[:, t + k]``. Returns the mean over
    every ``stride``-th position and all offsets, and a (C,) tensor of mean nats per offset.
    """
    B, T, C, V = logits.shape
    targets = _offset_targets(windows, T, C)  # (B, T, C)
    return _per_offset_nats(logits[:, ::stride], targets[:, ::stride])


class _HeadCrossEntropy(torch.autograd.Function):
    """Linear head + cross-entropy over row blocks: the (N, C, V) logits never exist at once.

    The logits are the largest tensor of a step (C * 256 per position); streaming them in ~8 MB
    blocks, and recomputing them in backward, costs one extra matmul and saves most of the memory
    traffic that dominated a step at small d_model.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias, targets):  # h (N, D), weight (C V, D), targets (N, C)
        N, C = targets.shape
        rows = max(1, _HEAD_BLOCK // weight.shape[0])
        nats = torch.empty(N, C, dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
        lse = torch.empty_like(nats)
        for i in range(0, N, rows):
            z = F.linear(h[i : i + rows], weight, bias).view(-1, C, VOCAB).to(nats.dtype)  # (n, C, V)
            lse[i : i + rows] = torch.logsumexp(z, -1)
            nats[i : i + rows] = lse[i : i + rows] - z.gather(-1, targets[i : i + rows, :, None])[..., 0]
        ctx.save_for_backward(h, weight, bias, targets, lse)
        return nats

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):  # grad (N, C)
        h, weight, bias, targets, lse = ctx.saved_tensors
        rows = max(1, _HEAD_BLOCK // weight.shape[0])
        dh, dw, db = torch.empty_like(h, dtype=lse.dtype), torch.zeros_like(weight, dtype=lse.dtype), 0.0
        for i in range(0, h.shape[0], rows):
            z = F.linear(h[i : i + rows], weight, bias).view(-1, *lse.shape[1:], VOCAB).to(lse.dtype)
            p = torch.exp(z - lse[i : i + rows, :, None])  # (n, C, V) softmax
            p.scatter_add_(-1, targets[i : i + rows, :, None], -torch.ones_like(p[..., :1]))  # - onehot
            g = (p * grad[i : i + rows, :, None]).flatten(1)  # (n, C V): d nats / d logits
            dh[i : i + rows] = g @ weight.to(g.dtype)
            dw.addmm_(g.t(), h[i : i + rows].to(g.dtype))
            db = db + g.sum(0)
        return dh.to(h.dtype), dw.to(weight.dtype), db.to(bias.dtype), None


def head_loss(
    h: torch.Tensor, head: nn.Linear, windows: torch.Tensor, stride: int = 1, streamed: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``chunk_loss(head(h).view(B, T, C, 256), windows, stride)``, only at the scored positions.

    h: (B, T, D) final hidden states of ``windows[:, :T]``; head: Linear(D, C * 256). ``streamed``
    (default: on CPU) never materialises the logits; on a GPU, where kernel launches cost more than
    memory traffic, one large matmul is faster (measured on an H100).
    """
    B, T, D = h.shape
    C = head.out_features // VOCAB
    targets = _offset_targets(windows, T, C)[:, ::stride]  # (B, T', C)
    h = h[:, ::stride]  # (B, T', D)
    if not (h.is_cpu if streamed is None else streamed):
        return _per_offset_nats(head(h).view(B, h.shape[1], C, VOCAB), targets)  # (B, T', C, V) logits
    nats = _HeadCrossEntropy.apply(h.reshape(-1, D), head.weight, head.bias, targets.reshape(-1, C))  # (B T', C)
    per_offset = nats.mean(0)  # (C,)
    return per_offset.mean(), per_offset


class SpectralKernel(nn.Module):
    """D kernels of K causal taps, each parameterised by its own K // 2 + 1 rfft coefficients."""

    def __init__(self, d_model: int, kernel_len: int, seq_len: int, init_cutoff: int, kernel_init: KernelInit):
        super().__init__()
        self.kernel_len, self.seq_len = kernel_len, seq_len
        n_coef = kernel_len // 2 + 1
        n_init = n_coef if kernel_init is KernelInit.WHITE else self.n_keep(init_cutoff)
        # std per real component so that a kernel's energy sum_t k_t^2 is about 1 at init (Parseval)
        self.init_std = math.sqrt(kernel_len / (4 * n_init))
        coef = torch.zeros(d_model, n_coef, 2)  # (D, K // 2 + 1, re/im)
        coef[:, :n_init] = torch.randn(d_model, n_init, 2) * self.init_std
        self.coef = nn.Parameter(self._drop_unused_imag(coef))

    def _drop_unused_imag(self, coef: torch.Tensor) -> torch.Tensor:
        """irfft ignores the imaginary part of DC (and of Nyquist for even K): keep them at 0."""
        coef[:, 0, 1] = 0.0
        if self.kernel_len % 2 == 0:
            coef[:, -1, 1] = 0.0
        return coef

    def n_keep(self, cutoff: int) -> int:
        """Coefficients kept at a cutoff in seq_len-rfft bins: ceil(cutoff * K / seq_len), capped."""
        return min(self.kernel_len // 2 + 1, -(-cutoff * self.kernel_len // self.seq_len))

    def forward(self, cutoff: torch.Tensor) -> torch.Tensor:
        """cutoff: 0-d int64 tensor -> (D, K) kernels; masked coefficients get no gradient."""
        j = torch.arange(self.coef.shape[1], device=self.coef.device)
        mask = (j * self.seq_len < cutoff * self.kernel_len).to(self.coef.dtype)  # j < ceil(cutoff K / L)
        with torch.autocast(self.coef.device.type, enabled=False):
            c = torch.view_as_complex(self.coef * mask[:, None])  # (D, K // 2 + 1) complex
            return torch.fft.irfft(c, n=self.kernel_len)  # (D, K): exactly K causal taps

    @torch.no_grad()
    def open_bands(self, old_cutoff: int, new_cutoff: int, preserve: bool) -> None:
        """Set the coefficients a raise unmasks: zero (function unchanged) or noise at init scale."""
        lo, hi = self.n_keep(old_cutoff), self.n_keep(new_cutoff)
        if hi <= lo:
            return
        if preserve:
            self.coef[:, lo:hi] = 0.0
        else:
            noise = torch.randn(self.coef[:, lo:hi].shape, device=self.coef.device) * self.init_std
            self.coef[:, lo:hi] = noise.to(self.coef.dtype)
        self._drop_unused_imag(self.coef.data)


class LongConv(nn.Module):
    """Token mixing: projection -> causal long conv + per-channel skip -> sigmoid gate -> projection."""

    def __init__(self, config: ChunkLMConfig):
        super().__init__()
        D = config.d_model
        self.in_proj = nn.Linear(D, 2 * D)  # value and gate
        self.kernel = SpectralKernel(
            D, config.kernel_len, config.seq_len, config.resolved_init_cutoff, config.kernel_init
        )
        self.skip = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
        v, g = self.in_proj(x).chunk(2, dim=-1)  # (B, T, D) each
        k = self.kernel(cutoff)  # (D, K)
        k = torch.cat([k[:, :1] + self.skip[:, None], k[:, 1:]], dim=1)  # skip as tap 0: + skip * v
        y = causal_conv(v.transpose(1, 2), k)  # (B, D, T)
        y = y.transpose(1, 2) * torch.sigmoid(g)  # (B, T, D); the gate is per position: causal
        return self.out_proj(y)


class Block(nn.Module):
    """Pre-norm long conv with residual, then pre-norm feed-forward with residual."""

    def __init__(self, config: ChunkLMConfig):
        super().__init__()
        D = config.d_model
        self.norm1 = nn.LayerNorm(D)
        self.mix = LongConv(config)
        self.norm2 = nn.LayerNorm(D)
        self.ff = nn.Sequential(nn.Linear(D, config.ff_mult * D), nn.GELU(), nn.Linear(config.ff_mult * D, D))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mix(self.norm1(x), cutoff))
        return x + self.drop(self.ff(self.norm2(x)))


class ChunkLM(nn.Module):
    """Byte embedding -> n_layers blocks -> final norm -> chunk head predicting the next C bytes.

    A new model is at full cutoff; with ``kernel_init="smooth"`` its kernels are band-limited to
    ``init_cutoff`` (the higher coefficients are exactly zero). The curriculum's first phase sets
    its cutoff.
    """

    def __init__(self, config: ChunkLMConfig):
        super().__init__()
        self.config = config
        D = config.d_model
        self.embed = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.chunk * VOCAB)
        self.register_buffer("spectral_cutoff", torch.tensor(config.n_bins, dtype=torch.long))
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith(("out_proj.weight", "ff.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    @property
    def n_bins(self) -> int:
        """Bins of a seq_len-point rfft (513 for seq_len 1024): the unit of the cutoff."""
        return self.config.n_bins

    @property
    def cutoff(self) -> int:
        """The current cutoff in seq_len-rfft bins; ``n_bins`` when full."""
        return int(self.spectral_cutoff)

    def set_cutoff(self, n: int | None, preserve: bool = False) -> None:
        """Band-limit every kernel to the first ``n`` bins (1 <= n <= n_bins; None: full).

        Raising with ``preserve=False`` (default; the seed's behaviour, measured to end best) fills
        the newly opened coefficients with noise at the init's scale; ``preserve=True`` zeroes them,
        so the model's function is exactly unchanged (exact, and measured to end worse). Lowering
        masks bands; their coefficients are kept but unused.
        """
        n = self.n_bins if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n_bins:
            raise ConfigError(
                f"cutoff must be an int in [1, {self.n_bins}] or None for full: got {n!r}; "
                f"cutoffs count bins of the seq_len={self.config.seq_len} rfft"
            )
        old = self.cutoff
        for block in self.blocks:
            block.mix.kernel.open_bands(old, n, preserve)
        self.spectral_cutoff.fill_(n)
        logger.info("cutoff %d -> %d/%d (preserve=%s)", old, n, self.n_bins, preserve)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) input embeddings -> (B, T, D) final normed hidden states."""
        for block in self.blocks:
            x = block(x, self.spectral_cutoff)
        return self.norm(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) int64 bytes, T <= seq_len -> logits (B, T, C, 256).

        ``logits[:, t, k - 1]`` is the distribution of byte t + k (k = 1 .. C) given bytes 0 .. t.
        """
        B, T = idx.shape
        if T > self.config.seq_len:
            raise ConfigError(
                f"input length must be <= seq_len={self.config.seq_len}: got T={T}; "
                "crop the context to its last seq_len bytes"
            )
        h = self.hidden(self.embed(idx))  # (B, T, D)
        return self.head(h).view(B, T, self.config.chunk, VOCAB)  # (B, T, C, V)

    def loss(self, windows: torch.Tensor, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """windows: (B, T + C) bytes -> ``chunk_loss`` of the first T; the head runs only where scored."""
        C = self.config.chunk
        T = windows.shape[1] - C
        if not 1 <= T <= self.config.seq_len:
            raise ConfigError(
                f"windows must hold chunk + 1 .. seq_len + chunk = {C + 1} .. {self.config.seq_len + C} bytes: "
                f"got {windows.shape[1]}; sample windows of seq_len + chunk bytes (ByteCorpus does)"
            )
        return head_loss(self.hidden(self.embed(windows[:, :T])), self.head, windows, stride)
