"""How realistic are the simulated frames? Compare the presets with real frames in ../shared/data/real.

Pairs compared (same geometry where the real data give it):

* ``pilatus6m`` preset with a thaumatin cell  vs  Pilatus3 6M thaumatin grid-scan stills (hits and blanks);
* ``eiger4m`` preset at the real frame's geometry  vs  the EIGER2 4M-ROI stream frame;
* ``jungfrau4m`` preset with a thermolysin cell  vs  the LCLS CSPAD thermolysin stills (other detector: only
  unit-free numbers are comparable).

The same measurements run on real and simulated frames: background level and radial profile (median per
resolution shell), noise (clipped variance over mean per shell: 1 for photon counting, the gain for integrating
detectors), and a simple common spot finder (per-shell robust mean and sigma, pixels above mean + 6 sigma,
8-connected groups of >= 2 pixels) giving spot count, spot size and peak height over the local noise.

Writes figures (frames side by side, radial profiles, peak-height histograms) into benchmarks/out/ and prints
a table. Run: ``python benchmarks/simulate_realism.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from braggml.simulate import Simulator, apply_overrides, get_preset

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
OUT = ROOT / "benchmarks" / "out"


@dataclass
class Frame:
    name: str
    image: NDArray[np.float64]
    bad: NDArray[np.bool_]
    radius_px: NDArray[np.float64]
    q_inv_a: NDArray[np.float64] | None  # 1/d per pixel, None when the geometry is unknown
    hit: bool
    truth_spots: int | None = None


def q_map(
    shape: tuple[int, int], beam_rc: tuple[float, float], pixel_mm: float, distance_mm: float, wavelength_a: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r = np.arange(shape[0])[:, None] - beam_rc[0]
    c = np.arange(shape[1])[None, :] - beam_rc[1]
    radius = np.hypot(r, c)
    two_theta = np.arctan2(radius * pixel_mm, distance_mm)
    return radius, 2.0 * np.sin(two_theta / 2.0) / wavelength_a


# ---------------------------------------------------------------------------------------------- real data
def load_thaumatin(numbers: list[int], hit: bool) -> list[Frame]:
    import fabio

    frames = []
    for n in numbers:
        img = fabio.open(REAL / "thaumatin_grid" / f"thau_3_2_{n:04d}.cbf.bz2").data.astype(np.float64)
        bad = (img < 0) | (img > 115897)
        radius, q = q_map(img.shape, (1306.96, 1261.61), 0.172, 351.0, 0.96859)
        frames.append(Frame(f"thaumatin {n:04d}", img, bad, radius, q, hit))
    return frames


def load_eiger2() -> list[Frame]:
    import h5py

    with h5py.File(REAL / "eiger2" / "eiger2_stream_5291452_f43.h5") as f:
        img = f["entry/data/data"][0].astype(np.float64)
    bad = img >= 65535
    # The header's beam centre (x 1041.2, y 1115.7) in this array's (row, col) order: pick the order that
    # makes the background most radially symmetric.
    best = None
    for beam in ((1115.75, 1041.25), (1041.25, 1115.75)):
        radius, q = q_map(img.shape, beam, 0.075, 337.0, 0.97625)
        shells = np.clip((radius // 20).astype(int), 0, 200)
        ok = ~bad & (img < 50)
        mean = np.bincount(shells[ok], img[ok], 201) / np.maximum(np.bincount(shells[ok], minlength=201), 1)
        resid = float(np.mean((img[ok] - mean[shells[ok]]) ** 2))
        if best is None or resid < best[0]:
            best = (resid, radius, q)
    assert best is not None
    return [Frame("eiger2 stream f43", img, bad, best[1], best[2], True)]


def load_cspad() -> list[Frame]:
    import h5py

    with h5py.File(REAL / "thermolysin_cspad" / "thermolysin_cspad.h5") as f:
        data = f["entry/data/data"][()].astype(np.float64)
        gap = f["entry/instrument/detector/pixel_mask"][()] > 0
        radius = f["entry/instrument/detector/radius_px"][()].astype(np.float64)
    out = []
    for i, img in enumerate(data):
        bad = gap | (img >= 16383) | (img < -400)
        out.append(Frame(f"cspad thermolysin {i}", img, bad, radius, None, True))
    return out


# ---------------------------------------------------------------------------------------------- simulated
def simulated(preset: str, overrides: dict, n_hits: int, n_blanks: int, seed: int = 11) -> list[Frame]:
    cfg = apply_overrides(get_preset(preset), overrides)
    sim = Simulator(cfg, seed=seed)
    lay = sim.layout
    frames: list[Frame] = []
    hits = blanks = 0
    k = 0
    while hits < n_hits or blanks < n_blanks:
        fr = sim.frame(k)
        k += 1
        hit = fr.info["hit"]
        if (hit and hits >= n_hits) or (not hit and blanks >= n_blanks):
            continue
        hits += hit
        blanks += not hit
        wavelength = fr.info["wavelength_a"]
        q = 2.0 * np.sin(lay.two_theta.astype(np.float64) / 2.0) / wavelength
        img = fr.image.astype(np.float64) / cfg.detector.gain_adu_per_photon
        n_truth = int((fr.spots["observable"] & (fr.spots["snr"] >= 3)).sum())
        frames.append(
            Frame(f"sim {preset} {fr.index}", img, lay.mask.copy(), lay.radius_px.astype(np.float64), q, hit, n_truth)
        )
    return frames


def truth_statistics(preset: str, overrides: dict, n_frames: int = 30, seed: int = 11) -> dict[str, float]:
    """Spread of the truth over a run: spots per hit (observable, SNR >= 3) and spot FWHM (pixels) on hits."""
    cfg = apply_overrides(get_preset(preset), overrides)
    sim = Simulator(cfg, seed=seed)
    counts, fwhm_rad, fwhm_tan, two_lattice = [], [], [], 0
    for k in range(n_frames):
        fr = sim.frame(k)
        if not fr.info["hit"]:
            continue
        two_lattice += fr.info["n_lattices"] == 2
        s = fr.spots
        good = s["observable"] & (s["snr"] >= 3)
        counts.append(int(good.sum()))
        fwhm_rad.extend(2.3548 * s["sigma_radial_px"][good])
        fwhm_tan.extend(2.3548 * s["sigma_tangential_px"][good])
    out: dict[str, float] = {"hits": len(counts), "two_lattice_hits": two_lattice}
    for name, values in (("spots", counts), ("fwhm_radial_px", fwhm_rad), ("fwhm_tangential_px", fwhm_tan)):
        for pct in (10, 50, 90):
            out[f"{name}_p{pct}"] = float(np.percentile(values, pct)) if values else float("nan")
    return out


# ---------------------------------------------------------------------------------------------- measurements
def shell_stats(fr: Frame, n_shells: int = 60) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Per-shell clipped mean and standard deviation (3 sigma, 3 passes), shells of equal width in radius."""
    ok = ~fr.bad
    rmax = float(fr.radius_px[ok].max())
    shell = np.minimum((fr.radius_px / rmax * n_shells).astype(int), n_shells - 1)
    s = shell[ok]
    v = fr.image[ok]
    keep = np.ones(v.size, bool)
    mean = std = np.zeros(n_shells)
    for _ in range(3):
        n = np.bincount(s[keep], minlength=n_shells).astype(float)
        m1 = np.bincount(s[keep], v[keep], n_shells) / np.maximum(n, 1)
        m2 = np.bincount(s[keep], v[keep] ** 2, n_shells) / np.maximum(n, 1)
        mean, std = m1, np.sqrt(np.maximum(m2 - m1**2, 0))
        keep = np.abs(v - mean[s]) <= 3 * np.maximum(std[s], 0.5)
    centre_r = (np.arange(n_shells) + 0.5) * rmax / n_shells
    if fr.q_inv_a is not None:
        qs = np.bincount(s, fr.q_inv_a[ok], n_shells) / np.maximum(np.bincount(s, minlength=n_shells), 1)
    else:
        qs = np.full(n_shells, np.nan)
    return centre_r, qs, mean, std


