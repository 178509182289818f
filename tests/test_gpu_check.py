"""benchmarks/gpu_check.py's time limit: --max-minutes starts no section once it has passed."""

import json

from benchmarks.gpu_check import SECTIONS, main


def test_no_section_starts_after_max_minutes(tmp_path):
    """--max-minutes 0 skips every section with a line naming the limit, in the report and in its JSON."""
    main(["--quick", "--max-minutes", "0", "--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    for section in SECTIONS:
        assert f"SKIPPED ({section}): --max-minutes 0 reached" in report, section
        assert data[section] == {"skipped": "--max-minutes"}


def test_a_section_within_max_minutes_runs(tmp_path):
    """Within the limit a section runs and reports its time (the cli section: on CPU it only says it needs CUDA)."""
    main(["--quick", "--only", "cli", "--max-minutes", "60", "--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    assert "--max-minutes" not in report and "(cli: " in report
