"""The gap report: a table (CSV, Markdown) and figures (PCA, histograms of paired cosine)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

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


def write_gap_report(results: dict[str, dict[str, float]], out_dir: str | Path, notes: list[str] | None = None) -> tuple[Path, Path]:
    """``gap_report.csv`` and ``gap_report.md`` with one row per method, in the given order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gap_report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method"] + [key for key, _ in COLUMNS])
        for method, values in results.items():
            writer.writerow([method] + [f"{values[key]:.6g}" for key, _ in COLUMNS])
    (out / "gap_report.md").write_text(format_gap_table(results) + "\n" + "".join(f"\n{n}" for n in notes or []) + "\n")
    return out / "gap_report.csv", out / "gap_report.md"


def format_gap_table(results: dict[str, dict[str, float]]) -> str:
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = ["| " + method + " | " + " | ".join(f"{values[key]:.4f}" for key, _ in COLUMNS) + " |" for method, values in results.items()]
    return "\n".join([header, rule, *rows])


def plot_pca(text: np.ndarray, audio: np.ndarray, bridged: dict[str, np.ndarray], path: str | Path) -> Path:
    """2-D PCA fitted on the text embeddings; text, raw audio and each bridge's output projected on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = text.mean(0)
    _, _, vt = np.linalg.svd(text - mean, full_matrices=False)
    project = lambda x: (x - mean) @ vt[:2].T  # noqa: E731
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(*project(text).T, s=8, alpha=0.5, label="text", c="tab:blue")
    ax.scatter(*project(audio).T, s=8, alpha=0.5, label="audio (raw)", c="tab:red")
    for (name, x), colour in zip(bridged.items(), ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive"]):
        ax.scatter(*project(x).T, s=8, alpha=0.5, label=f"audio → {name}", c=colour)
    ax.set_xlabel("PC 1 (of text)")
    ax.set_ylabel("PC 2 (of text)")
    ax.set_title("Modality gap: PCA fitted on text embeddings")
    ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_cosine_histograms(cosines: dict[str, np.ndarray], path: str | Path) -> Path:
    """Histograms of paired cosine cos(x_i, c_i), one per method, on shared bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = min(float(v.min()) for v in cosines.values())
    high = max(float(v.max()) for v in cosines.values())
    bins = np.linspace(low, high, 40)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in cosines.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.6, label=f"{name} (mean {values.mean():.3f})")
    ax.set_xlabel("cos(audio or bridged audio, paired text)")
    ax.set_ylabel("pairs")
    ax.set_title("Paired cosine similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
