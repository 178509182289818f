"""ChunkLM: a byte-level language model whose token mixing is a causal FFT long convolution.

The model (:class:`ChunkLM`, configured by :class:`ChunkLMConfig`), its data
(:class:`ByteCorpus`), loss (:func:`chunk_loss`), metric (:func:`evaluate_bpb`, with an optional
:class:`EMA` of the weights) and sampler (:func:`generate`).
"""

from chunklm.config import ChunkLMConfig, ConfigError, KernelInit
from chunklm.corpus import ByteCorpus, CorpusError
from chunklm.evaluate import EMA, evaluate_bpb
from chunklm.generate import generate
from chunklm.model import ChunkLM, causal_fft_conv, chunk_loss

__all__ = [
    "ConfigError",
    "KernelInit",
    "ChunkLMConfig",
    "causal_fft_conv",
    "chunk_loss",
    "ChunkLM",
    "CorpusError",
    "ByteCorpus",
    "EMA",
    "evaluate_bpb",
    "generate",
]