def find_spots(fr: Frame, n_sigma: float = 6.0) -> dict[str, NDArray]:
    n_shells = 60
    ok = ~fr.bad
    rmax = float(fr.radius_px[ok].max())
    shell = np.minimum((fr.radius_px / rmax * n_shells).astype(int), n_shells - 1)
    _, _, mean, std = shell_stats(fr, n_shells)
    bg = mean[shell]
    sigma = np.maximum(std[shell], np.sqrt(np.maximum(bg, 0.0)) if fr.name.startswith(("sim", "thau", "eiger")) else 0)
    sigma = np.maximum(sigma, 0.5)
    above = ok & (fr.image > bg + n_sigma * sigma) & (fr.image - bg >= 2.0)
    labels, n = ndimage.label(above, structure=np.ones((3, 3)))
    if n == 0:
        return {"size": np.zeros(0), "height": np.zeros(0), "height_sigma": np.zeros(0)}
    idx = np.arange(1, n + 1)
    size = ndimage.sum_labels(np.ones_like(fr.image), labels, idx)
    excess = fr.image - bg
    height = ndimage.maximum(excess, labels, idx)
    height_sigma = ndimage.maximum(excess / sigma, labels, idx)
    keep = size >= 2
    return {"size": size[keep], "height": height[keep], "height_sigma": height_sigma[keep]}


