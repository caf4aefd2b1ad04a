"""The gap metrics: against an independent numpy / scipy / scikit-learn computation written from the
definitions, independent of batching, order, padding repeats and processes; known answers (one
distribution gives probe ~0.5 and MMD² ~0 whatever the number of references; a shift is detected);
bootstrap intervals that vanish on identical inputs and cover the truth."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from diffusion_link.evaluation.gap import Clips, GapMetrics, RetrievalRecall, gap_statistics

D = 8


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def clips(n=60, seed=0, shift=0.7, max_refs=4, dim=D):
    """Clips with 1..max_refs references each: (x (n, D), list of (R_i, D) arrays)."""
    g = np.random.default_rng(seed)
    z = g.standard_normal((n, dim))
    x = unit(z + 0.8 * g.standard_normal((n, dim)) + shift)
    refs = [unit(z[i] + 0.8 * g.standard_normal((g.integers(1, max_refs + 1), dim))) for i in range(n)]
    return x, refs


def padded(x, refs):
    r = max(len(c) for c in refs)
    out = np.zeros((len(x), r, x.shape[1]))
    for i, c in enumerate(refs):
        out[i, : len(c)] = c
    return torch.from_numpy(x), torch.from_numpy(out), torch.tensor([len(c) for c in refs])


def reference(x, refs, probe_seed=0):
    """Written from the definitions, with none of the package's code."""
    n = len(x)
    c = np.concatenate(refs)
    owner = np.repeat(np.arange(n), [len(r) for r in refs])
    out = {"paired_cosine": np.mean(np.sum(x[owner] * c, 1)), "centroid_distance": np.linalg.norm(x.mean(0) - c.mean(0))}
    gram = x @ x.T
    out["cone_cosine"] = (gram.sum() - np.trace(gram)) / (n * (n - 1))
    mu1, mu2, s1, s2 = x.mean(0), c.mean(0), np.cov(x, rowvar=False), np.cov(c, rowvar=False)
    out["frechet"] = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    pooled = np.concatenate([x, c])
    d2 = scipy.spatial.distance.cdist(pooled, pooled, "sqeuclidean")
    sigma2 = np.median(d2[np.triu_indices(len(pooled), 1)]) / 2
    k = np.exp(-d2 / (2 * sigma2))
    kxx, kcc, kxc = k[:n, :n], k[n:, n:], k[:n, n:]
    other_x = ~np.eye(n, dtype=bool)
    other_c = owner[:, None] != owner[None]  # pairs of texts from different clips
    other_xc = np.arange(n)[:, None] != owner[None]
    out["mmd"] = kxx[other_x].mean() + kcc[other_c].mean() - 2 * kxc[other_xc].mean()
    # probe: canonical order (audio vector, then first reference), half the clips train, by clip
    firsts = np.stack([r[0] for r in refs])
    canonical = np.lexsort(np.concatenate([x, firsts], axis=1).T[::-1])
    order = np.random.default_rng(probe_seed).permutation(n)
    train_clips = set(canonical[order[::2]])
    tr = np.array([i in train_clips for i in range(n)])
    probe = LogisticRegression(max_iter=1000, class_weight="balanced")
    probe.fit(np.concatenate([x[tr], c[tr[owner]]]), np.r_[np.zeros(tr.sum()), np.ones(tr[owner].sum())])
    te_x, te_c = x[~tr], c[~tr[owner]]
    out["probe_accuracy"] = balanced_accuracy_score(np.r_[np.zeros(len(te_x)), np.ones(len(te_c))], probe.predict(np.concatenate([te_x, te_c])))
    for kk in (1, 5, 10):  # brute force: rank of the best own reference among all texts
        hits = 0
        for i in range(n):
            best_own = max(float(x[i] @ t) for t in refs[i])
            hits += sum(float(x[i] @ t) > best_own for t in c) < kk
        out[f"R@{kk}"] = hits / n
    return out


