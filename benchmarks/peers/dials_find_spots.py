"""Run DIALS spot finding on image files; write the spot centroids and the wall time.

Runs with the system Python that carries DIALS (``/usr/bin/python3``)::

    /usr/bin/python3 benchmarks/peers/dials_find_spots.py OUT.npz WORKDIR ALGORITHM PARAM=VALUE... -- FILES...

It runs ``dials.import`` on FILES (as one image set), then ``dials.find_spots nproc=1
spotfinder.threshold.algorithm=ALGORITHM PARAM=VALUE...``, and stores per-spot ``frame`` (index of the file),
``row``, ``col`` (array indices of the image: DIALS' pixel centres at +0.5 are shifted back, and the spots of a
detector that DIALS splits into several panels are moved by their panel's ``raw_image_offset``), ``panel``,
``n_pixels`` and ``intensity``, with ``seconds`` (wall time of dials.find_spots, start-up included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    out, workdir, algorithm, *params = argv[:sep]
    files = argv[sep + 1 :]
    os.makedirs(workdir, exist_ok=True)
    subprocess.run(["dials.import", *files], cwd=workdir, check=True, capture_output=True)
    if not os.path.exists(os.path.join(workdir, "imported.expt")):
        raise SystemExit(f"dials.import could not read {files}")
    cmd = [
        "dials.find_spots",
        "imported.expt",
        "nproc=1",
        f"spotfinder.threshold.algorithm={algorithm}",
        *params,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
    seconds = time.perf_counter() - t0

    from dials.array_family import flex

    refl = flex.reflection_table.from_file(os.path.join(workdir, "strong.refl"))
    xyz = np.array(refl["xyzobs.px.value"])  # x = fast, y = slow, z = image
    bbox = np.array(refl["bbox"])
    # stills: one experiment per file, in the order given ("id"); a sequence: the image number (z)
    ids = np.array(refl["id"]) if "id" in refl else np.zeros(len(xyz), int)
    if len(files) > 1 and len(set(ids.tolist())) <= 1 and len(xyz):
        frame = np.floor(xyz[:, 2]).astype(int)
        frame -= frame.min()
    else:
        frame = ids.astype(int)
    npix = np.array(refl["n_signal"]) if "n_signal" in refl else np.zeros(len(xyz))
    from dxtbx.model.experiment_list import ExperimentListFactory

    experiments = ExperimentListFactory.from_json_file(os.path.join(workdir, "imported.expt"), check_format=False)
    offset = np.array([p.get_raw_image_offset() for p in experiments[0].detector], float).reshape(-1, 2)  # fast, slow
    panel = np.array(refl["panel"], int) if len(xyz) else np.zeros(0, int)
    np.savez(
        out,
        frame=frame,
        panel=panel,
        row=xyz[:, 1] - 0.5 + offset[panel, 1] if len(xyz) else np.zeros(0),
        col=xyz[:, 0] - 0.5 + offset[panel, 0] if len(xyz) else np.zeros(0),
        n_pixels=npix,
        intensity=np.array(refl["intensity.sum.value"]),
        bbox=bbox,
        seconds=seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
