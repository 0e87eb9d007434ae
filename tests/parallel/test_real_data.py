"""Real detector files (../shared/data/real): many single-frame CBF files with two workers equal one worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from braggml.parallel import ExecutionConfig, run_find
from braggml.pipeline import FindJob, PreparedRun


@pytest.mark.slow
def test_thaumatin_cbf_files_two_workers_equal_one(real_data: Path):
    files = sorted((real_data / "thaumatin_grid").glob("*.cbf.bz2"))[:2]
    if len(files) < 2:
        pytest.skip("thaumatin_grid CBF files not available")
    run = PreparedRun(FindJob(inputs=tuple(map(str, files)), finder="peakfinder8"), warn_without_geometry=False)
    reference, summary = run.run()
    assert summary.n_frames == 2 and len(reference) > 100  # protein diffraction: many spots per frame
    outcome = run_find(run, ExecutionConfig(workers=2))
    assert outcome.peaks.equals(reference) and outcome.peaks.frames == reference.frames
    assert outcome.n_chunks == 2  # one chunk per single-frame file