def compute(x, refs, batch=None, **options):
    metric = GapMetrics(**options)
    xs, rs, ns = padded(x, refs)
    step = batch or len(x)
    for i in range(0, len(x), step):
        metric.update(xs[i : i + step], rs[i : i + step], ns[i : i + step])
    return {k: v.item() for k, v in metric.compute().items()}


def test_values_match_reference():
    x, refs = clips()
    got = compute(x, refs)
    for key, value in reference(x, refs).items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_batches_order_and_padding_repeats_do_not_change_the_result():
    x, refs = clips(seed=1)
    once = compute(x, refs)
    perm = np.random.default_rng(5).permutation(len(x))
    repeated = np.r_[perm, perm[:3]]  # a distributed sampler pads with repeats of some clips
    shuffled = compute(x[repeated], [refs[i] for i in repeated], batch=17)
    for key in once:
        assert shuffled[key] == pytest.approx(once[key], rel=1e-9, abs=1e-12), key


def test_one_distribution_reads_as_no_gap_and_a_shift_is_detected():
    """Audio and 5 references per clip drawn alike (pairs share a latent, as real pairs do): the old
    per-pair probe scored ~0.58 and MMD² ~6e-4 here; by clip they read as no gap."""
    n, dim, g = 1000, 64, np.random.default_rng(7)
    z = g.standard_normal((n, dim))
    x = unit(z + g.standard_normal((n, dim)))
    refs = list(unit(z[:, None] + g.standard_normal((n, 5, dim))))
    s = Clips.from_padded(*padded(x, refs))
    same = gap_statistics(s, only=("probe_accuracy", "mmd"))
    assert same["probe_accuracy"].value <= 0.53
    assert abs(same["mmd"].value) <= 1e-4
    shifted = Clips.from_padded(*padded(unit(z + g.standard_normal((n, dim)) + 0.5), refs))
    assert gap_statistics(shifted, only=("probe_accuracy",))["probe_accuracy"].value >= 0.9


def test_intervals_vanish_on_identical_inputs():
    x, _ = clips(n=80, seed=2)
    out = gap_statistics(Clips.from_padded(*padded(x, [r[None] for r in x])), bootstrap=200, only=("paired_cosine", "centroid_distance", "frechet", "mmd"))
    for key, e in out.items():
        assert e.hi - e.lo <= 1e-9, key
    assert out["paired_cosine"].value == pytest.approx(1.0)


def test_intervals_cover_the_true_value():
    """Paired cosine of noisy pairs: the population mean from 200,000 pairs; 50 samples of 150 clips."""
    dim, noise = 16, 1.2

    def sample(n, g):
        z = g.standard_normal((n, dim))
        return unit(z), unit(z[:, None] + noise * g.standard_normal((n, 1, dim)) / np.sqrt(dim))

    big_x, big_c = sample(200_000, np.random.default_rng(0))
    truth = float(np.mean(np.sum(big_x * big_c[:, 0], 1)))
    covered = 0
    for rep in range(50):
        x, c = sample(150, np.random.default_rng(rep + 1))
        e = gap_statistics(
            Clips.from_padded(*(torch.from_numpy(a) for a in (x, c)), torch.ones(150, dtype=torch.long)), bootstrap=300, seed=rep, only=("paired_cosine",)
        )["paired_cosine"]
        covered += e.lo <= truth <= e.hi
    assert covered >= 45


def test_retrieval_recall_matches_brute_force():
    x, refs = clips(n=30, seed=3, max_refs=5)
    metric = RetrievalRecall()
    xs, rs, ns = padded(x, refs)
    for i in range(0, 30, 7):
        metric.update(xs[i : i + 7], rs[i : i + 7], ns[i : i + 7])
    expected = {k: v for k, v in reference(x, refs).items() if k.startswith("R@")}
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(expected)


