"""Run OM's compiled peakfinder8 on frames stored in an .npz file; write its peaks and timings.

Runs in OM's own environment (``benchmarks/.venv-om``, numpy < 2)::

    benchmarks/.venv-om/bin/python benchmarks/peers/om_peakfinder8.py IN.npz OUT.npz

``IN.npz`` holds ``data`` (N, H, W) float32, ``mask`` (N, H, W) int8 (1 = use), ``radius`` (H, W) float32 and
``params`` (a JSON string with max_num_peaks, adc_threshold, minimum_snr, min_pixel_count,
max_pixel_count, local_bg_radius and repeats). ``OUT.npz`` gets per-peak ``frame``, ``row``, ``col``,
``intensity``, ``n_pixels``, ``max_value``, ``sigma``, ``snr`` and ``seconds`` (best time per frame).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from om.algorithms._crystallography import peakfinder_8


def main(argv: list[str]) -> int:
    src, dst = argv
    inp = np.load(src)
    params = json.loads(str(inp["params"]))
    data = inp["data"].astype(np.float32)
    mask = inp["mask"].astype(np.int8)
    radius = np.ascontiguousarray(inp["radius"], dtype=np.float32)
    n, h, w = data.shape
    out = {k: [] for k in ("frame", "row", "col", "intensity", "n_pixels", "max_value", "sigma", "snr")}
    seconds = []
    for k in range(n):
        frame = np.ascontiguousarray(data[k])
        m = np.ascontiguousarray(mask[k])
        best = np.inf
        for _ in range(int(params.get("repeats", 3))):
            t0 = time.perf_counter()
            res = peakfinder_8(
                int(params["max_num_peaks"]),
                frame,
                m,
                radius,
                0,
                None,
                None,
                0,
                w,
                h,
                1,
                1,
                float(params["adc_threshold"]),
                float(params["minimum_snr"]),
                int(params["min_pixel_count"]),
                int(params["max_pixel_count"]),
                int(params["local_bg_radius"]),
            )
            best = min(best, time.perf_counter() - t0)
        seconds.append(best)
        fs, ss, tot, _idx, npix, maxi, sigma, snr = (np.asarray(x) for x in res[:8])
        out["frame"].append(np.full(fs.size, k))
        out["row"].append(ss)
        out["col"].append(fs)
        out["intensity"].append(tot)
        out["n_pixels"].append(npix)
        out["max_value"].append(maxi)
        out["sigma"].append(sigma)
        out["snr"].append(snr)
    np.savez(dst, seconds=np.asarray(seconds), **{k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
