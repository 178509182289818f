"""Time corpus_fingerprint on the default corpus (the stdlib *.py), against building a ByteCorpus
from its warm cache, alternating A/B for N rounds; medians. Usage: python -m benchmarks.bench_fingerprint [N]"""

import statistics
import sys
import time

from chunklm.corpus import ByteCorpus, corpus_fingerprint

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
ByteCorpus(None, seq_len=1024, chunk=16)  # the cache exists: what a run's start costs without the fingerprint
fp = corpus_fingerprint()
print(f"default corpus: {len(fp['files'])} files, {sum(f[2] for f in fp['files']) / 1e6:.1f} MB ({fp['paths'][0]})")
a, b = [], []
for _ in range(rounds):
    t = time.perf_counter()
    corpus_fingerprint()
    a.append(time.perf_counter() - t)
    t = time.perf_counter()
    ByteCorpus(None, seq_len=1024, chunk=16)
    b.append(time.perf_counter() - t)
print(f"corpus_fingerprint():          median {statistics.median(a):.3f} s  (all: {', '.join(f'{x:.3f}' for x in a)})")
print(f"ByteCorpus() from warm cache:  median {statistics.median(b):.3f} s  (all: {', '.join(f'{x:.3f}' for x in b)})")
print(f"fingerprint / corpus start: {statistics.median(a) / statistics.median(b):.1f}x")
