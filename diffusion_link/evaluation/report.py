"""The gap report: a table (CSV, Markdown) and figures (PCA, histograms of paired cosine)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from diffusion_link.evaluation.degenerate import collapsed_rows

COLUMNS = [
    ("paired_cosine", "paired cos ↑"),
    ("centroid_distance", "centroid dist ↓"),
    ("cone_cosine", "cone cos"),
    ("probe_accuracy", "probe acc ↓ (0.5 best)"),
    ("frechet", "Fréchet ↓"),
    ("mmd", "MMD² ↓"),
    ("R@1", "R@1 ↑"),
    ("R@5", "R@5 ↑"),
    ("R@10", "R@10 ↑"),
]

#: how "better" reads for each column: a larger value, a smaller one, one closer to 0.5, or no order
BETTER = {
    "paired_cosine": "max",
    "centroid_distance": "min",
    "probe_accuracy": "half",
    "frechet": "min",
    "mmd": "min",
    "R@1": "max",
    "R@5": "max",
    "R@10": "max",
}


#: the columns a gap table writes per metric, where every row has them: the value, its interval, the
#: bias-corrected value (Fréchet), the difference from the baseline row and its paired interval
SUFFIXES = ("", "_lo", "_hi", "_bc", "_diff", "_diff_lo", "_diff_hi")
#: each row's spread and whether it collapsed (:func:`diffusion_link.evaluation.degenerate.collapse_flags`), where given
SPREAD_COLUMNS = ("mean_cosine", "variance_ratio", "collapsed")


def check_one_kernel(results: dict[str, dict[str, float]]) -> float | None:
    """The one RBF bandwidth every row's MMD² was computed with (``mmd_sigma``); rows computed with
    different bandwidths (or some with a recorded one, some without) measure different things: refused."""
    sigmas = {values.get("mmd_sigma") for values in results.values()}
    if len(sigmas) > 1:
        raise ValueError(f"the rows' MMD² were computed with different kernels (mmd_sigma {sorted(map(str, sigmas))}); one report needs one σ for every row")
    return sigmas.pop() if sigmas else None


def write_gap_report(
    results: dict[str, dict[str, float]],
    out_dir: str | Path,
    notes: list[str] | None = None,
    baseline: str | None = None,
    compare_to: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """``gap_report.csv`` (each metric with ``_lo`` / ``_hi`` (its interval), ``_bc`` and ``_diff``,
    ``_diff_lo``, ``_diff_hi`` (the paired difference from ``baseline``) where computed, ``_vs_<slug>``, ``_lo``,
    ``_hi`` (from each row of ``compare_to``), ``mmd_sigma``, and ``SPREAD_COLUMNS`` where given) and
    ``gap_report.md`` (the table, the paired differences from ``baseline`` and from each ``compare_to`` row, a
    warning per collapsed row, the notes), one row per method, in order."""
    from diffusion_link.evaluation.gap_versus import check_compare_to, versus_suffix

    sigma = check_one_kernel(results)
    against = check_compare_to(compare_to, results, "the gap report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffixes = [*SUFFIXES, *(versus_suffix(n) + s for n in against for s in ("", "_lo", "_hi"))]
    keys = [k for key, _ in COLUMNS for k in (key + s for s in suffixes) if all(k in v for v in results.values())]
    keys += ["mmd_sigma"] if sigma is not None else []
    keys += [k for k in SPREAD_COLUMNS if all(k in v for v in results.values())]
    with open(out / "gap_report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method"] + keys)
        for method, values in results.items():
            writer.writerow([method] + [f"{values[key]:.6g}" for key in keys])
    parts = [format_gap_table(results)]
    if baseline is not None and any(f"{key}_diff_lo" in v for v in results.values() for key, _ in COLUMNS):
        parts.append(
            f"Paired difference from {baseline} (row − {baseline}; 95 % interval over the same resamples of the same clips):\n\n"
            + format_paired_table(results, baseline)
        )
    for name in against:  # compare_to: the same, from a named row (e.g. the regressor)
        parts.append(
            f"Paired difference from {name} (compare_to; row − {name}; 95 % interval over the same resamples of the same clips; "
            "bold: excludes 0 on the better side):\n\n" + format_paired_table(results, name, versus_suffix(name))
        )
    notes = [*(f"WARNING: {w}." for w in collapsed_rows(results)), *(notes or [])]
    (out / "gap_report.md").write_text("\n\n".join(parts) + "\n" + "".join(f"\n{n}" for n in notes) + "\n")
    return out / "gap_report.csv", out / "gap_report.md"


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.4f}, {hi:.4f}]"


def better_than_baseline(values: dict[str, float], key: str, suffix: str = "_diff") -> bool:
    """The row's paired interval of its difference from the baseline (``suffix``: ``_diff``, raw audio; a
    ``_vs_<slug>``: a compare_to row) excludes 0 on the better side (probe accuracy: lower, i.e. closer to
    0.5 from above)."""
    order = BETTER.get(key)
    if order is None or f"{key}{suffix}_lo" not in values:
        return False
    lo, hi = values[f"{key}{suffix}_lo"], values[f"{key}{suffix}_hi"]
    return lo > 0 if order == "max" else hi < 0


def gap_table_cells(results: dict[str, dict[str, float]]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Each method's cells, in ``COLUMNS`` order: ("value [lo, hi]" where intervals exist, marked), where a
    cell is marked when the row's paired interval of its difference from the baseline row excludes 0 on
    the better side (without paired differences nothing is marked). The Markdown table and the HTML
    report both render these."""
    rows = []
    for method, values in results.items():
        cells = []
        for key, _ in COLUMNS:
            cell = f"{values.get(f'{key}_bc', values[key]):.4f}"  # a biased metric (Fréchet): its bias-corrected value, inside its interval
            if f"{key}_lo" in values:
                cell += " " + _interval(values[f"{key}_lo"], values[f"{key}_hi"])
            cells.append((cell, better_than_baseline(values, key)))
        rows.append((method, cells))
    return rows