def spot_shapes(fr: Frame, beam_rc: tuple[float, float], half: int = 5, min_counts: float = 200.0) -> NDArray:
    """Radial and tangential FWHM (pixels) of the strong, isolated spots the common finder finds.

    Second moments of the background-subtracted counts over each spot's pixels and their 8 neighbours, in
    the frame of the line to the beam centre, less the 1/12 px^2 of the pixel area, as FWHM (2.355 sigma).
    Returns an (n, 2) array.
    """
    n_shells = 60
    ok = ~fr.bad
    rmax = float(fr.radius_px[ok].max())
    shell = np.minimum((fr.radius_px / rmax * n_shells).astype(int), n_shells - 1)
    _, _, mean, std = shell_stats(fr, n_shells)
    bg = mean[shell]
    sigma = np.maximum(np.maximum(std[shell], np.sqrt(np.maximum(bg, 0.0))), 0.5)
    above = ok & (fr.image > bg + 6.0 * sigma) & (fr.image - bg >= 2.0)
    labels, _ = ndimage.label(above, structure=np.ones((3, 3)))
    rows, cols = fr.image.shape
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        cr = (sl[0].start + sl[0].stop) // 2
        cc = (sl[1].start + sl[1].stop) // 2
        if cr < half or cc < half or cr + half >= rows or cc + half >= cols:
            continue
        box = (slice(cr - half, cr + half + 1), slice(cc - half, cc + half + 1))
        if fr.bad[box].any() or np.count_nonzero(np.unique(labels[box])) > 1:
            continue
        weight = np.maximum(fr.image[box] - bg[box], 0.0) * ndimage.binary_dilation(labels[box] == i + 1)
        total = weight.sum()
        if total < min_counts:
            continue
        rr, cc_grid = np.mgrid[box]
        mr, mc = (weight * rr).sum() / total, (weight * cc_grid).sum() / total
        radial = np.array([mr - beam_rc[0], mc - beam_rc[1]])
        radial /= np.linalg.norm(radial)
        offsets = np.stack([rr - mr, cc_grid - mc], axis=-1)
        var_r = (weight * (offsets @ radial) ** 2).sum() / total
        var_t = (weight * (offsets @ np.array([-radial[1], radial[0]])) ** 2).sum() / total
        out.append(2.3548 * np.sqrt(np.maximum([var_r - 1 / 12, var_t - 1 / 12], 0.0)))
    return np.asarray(out).reshape(-1, 2)


def summarise(frames: list[Frame]) -> dict[str, float]:
    med, fano, counts, sizes, hs, hsig, truth = [], [], [], [], [], [], []
    for fr in frames:
        ok = ~fr.bad
        med.append(float(np.median(fr.image[ok])))
        _, _, mean, std = shell_stats(fr)
        good = mean > 0.3
        fano.append(float(np.median(std[good] ** 2 / mean[good])) if good.any() else np.nan)
        if fr.hit:
            spots = find_spots(fr)
            counts.append(spots["size"].size)
            sizes.extend(spots["size"])
            hs.extend(spots["height"])
            hsig.extend(spots["height_sigma"])
            if fr.truth_spots is not None:
                truth.append(fr.truth_spots)
    hs_a = np.asarray(hs) if hs else np.array([np.nan])
    hsig_a = np.asarray(hsig) if hsig else np.array([np.nan])
    return {
        "frames": len(frames),
        "median_value": float(np.mean(med)),
        "var_over_mean": float(np.nanmedian(fano)) if np.isfinite(fano).any() else np.nan,
        "spots_per_hit": float(np.mean(counts)) if counts else np.nan,
        "truth_snr3_per_hit": float(np.mean(truth)) if truth else np.nan,
        "spot_px": float(np.mean(sizes)) if sizes else np.nan,
        "height_p50": float(np.percentile(hs_a, 50)),
        "height_p90": float(np.percentile(hs_a, 90)),
        "height_sigma_p50": float(np.percentile(hsig_a, 50)),
        "height_sigma_p90": float(np.percentile(hsig_a, 90)),
    }


