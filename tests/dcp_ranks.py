"""Two ranks whose engines disagree (rank 1 made one step more) save with DCP; each writes what it raised.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dcp_ranks.py OUT_DIR

Each rank writes ``OUT_DIR/rank<R>.txt``: the ``CurriculumError`` the save raised, or ``saved``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.integrations.dcp import EngineState
from policies import MinSteps

out = Path(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
engine = CurriculumEngine(
    Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinSteps(2)], when=Point.STEP_END)])
)
engine.start()
for _ in range(2 + rank):
    engine.step_end(loss=1.0)
try:
    dcp.save({"engine": EngineState(engine)}, checkpoint_id=out / "ckpt")
    result = "saved"
except CurriculumError as exc:
    result = str(exc)
(out / f"rank{rank}.txt").write_text(result)
dist.barrier()
dist.destroy_process_group()