def format_gap_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown of :func:`gap_table_cells` (marked cells in bold)."""
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = ["| " + method + " | " + " | ".join(f"**{c}**" if bold else c for c, bold in cells) + " |" for method, cells in gap_table_cells(results)]
    return "\n".join([header, rule, *rows])


def format_paired_table(results: dict[str, dict[str, float]], baseline: str, suffix: str = "_diff") -> str:
    """Markdown: each row's difference from ``baseline`` (its ``suffix`` columns) with its paired interval
    (bold: excludes 0 on the better side)."""
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    rows = []
    for method, values in results.items():
        if method == baseline:
            continue
        cells = []
        for key, _ in COLUMNS:
            cell = f"{values.get(f'{key}{suffix}', float('nan')):+.4f}"
            if f"{key}{suffix}_lo" in values:
                cell += " " + _interval(values[f"{key}{suffix}_lo"], values[f"{key}{suffix}_hi"])
            cells.append(f"**{cell}**" if better_than_baseline(values, key, suffix) else cell)
        rows.append("| " + method + " | " + " | ".join(cells) + " |")
    return "\n".join([header, "|---|" + "---:|" * len(COLUMNS), *rows])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pca_figure(text: np.ndarray, audio: np.ndarray, bridged: dict[str, np.ndarray]):
    """2-D PCA fitted on the text embeddings; text, raw audio and each bridge's output projected on it."""
    mean = text.mean(0)
    _, _, vt = np.linalg.svd(text - mean, full_matrices=False)
    axes = np.zeros((2, text.shape[1]))  # fewer than 3 texts (a DDP rank's share of val) span < 2 axes: 0 on the rest
    axes[: min(2, len(vt))] = vt[:2]
    project = lambda x: (x - mean) @ axes.T  # noqa: E731
    fig, ax = _pyplot().subplots(figsize=(6.5, 5.5))
    ax.scatter(*project(text).T, s=8, alpha=0.5, label="text", c="tab:blue")
    ax.scatter(*project(audio).T, s=8, alpha=0.5, label="audio (raw)", c="tab:red")
    for (name, x), colour in zip(bridged.items(), ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive"]):
        ax.scatter(*project(x).T, s=8, alpha=0.5, label=f"audio → {name}", c=colour)
    ax.set_xlabel("PC 1 (of text)")
    ax.set_ylabel("PC 2 (of text)")
    ax.set_title("Modality gap: PCA fitted on text embeddings")
    ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    return fig


def cosine_figure(cosines: dict[str, np.ndarray]):
    """Histograms of paired cosine cos(x_i, c_i), one per method, on shared bins."""
    low = min(float(v.min()) for v in cosines.values())
    high = max(float(v.max()) for v in cosines.values())
    bins = np.linspace(low, high, 40)
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for name, values in cosines.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.6, label=f"{name} (mean {values.mean():.3f})")
    ax.set_xlabel("cos(audio or bridged audio, paired text)")
    ax.set_ylabel("pairs")
    ax.set_title("Paired cosine similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, close: bool = True) -> Path:
    fig.savefig(path, dpi=120)
    if close:
        _pyplot().close(fig)
    return Path(path)


def read_gap_report(path: str | Path) -> dict[str, dict[str, float]]:
    """``gap_report.csv`` (or the folder holding it) as ``{method: {column: value}}``, in table order."""
    path = Path(path)
    path = path / "gap_report.csv" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no gap report at {path}: run the gap analysis (diffusion-link test) for it first")
    with open(path, newline="") as f:
        return {row.pop("method"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(f)}


def defined_mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over the seeds where a value is defined (NaN where fewer than one / two)."""
    values = values[~np.isnan(values)]
    return (values.mean() if len(values) else np.nan), (values.std(ddof=1) if len(values) > 1 else np.nan)


def across_seeds(tables: list[tuple[Path, dict[str, dict[str, float]]]], keys: list[str], what: str = "tables") -> dict[str, dict[str, np.ndarray]]:
    """``{method: {key: values, one per seed}}`` from one ``{method: {key: value}}`` table per seed (its
    path first, for the errors); every seed's table must hold the same methods, in the same order."""
    if len(tables) < 2:
        raise ValueError(f"a spread across seeds needs at least two {what}, got {len(tables)}")
    first_path, first = tables[0]
    for path, table in tables[1:]:
        if list(table) != list(first):
            raise ValueError(f"{path} compares other methods than {first_path}: {list(table)} vs {list(first)}")
    return {method: {key: np.array([float(t[method].get(key, np.nan)) for _, t in tables]) for key in keys} for method in first}


def plot_sweep(report_dirs: list[str | Path], out_dir: str | Path, metrics: tuple[str, ...] = ("frechet", "mmd", "centroid_distance", "R@1")) -> Path:
    """One setting swept over several gap analyses (folders named ``<setting>-<value>``, as the Makefile's
    ablations write them): each metric against the value, one line per method. With one report per
    value the bands are the reports' 95 % intervals; with several (the same sweep for several seeds,
    e.g. ``seed-0/t_start-600`` and ``seed-1/t_start-600``) the line is the mean across seeds and the
    band ± one standard deviation. Writes ``sweep_<setting>.png`` and ``sweep_<setting>.csv``."""
    by_value: dict[float, list[dict]] = {}
    settings = set()
    for folder in map(Path, report_dirs):
        setting, _, value = folder.name.rpartition("-")
        if not setting:
            raise ValueError(f"{folder}: sweep folders are named <setting>-<value>, e.g. t_start-600")
        settings.add(setting)
        by_value.setdefault(float(value), []).append(read_gap_report(folder))
    if len(settings) != 1 or len(by_value) < 2:
        raise ValueError(f"a sweep needs two or more values of one setting, got {sorted(settings)} ({len(by_value)} values)")
    setting, xs = settings.pop(), sorted(by_value)
    seeds = {len(tables) for tables in by_value.values()}
    if len(seeds) != 1:
        raise ValueError(f"every value of the sweep needs the same number of reports (seeds), got {sorted(seeds)}")
    seeds = seeds.pop()
    methods = list(by_value[xs[0]][0])
    for value, tables in by_value.items():
        if any(list(t) != methods for t in tables):
            raise ValueError(f"the reports of {setting}={value:g} compare other methods than {methods}")

    def stat(value: float, method: str, metric: str) -> tuple[float, float, float]:
        """(line, band low, band high) at one value."""
        values = np.array([t[method][metric] for t in by_value[value]])
        if seeds > 1:
            mean, std = values.mean(), values.std(ddof=1)
            return mean, mean - std, mean + std
        row = by_value[value][0][method]
        return row[metric], row.get(f"{metric}_lo", np.nan), row.get(f"{metric}_hi", np.nan)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"sweep_{setting}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        spread = [f"{m}_std" for m in metrics] if seeds > 1 else []
        writer.writerow([setting, "method", *metrics, *spread, "seeds"])
        for value in xs:
            for method in methods:
                cells = [stat(value, method, m) for m in metrics]
                stds = [f"{(hi - lo) / 2:.6g}" for _, lo, hi in cells] if seeds > 1 else []
                writer.writerow([f"{value:g}", method, *(f"{c[0]:.6g}" for c in cells), *stds, seeds])
    titles = dict(COLUMNS)
    fig, axes = _pyplot().subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for method in methods:
            line, lo, hi = zip(*(stat(x, method, metric) for x in xs))
            drawn = ax.plot(xs, line, marker="o", markersize=3, label=method)[0]
            if not np.isnan(lo).all():
                ax.fill_between(xs, lo, hi, color=drawn.get_color(), alpha=0.15)
        ax.set_xlabel(setting)
        ax.set_title(titles.get(metric, metric) + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""))
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / f"sweep_{setting}.png")