# ---------------------------------------------------------------------------------------------- figures
def show(ax, fr: Frame, vmax: float, crop: int | None = None) -> None:
    img = np.where(fr.bad, np.nan, np.log10(np.maximum(fr.image, 0) + 1))
    if crop:
        centre = np.unravel_index(np.argmin(np.where(fr.bad, np.inf, fr.radius_px)), fr.radius_px.shape)
        r0 = max(0, centre[0] - crop)
        c0 = max(0, centre[1] - crop)
        img = img[r0 : r0 + 2 * crop, c0 : c0 + 2 * crop]
    ax.imshow(img, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(fr.name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def side_by_side(path: Path, real: Frame, sim: Frame, crop: int | None, units: str, same_scale: bool = True) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6))
    FigureCanvasAgg(fig)
    for i, fr in enumerate((real, sim)):
        ref = real if same_scale else fr
        vmax = float(np.log10(max(np.percentile(ref.image[~ref.bad], 99.9), 2) + 1))
        ax = fig.add_subplot(1, 2, i + 1)
        show(ax, fr, vmax, crop)
    scale = "same colour scale" if same_scale else "each on its own colour scale (99.9th percentile)"
    fig.suptitle(f"log10({units} + 1), {scale}; masked pixels white", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def profiles(path: Path, groups: dict[str, list[Frame]], ylabel: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for label, frames in groups.items():
        for j, fr in enumerate(frames):
            r, q, mean, std = shell_stats(fr)
            x = q if fr.q_inv_a is not None else r
            style = "-" if label.startswith("real") else "--"
            kwargs = {"label": label} if j == 0 else {}
            color = {"real hits": "C0", "real blanks": "C2", "sim hits": "C1", "sim blanks": "C3"}.get(label, "C4")
            ax1.plot(x, mean, style, color=color, lw=1, **kwargs)
            good = mean > 0.3
            ax2.plot(x[good], (std[good] ** 2 / mean[good]), style, color=color, lw=1, **kwargs)
    xl = "q = 1/d (1/Angstrom)" if all(f.q_inv_a is not None for fs in groups.values() for f in fs) else "q or radius"
    ax1.set_xlabel(xl)
    ax1.set_ylabel(ylabel)
    ax1.set_title("background: clipped mean per shell", fontsize=9)
    ax2.set_xlabel(xl)
    ax2.set_ylabel("variance / mean")
    ax2.set_title("noise: clipped variance over mean per shell", fontsize=9)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def height_histograms(path: Path, pairs: dict[str, tuple[list[Frame], list[Frame]]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(pairs), 3.5))
    FigureCanvasAgg(fig)
    for i, (name, (real, sim)) in enumerate(pairs.items()):
        ax = fig.add_subplot(1, len(pairs), i + 1)
        for label, frames, color in (("real", real, "C0"), ("sim", sim, "C1")):
            h = np.concatenate([find_spots(f)["height_sigma"] for f in frames if f.hit] or [np.zeros(0)])
            if h.size:
                bins = np.logspace(np.log10(6), np.log10(max(h.max(), 10)), 30)
                ax.hist(h, bins=bins, histtype="step", density=True, color=color, label=f"{label} ({h.size} spots)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spot peak height / local noise sigma")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    if not REAL.is_dir():
        raise SystemExit(f"real frames not found at {REAL}")
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}

    thau_hits = load_thaumatin([3, 6, 9, 12], hit=True)
    thau_blanks = load_thaumatin([16, 18], hit=False)
    thau_cell = {"crystal": {"cell": [57.8, 57.8, 150.2, 90.0, 90.0, 90.0]}}
    pil = simulated("pilatus6m", thau_cell, n_hits=6, n_blanks=2)
    pil_hits = [f for f in pil if f.hit]
    pil_blanks = [f for f in pil if not f.hit]
    results["real thaumatin Pilatus6M hits"] = summarise(thau_hits)
    results["sim pilatus6m hits (thaumatin cell)"] = summarise(pil_hits)
    beam_thau = (1306.96, 1261.61)
    shape_sets = (("real thaumatin Pilatus6M hits", thau_hits), ("sim pilatus6m hits (thaumatin cell)", pil_hits))
    for label, frames in shape_sets:
        shapes = np.concatenate([spot_shapes(f, beam_thau) for f in frames])
        for j, direction in enumerate(("radial", "tangential")):
            for pct in (10, 50, 90):
                results[label][f"fwhm_{direction}_p{pct}"] = float(np.percentile(shapes[:, j], pct))
        results[label]["n_shape_spots"] = float(shapes.shape[0])
    results["real thaumatin Pilatus6M blanks"] = summarise(thau_blanks)
    results["sim pilatus6m blanks"] = summarise(pil_blanks)
    best_sim = max(pil_hits, key=lambda f: f.truth_spots or 0)
    side_by_side(OUT / "realism_pilatus6m_full.png", thau_hits[1], best_sim, None, "counts")
    side_by_side(OUT / "realism_pilatus6m_centre.png", thau_hits[1], best_sim, 400, "counts")
    profiles(
        OUT / "realism_pilatus6m_profiles.png",
        {"real hits": thau_hits, "real blanks": thau_blanks, "sim hits": pil_hits, "sim blanks": pil_blanks},
        "counts per pixel",
    )

    eig_real = load_eiger2()
    eig_overrides = {
        "beam": {"energy_kev": 12.7},
        "detector": {"distance_mm": 337.0},
        "crystal": {"cell": [93.0, 93.0, 130.0, 90.0, 90.0, 120.0]},
    }
    eig = simulated("eiger4m", eig_overrides, n_hits=3, n_blanks=0)
    results["real EIGER2 4M stream frame"] = summarise(eig_real)
    results["sim eiger4m hits (337 mm, thermolysin cell)"] = summarise(eig)
    side_by_side(
        OUT / "realism_eiger4m_centre.png", eig_real[0], max(eig, key=lambda f: f.truth_spots or 0), 500, "counts"
    )
    profiles(OUT / "realism_eiger4m_profiles.png", {"real hits": eig_real, "sim hits": eig}, "counts per pixel")

    cspad = load_cspad()
    jf_overrides = {"crystal": {"cell": [93.0, 93.0, 130.0, 90.0, 90.0, 120.0]}}
    jf = simulated("jungfrau4m", jf_overrides, n_hits=4, n_blanks=0)
    results["real CSPAD thermolysin (ADU)"] = summarise(cspad)
    results["sim jungfrau4m hits (photons)"] = summarise(jf)
    profiles(OUT / "realism_xfel_profiles.png", {"real hits": cspad, "sim hits": jf}, "value per pixel")
    height_histograms(
        OUT / "realism_peak_heights.png",
        {
            "thaumatin Pilatus 6M": (thau_hits, pil_hits),
            "EIGER2 4M": (eig_real, eig),
            "XFEL CSPAD vs Jungfrau": (cspad, jf),
        },
    )
    side_by_side(
        OUT / "realism_xfel_full.png",
        cspad[0],
        max(jf, key=lambda f: f.truth_spots or 0),
        None,
        "ADU (real) / photons (sim)",
        same_scale=False,
    )

    cols = [
        "frames",
        "median_value",
        "var_over_mean",
        "spots_per_hit",
        "truth_snr3_per_hit",
        "spot_px",
        "height_p50",
        "height_p90",
        "height_sigma_p50",
        "height_sigma_p90",
    ]
    print(f"{'data set':<46}" + "".join(f"{c:>12}" for c in cols))
    for name, row in results.items():
        print(f"{name:<46}" + "".join(f"{row[c]:>12.3g}" for c in cols))
    truth = {
        "pilatus6m (thaumatin cell)": truth_statistics("pilatus6m", thau_cell),
        "eiger4m (337 mm, thermolysin cell)": truth_statistics("eiger4m", eig_overrides),
        "jungfrau4m (thermolysin cell)": truth_statistics("jungfrau4m", jf_overrides),
    }
    tcols = list(next(iter(truth.values())))
    print(f"\n{'truth over 30 frames':<46}" + "".join(f"{c.replace('_px', ''):>14}" for c in tcols))
    for name, row in truth.items():
        print(f"{name:<46}" + "".join(f"{row[c]:>14.3g}" for c in tcols))
    print("\nmeasured FWHM (px) of strong isolated spots, radial p10/p50/p90 | tangential p10/p50/p90")
    for name, row in results.items():
        if "fwhm_radial_p50" in row:
            rad = " / ".join(f"{row[f'fwhm_radial_p{p}']:.2f}" for p in (10, 50, 90))
            tan = " / ".join(f"{row[f'fwhm_tangential_p{p}']:.2f}" for p in (10, 50, 90))
            print(f"{name:<46} {rad} | {tan}  ({row['n_shape_spots']:.0f} spots)")
    (OUT / "realism.json").write_text(json.dumps({"measured": results, "truth": truth}, indent=1))
    print(f"figures and realism.json in {OUT}")


if __name__ == "__main__":
    main()