def _worker(rank, world, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x, refs = clips(seed=4)
    half = slice(rank * len(x) // 2, (rank + 1) * len(x) // 2)
    results[rank] = compute(x[half], refs[half], bootstrap=50)
    dist.destroy_process_group()


def test_two_processes_match_one_pass():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
    x, refs = clips(seed=4)
    single = compute(x, refs, bootstrap=50)
    for rank in (0, 1):
        for key, value in single.items():
            assert results[rank][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (rank, key)


def test_too_few_clips_is_a_clear_error():
    x, refs = clips(n=1)
    with pytest.raises(ValueError, match="at least 2 distinct clips"):
        compute(x, refs)


def test_seed_summary_gives_mean_and_spread(tmp_path, capsys):
    from diffusion_link.cli import main
    from diffusion_link.evaluation.report import COLUMNS, write_gap_report

    for seed, frechet in ((0, 0.10), (1, 0.14), (2, 0.12)):
        values = {key: 0.5 for key, _ in COLUMNS}
        write_gap_report({"mean shift": values, "Diffusion-Link": {**values, "frechet": frechet}}, tmp_path / f"seed-{seed}")
    with pytest.raises(SystemExit) as done:
        main(["seeds", *(str(tmp_path / f"seed-{s}") for s in range(3)), "--out", str(tmp_path / "all")])
    assert done.value.code == 0 and "0.1200 ± 0.0200" in capsys.readouterr().out
    import csv

    with open(tmp_path / "all" / "gap_report_seeds.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["Diffusion-Link"]["frechet_mean"]) == pytest.approx(0.12)
    assert float(rows["Diffusion-Link"]["frechet_std"]) == pytest.approx(0.02)
    assert rows["mean shift"]["seeds"] == "3"
    write_gap_report({"mean shift": values}, tmp_path / "other")
    with pytest.raises(ValueError, match="other methods"):
        main(["seeds", str(tmp_path / "seed-0"), str(tmp_path / "other"), "--out", str(tmp_path / "x")])


def test_sweep_plots_each_metric_against_the_setting(tmp_path, capsys):
    import csv

    from diffusion_link.cli import main
    from diffusion_link.evaluation.report import COLUMNS, write_gap_report

    for t in (200, 600, 1000):
        values = {key: 0.5 for key, _ in COLUMNS} | {"frechet": t / 1e4}
        write_gap_report({"mean shift": values, "Diffusion-Link": values}, tmp_path / f"t_start-{t}")
    with pytest.raises(SystemExit) as done:
        main(["sweep", *(str(tmp_path / f"t_start-{t}") for t in (1000, 200, 600)), "--out", str(tmp_path / "plots")])
    assert done.value.code == 0 and (tmp_path / "plots" / "sweep_t_start.png").stat().st_size > 10_000
    with open(tmp_path / "plots" / "sweep_t_start.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "Diffusion-Link"]
    assert [(r["t_start"], float(r["frechet"])) for r in rows] == [("200", 0.02), ("600", 0.06), ("1000", 0.1)]  # sorted by value
    with pytest.raises(ValueError, match="named <setting>-<value>"):
        main(["sweep", str(tmp_path / "plots"), str(tmp_path / "plots"), "--out", str(tmp_path / "x")])


def test_sweep_across_seeds_gives_mean_and_spread(tmp_path):
    import csv

    from diffusion_link.evaluation.report import COLUMNS, plot_sweep, write_gap_report

    folders = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.04)):  # the same sweep, three trained bridges
        for t in (200, 600):
            values = {key: 0.5 for key, _ in COLUMNS} | {"frechet": t / 1e4 + shift}
            write_gap_report({"Diffusion-Link": values}, tmp_path / f"seed-{seed}" / f"t_start-{t}")
            folders.append(tmp_path / f"seed-{seed}" / f"t_start-{t}")
    plot_sweep(folders, tmp_path / "plots")
    with open(tmp_path / "plots" / "sweep_t_start.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["t_start"], float(r["frechet"]), float(r["frechet_std"]), r["seeds"]) for r in rows] == [
        ("200", pytest.approx(0.04), pytest.approx(0.02), "3"),
        ("600", pytest.approx(0.08), pytest.approx(0.02), "3"),
    ]
    with pytest.raises(ValueError, match="same number of reports"):
        plot_sweep(folders[:-1], tmp_path / "x")
