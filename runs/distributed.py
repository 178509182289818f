"""torchrun: ranks, the device, collectives, agreement checks, and a teardown that never hangs.

Rank 0 alone prints and writes files. When any rank fails, it publishes a one-line reason in the
process group's key-value store and exits; every other rank watches that key from a thread and
exits within a second, printing that reason, instead of waiting in a collective for gloo's
30-minute timeout.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
import time
from typing import Any

from runs.errors import UsageError

__all__ = ["Distributed", "resolve_device", "resume_command"]

_ABORT_KEY = "chunklm/abort"
_POLL_S = 0.2


def resolve_device(device_arg: str, local_rank: int = 0, distributed: bool = False):
    """``--device``: auto, cpu, cuda, cuda:N; a clear :class:`UsageError` for anything else."""
    import torch

    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device_arg)
    except RuntimeError:
        raise UsageError(f"--device {device_arg}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device_arg}: chunklm trains on cpu or cuda only; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device_arg}: this torch build or machine has no CUDA device; use --device cpu (or auto)"
            )
        if distributed:
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices; pick one of cuda:0.."
            )
    return device


def resume_command(ckpt: Any, program: str = "chunklm") -> str:
    """The command that resumes this run: under torchrun, the same launch (processes, nodes)."""
    tail = f"{program} train --ckpt {shlex.quote(str(ckpt))} --resume"
    if "TORCHELASTIC_RUN_ID" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return tail
    nproc = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    nnodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    if nnodes == 1:
        return f"torchrun --standalone --nproc_per_node={nproc} --no-python {tail}"
    return f"torchrun --nnodes={nnodes} --nproc_per_node={nproc} (the rest of your launch as before) --no-python {tail}"


class Distributed:
    """The process group (gloo on CPU, NCCL on CUDA) when torchrun started us, else a no-op."""

    def __init__(self, device_arg: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world_size > 1
        self.device = resolve_device(device_arg, self.local_rank, self.active)
        self._store = None
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.set_device(self.device)
        if self.active:
            import torch.distributed as dist
            from torch.distributed import distributed_c10d

            backend = "nccl" if self.device.type == "cuda" else "gloo"
            attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
            if attempt > 0:
                # A restart (torchrun --max-restarts): torchrun hands the new workers the store of the failed
                # attempt, which still holds its keys (the process group's addresses, our abort key); read as
                # this attempt's, they connect to dead ranks or abort at once. One prefix per attempt.
                store, rank, world_size = next(dist.rendezvous("env://"))
                dist.init_process_group(
                    backend,
                    store=dist.PrefixStore(f"chunklm/attempt{attempt}/", store),
                    rank=rank,
                    world_size=world_size,
                )
            else:
                dist.init_process_group(backend)
            # No public accessor (stable since torch 1.x). The public route, torch.distributed.rendezvous plus
            # init_process_group(store=...), would re-implement init_process_group's defaults (store timeout, prefix).
            self._store = distributed_c10d._get_default_store()
            self._watcher = threading.Thread(target=self._watch, name="chunklm-abort-watch", daemon=True)
            self._watcher.start()

    # -- failing together ------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._watching.wait(_POLL_S):
            reason = self.aborted_by_other()
            if reason is not None:
                print(f"chunklm train: error: rank {self.rank} stopping: {reason}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(1)

    def aborted_by_other(self) -> str | None:
        """The reason another rank published, if it failed first (None too once the store is gone)."""
        with contextlib.suppress(Exception):
            if self._store is not None and self._store.check([_ABORT_KEY]):
                return self._store.get(_ABORT_KEY).decode(errors="replace")
        return None

    def abort(self, reason: str, code: int) -> None:
        """This rank failed (its error is printed): tell the others, then end this process now.

        No barrier and no teardown: the other ranks may be inside a collective this rank will never
        join. They read the reason and exit within a second.
        """
        self._watching.set()
        with contextlib.suppress(Exception):
            self._store.set(_ABORT_KEY, f"rank {self.rank} failed: {reason}")
            time.sleep(2 * _POLL_S + 0.5)  # let the others read it before our sockets close
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    # -- collectives -----------------------------------------------------------------------------

    def wrap(self, model):
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def reduce_mean(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world_size

    def check_same(self, what: str, text: str) -> None:
        """Raise on every rank when ranks disagree (never a silent divergence)."""
        texts = self.gather_to_all(text)
        if len(set(texts)) > 1:
            raise RuntimeError(f"ranks diverged on {what}: " + "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts)))

    def gather_to_all(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when any rank raised the flag (stop together at the same step)."""
        if not self.active:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        """The normal end, reached by every rank at the same point: barrier, then teardown.

        The watcher runs until every rank is in the barrier, so that a failure in what one rank does
        alone at the end (rank 0's plot) ends the others through it, instead of leaving them in the
        barrier until the backend's timeout (NCCL's 10 minutes, gloo's 30).
        """
        if self.active:
            import torch.distributed as dist

            dist.barrier()  # no rank tears the group down while another still talks to it
            self._watching.set()
            self._watcher.join()  # it must not be inside a store call when the group goes
            dist.destroy_process_group()
            self.active = False
