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
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold

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
    out = {"paired_cosine": np.mean(np.sum(x[owner] * c, 1))}
    # centroid: the unbiased ||mu_x - mu_c||^2 over pairs of distinct clips (texts weighted per reference), rooted
    same_clip = owner[:, None] == owner[None]
    xx = (x @ x.T)[~np.eye(n, dtype=bool)].mean()
    cc = (c @ c.T)[~same_clip].mean()
    xc = (x @ c.T)[np.arange(n)[:, None] != owner[None]].mean()
    out["centroid_distance"] = np.sqrt(max(xx + cc - 2 * xc, 0.0))
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
    # probe: canonical order (audio vector, then first reference); two folds of clips, each scored by a
    # probe trained on the other, C chosen by 3-fold cross-validation grouped by clip, on standardised features
    firsts = np.stack([r[0] for r in refs])
    canonical = np.lexsort(np.concatenate([x, firsts], axis=1).T[::-1])
    fold = np.random.default_rng(probe_seed).permutation(n) % 2  # by canonical position
    own_c = np.repeat(np.arange(n), [len(refs[i]) for i in canonical])
    feats = np.concatenate([x[canonical], *(refs[i] for i in canonical)])
    labels, group = np.r_[np.zeros(n), np.ones(len(c))], np.r_[np.arange(n), own_c]
    pred = np.empty(len(feats))
    for f in (0, 1):
        tr = fold[group] != f
        z = (feats - feats[tr].mean(0)) / (feats[tr].std(0) + 1e-12)
        cv = list(GroupKFold(3).split(z[tr], labels[tr], group[tr]))
        probe = LogisticRegressionCV(
            Cs=list(np.logspace(-4, 2, 7)),
            cv=cv,
            class_weight="balanced",
            scoring="balanced_accuracy",
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
            max_iter=500,
        )
        pred[~tr] = probe.fit(z[tr], labels[tr]).predict(z[~tr])
    out["probe_accuracy"] = balanced_accuracy_score(labels, pred)
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


def test_probe_known_answers_small_shift_detected():
    """Identical distributions: balanced accuracy <= 0.55. A shift of known small size: 0.35 added along
    one axis to unit vectors whose coordinates spread by ~1/√D ≈ 0.18 (then renormalised): detected, >= 0.8."""
    from sklearn.linear_model import LogisticRegression

    from diffusion_link.evaluation.gap_probe import CrossFittedProbe

    n, dim, g = 300, 32, np.random.default_rng(11)
    z = g.standard_normal((n, dim))
    refs = unit(z[:, None] + g.standard_normal((n, 3, dim)))
    shift = np.zeros(dim)
    shift[0] = 0.35
    rows = {"same": unit(z + g.standard_normal((n, dim))), "shifted": unit(z + g.standard_normal((n, dim))) + shift}
    got = {}
    for name, x in rows.items():
        s = Clips.from_padded(*padded(x, list(refs)), torch.arange(n))
        got[name] = float(CrossFittedProbe(s.x, s.c, s.owner, seed=0)(torch.ones(1, n, dtype=torch.float64))[0])
    assert got["same"] <= 0.55 and got["shifted"] >= 0.8, got
    # the old probe: half the clips, C = 1, unstandardised unit vectors
    s = Clips.from_padded(*padded(rows["shifted"], list(refs)), torch.arange(n))
    train = np.zeros(n, dtype=bool)
    train[np.random.default_rng(0).permutation(n)[::2]] = True
    own = s.owner.numpy()
    old = LogisticRegression(class_weight="balanced", max_iter=1000).fit(
        np.concatenate([s.x.numpy()[train], s.c.numpy()[train[own]]]), np.r_[np.zeros(train.sum()), np.ones(train[own].sum())]
    )
    old_acc = balanced_accuracy_score(
        np.r_[np.zeros((~train).sum()), np.ones((~train[own]).sum())], old.predict(np.concatenate([s.x.numpy()[~train], s.c.numpy()[~train[own]]]))
    )
    print(f"probe: one distribution {got['same']:.3f}, shift 0.35 {got['shifted']:.3f} (old probe: {old_acc:.3f})")


def test_intervals_vanish_on_identical_inputs():
    x, _ = clips(n=80, seed=2)
    out = gap_statistics(Clips.from_padded(*padded(x, [r[None] for r in x])), bootstrap=200, only=("paired_cosine", "centroid_distance", "frechet", "mmd"))
    for key, e in out.items():
        assert e.hi - e.lo <= 1e-9, key
    assert out["paired_cosine"].value == pytest.approx(1.0)


@pytest.fixture
def one_thread():
    """Thousands of tiny LAPACK calls: with the machine's other threads busy, one thread is ~100x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


COVER_DIM, COVER_CLIPS, COVER_REFS, SIGMA = 8, 100, 3, 1.0


def _cover_sample(n, g, shift, refs=COVER_REFS):
    """Clips whose audio and references share a latent; ``shift`` moves the audio along one axis."""
    z = g.standard_normal((n, COVER_DIM))
    offset = np.zeros(COVER_DIM)
    offset[0] = shift
    return unit(z + g.standard_normal((n, COVER_DIM)) + offset), unit(z[:, None] + g.standard_normal((n, refs, COVER_DIM)))


def _as_clips(x, c):
    return Clips.from_padded(torch.from_numpy(x), torch.from_numpy(c), torch.full((len(x),), c.shape[1]), torch.arange(len(x)))


def _population(shift):
    """Each metric's population value: from 2,500 clips (R@k from 300 independent sets of the test's size;
    the probe's is 0.5 with one distribution and is measured per repetition otherwise)."""
    x, c = _cover_sample(2500, np.random.default_rng(123), shift, refs=1)
    big = gap_statistics(_as_clips(x, c), mmd_sigma=SIGMA, only=("paired_cosine", "cone_cosine", "mmd", "centroid_distance", "frechet"))
    truth = {k: e.value for k, e in big.items()}
    if shift == 0:  # one distribution: known exactly
        truth.update(centroid_distance=0.0, frechet=0.0, mmd=0.0, probe_accuracy=0.5)
    g = np.random.default_rng(321)
    recalls = [gap_statistics(_as_clips(*_cover_sample(COVER_CLIPS, g, shift)), only=("R@1", "R@5", "R@10")) for _ in range(300)]
    truth.update({k: float(np.mean([r[k].value for r in recalls])) for k in ("R@1", "R@5", "R@10")})
    return truth, (x, c)


@pytest.mark.slow  # make test-full: ~1.5 min per case on 2 busy cores (50 x 200 resamples, 50 cross-fitted probes)
@pytest.mark.parametrize("shift", [0.0, 0.6])
def test_intervals_cover_the_population_value(shift, one_thread):
    """50 repetitions of 100 clips (D = 8, 3 references each): every metric's 95 % interval covers its
    population value at least 45 times (90 %), Fréchet and the centroid distance included. Measured
    (one distribution / shift 0.6): paired cos 46/45, centroid 50/48, cone 50/47, probe 48/46, Fréchet
    50/48, MMD² 50/47, R@1 48/45, R@5 45/48, R@10 46/48. Fréchet's old percentile interval covered 0 of
    50 in both cases: it lies above the population value, as it did on the demo (100 clips, D = 512,
    one distribution: 0.055, [0.086, 0.112])."""
    from diffusion_link.evaluation.gap import bootstrap_weights, frechet
    from diffusion_link.evaluation.gap_probe import CrossFittedProbe

    truth, (big_x, big_c) = _population(shift)
    covered = dict.fromkeys([*truth, "probe_accuracy"], 0)
    percentile_frechet = 0
    reps = 50
    for rep in range(reps):
        s = _as_clips(*_cover_sample(COVER_CLIPS, np.random.default_rng(rep + 1), shift))
        out = gap_statistics(s, bootstrap=200, seed=rep, probe_seed=rep, mmd_sigma=SIGMA)
        if shift:  # the probe's population value: each fold's fitted probe on the 2,500 clips
            probe = CrossFittedProbe(s.x, s.c, s.owner, seed=rep)
            truth["probe_accuracy"] = probe.population_accuracy(torch.from_numpy(big_x), torch.from_numpy(big_c.reshape(-1, COVER_DIM)))
        for key in covered:
            covered[key] += out[key].lo <= truth[key] <= out[key].hi
        replicates = frechet(s, bootstrap_weights(s.n, 200, rep)).numpy()
        percentile_frechet += bool(np.quantile(replicates, 0.025) <= truth["frechet"] <= np.quantile(replicates, 0.975))
    print(f"shift {shift}: coverage of {reps}: {covered}; Fréchet's old percentile interval: {percentile_frechet}; population: {truth}")
    assert all(v >= 0.9 * reps for v in covered.values()), covered
    if shift == 0:
        assert percentile_frechet < 0.5 * reps  # the old interval fails this case


def test_rows_are_paired_whatever_order_their_clips_come_in():
    """Two rows keyed by clip: feeding one row's clips (with their references) permuted, in other batches,
    with a padding repeat, changes no value, interval or paired interval of the table."""
    from diffusion_link.evaluation.gap import gap_table

    x, refs = clips(n=60, seed=8)
    bridged = unit(x + 0.3 * np.random.default_rng(9).standard_normal(x.shape))

    def row(a, order, batch):
        metric = GapMetrics()
        xs, rs, ns = padded(a[order], [refs[i] for i in order])
        for i in range(0, len(order), batch):
            metric.update(xs[i : i + batch], rs[i : i + batch], ns[i : i + batch], key=torch.as_tensor(order[i : i + batch]))
        return metric.clips()

    straight = np.arange(60)
    perm = np.random.default_rng(3).permutation(60)
    options = dict(baseline="raw", bootstrap=100, seed=1, mmd_sigma=0.9)
    once = gap_table({"raw": row(x, straight, 60), "bridge": row(bridged, straight, 60)}, **options)
    permuted = gap_table({"raw": row(x, straight, 60), "bridge": row(bridged, np.r_[perm, perm[:2]], 7)}, **options)
    assert set(once["bridge"]) >= {"frechet_diff_lo", "probe_accuracy_diff_hi", "R@1_diff", "centroid_distance_diff_lo", "mmd_sigma"}
    for key, value in once["bridge"].items():
        assert permuted["bridge"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # the paired interval is the interval of the difference, narrower than the two rows' intervals suggest
    assert (
        once["bridge"]["paired_cosine_diff_hi"] - once["bridge"]["paired_cosine_diff_lo"]
        < once["bridge"]["paired_cosine_hi"] - once["bridge"]["paired_cosine_lo"]
    )
    with pytest.raises(ValueError, match="cannot be paired"):  # other clips (or none keyed) are refused
        gap_table({"raw": row(x, straight, 60), "bridge": row(bridged, straight[:50], 60)}, **options)


def test_one_kernel_per_report(tmp_path):
    """Every row's MMD² uses one recorded σ; a report whose rows used different σ is refused."""
    from diffusion_link.evaluation.gap import gap_table
    from diffusion_link.evaluation.report import write_gap_report

    x, refs = clips(n=40, seed=10)
    s = Clips.from_padded(*padded(x, refs), torch.arange(40))
    t = Clips.from_padded(*padded(unit(x + 0.5), refs), torch.arange(40))
    table = gap_table({"raw": s, "shifted": t}, baseline="raw", mmd_sigma=0.7)
    assert table["raw"]["mmd_sigma"] == table["shifted"]["mmd_sigma"] == 0.7
    assert table["shifted"]["mmd"] == pytest.approx(gap_statistics(t, mmd_sigma=0.7, only=("mmd",))["mmd"].value)
    assert table["shifted"]["mmd"] != pytest.approx(gap_statistics(t, only=("mmd",))["mmd"].value)  # its own median σ differs
    default = gap_table({"raw": s, "shifted": t}, baseline="raw")  # no σ given: the baseline's, for both rows
    assert default["raw"]["mmd_sigma"] == default["shifted"]["mmd_sigma"]
    write_gap_report(table, tmp_path / "ok", baseline="raw")
    assert "mmd_sigma" in (tmp_path / "ok" / "gap_report.csv").read_text().splitlines()[0]
    separately = {name: {**gap_table({name: c})[name]} for name, c in (("raw", s), ("shifted", t))}  # each its own σ
    with pytest.raises(ValueError, match="different kernels"):
        write_gap_report(separately, tmp_path / "bad")


def test_report_prints_intervals_and_marks_only_paired_wins(tmp_path):
    """[lo, hi], never ± (Fréchet's interval need not be symmetric about its value); bold = the paired
    interval of the difference from raw audio excludes 0 on the better side."""
    from diffusion_link.evaluation.gap import gap_table
    from diffusion_link.evaluation.report import write_gap_report

    x, refs = clips(n=60, seed=12, shift=0.7)
    aligned = unit(np.stack([r.mean(0) for r in refs]) + 0.05)
    rows = {n: Clips.from_padded(*padded(a, refs), torch.arange(60)) for n, a in (("raw", x), ("bridge", aligned))}
    write_gap_report(gap_table(rows, baseline="raw", bootstrap=100), tmp_path, baseline="raw")
    md = (tmp_path / "gap_report.md").read_text()
    assert "±" not in md and "Paired difference from raw" in md
    bridge = next(line for line in md.splitlines() if line.startswith("| bridge"))
    raw = next(line for line in md.splitlines() if line.startswith("| raw"))
    assert "**" in bridge and "**" not in raw and "[" in raw
    assert {"frechet_bc", "frechet_diff_lo", "centroid_distance_diff_hi"} <= set((tmp_path / "gap_report.csv").read_text().splitlines()[0].split(","))


def test_recall_counts_an_identical_caption_as_a_hit():
    """Template captions repeat word for word. Clip 0 and clip 1 share the caption "a dog barks"; the
    copy under clip 1 was embedded in another batch (a 1e-5 difference) and ranks just above clip 0's
    own: with the caption texts that copy is clip 0's too (a hit); exactly equal embeddings count as the
    same text without them."""
    g = np.random.default_rng(13)
    dog = unit(g.standard_normal(D))
    others = unit(g.standard_normal((3, D)))
    refs = [dog[None], np.stack([dog + 1e-5 * unit(g.standard_normal(D)), others[0]]), others[1:2], others[2:3]]
    refs = [unit(r) for r in refs]
    x = np.stack([refs[1][0], unit(others[0] + 0.1), unit(others[1]), unit(others[2])])
    assert x[0] @ refs[1][0] > x[0] @ refs[0][0]  # the copy ranks first for clip 0
    captions = [["a dog barks"], ["a  dog barks", "a cat meows"], ["rain"], ["a car passes"]]

    def r1(texts, r):
        metric = GapMetrics()
        xs, rs, ns = padded(x, r)
        metric.update(xs, rs, ns, key=torch.arange(4), captions=texts)
        return metric.compute()["R@1"].item()

    assert r1(None, refs) == 0.75  # without texts the near-copy is a competitor: clip 0 misses
    assert r1(captions, refs) == 1.0
    exact = [refs[0], np.stack([refs[0][0], refs[1][1]]), refs[2], refs[3]]
    assert r1(None, exact) == 1.0  # an identical embedding is the same text


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


def test_seed_summary_gives_each_paired_difference_and_in_how_many_seeds_it_holds(tmp_path):
    """Per comparison (from raw audio, from a compare_to row): mean ± std of the per-seed difference, and how many
    seeds' paired intervals exclude 0 on the better / worse side (Fréchet: lower is better)."""
    import csv

    from diffusion_link.evaluation.gap_seeds import comparisons, summarise_seeds
    from diffusion_link.evaluation.report import COLUMNS, write_gap_report

    def row(frechet, diff, vs):
        values = {key: 0.5 for key, _ in COLUMNS} | {"frechet": frechet, "frechet_bc": frechet - 0.01}
        values |= {f"{k}_diff": 0.0 for k, _ in COLUMNS} | {f"{k}_diff_lo": 0.0 for k, _ in COLUMNS} | {f"{k}_diff_hi": 0.0 for k, _ in COLUMNS}
        vs_cols = {f"{k}_vs_regressor{e}": 0.0 for k, _ in COLUMNS for e in ("", "_lo", "_hi")}
        return (
            values
            | vs_cols
            | {"frechet_diff": diff[0], "frechet_diff_lo": diff[1], "frechet_diff_hi": diff[2]}
            | {"frechet_vs_regressor": vs[0], "frechet_vs_regressor_lo": vs[1], "frechet_vs_regressor_hi": vs[2]}
        )

    zero = (0.0, 0.0, 0.0)
    # Diffusion-Link vs raw: better (interval below 0) in seeds 0 and 1, not in 2; vs the regressor: worse in seed 2
    per_seed = {
        0: ((-0.10, -0.12, -0.08), (-0.01, -0.02, 0.005)),
        1: ((-0.08, -0.10, -0.06), (0.0, -0.01, 0.01)),
        2: ((-0.03, -0.07, 0.01), (0.02, 0.01, 0.03)),
    }
    for seed, (diff, vs) in per_seed.items():
        rows = {
            "raw audio": row(0.2, zero, (0.1, 0.08, 0.12)),
            "regressor": row(0.1, (-0.1, -0.12, -0.08), zero),
            "Diffusion-Link": row(0.2 + diff[0], diff, vs),
        }
        write_gap_report(rows, tmp_path / f"seed-{seed}", baseline="raw audio", compare_to=("regressor",))
    from diffusion_link.evaluation.report import read_gap_report

    table = read_gap_report(tmp_path / "seed-0")
    assert comparisons(table) == [("_diff", "raw audio"), ("_vs_regressor", "regressor")]
    table["raw audio"] |= {"R@1_diff": float("nan"), "R@1_diff_lo": float("nan"), "R@1_diff_hi": float("nan")}  # undefined on it
    table["mean shift"] = {**table["regressor"], "frechet_vs_regressor": 0.0}  # another row equal to the regressor
    assert comparisons(table) == [("_diff", "raw audio"), ("_vs_regressor", "regressor")]
    csv_path, md_path = summarise_seeds([tmp_path / f"seed-{s}" for s in range(3)], tmp_path / "all")
    with open(csv_path) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["raw audio"]["frechet_mean"]) == pytest.approx(0.19)  # Fréchet bias-corrected, as each seed's table shows it
    dl = rows["Diffusion-Link"]
    assert float(dl["frechet_diff_mean"]) == pytest.approx(-0.07) and float(dl["frechet_diff_std"]) == pytest.approx(np.std([-0.1, -0.08, -0.03], ddof=1))
    assert (dl["frechet_diff_better"], dl["frechet_diff_worse"]) == ("2", "0")
    assert (dl["frechet_vs_regressor_better"], dl["frechet_vs_regressor_worse"]) == ("0", "1")
    assert (rows["raw audio"]["frechet_vs_regressor_better"], rows["raw audio"]["frechet_vs_regressor_worse"]) == ("0", "3")
    md = md_path.read_text()
    assert "Paired difference from raw audio" in md and "Paired difference from regressor" in md
    assert "-0.0700 ± 0.0361 (2 / 0)" in md


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


# --- sample spread (evaluation/gap_spread.py) ---------------------------------------------------------


def test_sample_spread_known_answers():
    from diffusion_link.evaluation.gap_spread import SampleSpread, clip_spread

    g = torch.Generator().manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(20, 5, D, generator=g), dim=-1)
    n_refs = torch.tensor([5, 3, 1, 2] * 5)
    one = torch.nn.functional.normalize(torch.randn(20, 1, D, generator=g), dim=-1)
    same = clip_spread(one.expand(-1, 4, -1), refs, n_refs)  # a deterministic bridge: n copies of one point
    assert torch.allclose(same["spread_samples"], torch.zeros(20, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(same["cover_n"], same["cover_1"])
    own = clip_spread(refs, refs, torch.full((20,), 5))  # the references as the samples: each covered exactly
    assert torch.allclose(own["cover_n"], torch.ones(20, dtype=torch.float64)) and torch.allclose(own["spread_samples"], own["spread_refs"])
    # by hand, one clip: refs e1, e2 (cos 0); samples e1, (e1 + e2)/sqrt 2
    e = torch.eye(D, dtype=torch.float64)
    s = torch.stack([e[0], (e[0] + e[1]) / 2**0.5])[None]
    r = torch.stack([e[0], e[1], e[2]])[None]
    v = clip_spread(s, r, torch.tensor([2]))
    h = 2**-0.5
    assert v["spread_samples"].item() == pytest.approx(1 - h) and v["spread_refs"].item() == pytest.approx(1.0)
    assert v["cover_n"].item() == pytest.approx((1 + h) / 2) and v["cover_1"].item() == pytest.approx(((1 + h) / 2 + h / 2) / 2)
    assert torch.isnan(clip_spread(s, r, torch.tensor([1]))["spread_refs"]).all()  # one reference: no spread
    metric = SampleSpread()  # batched = at once; clips with one reference left out of spread_refs only
    for i in range(0, 20, 7):
        metric.update(one[i : i + 7].expand(-1, 4, -1), refs[i : i + 7], n_refs[i : i + 7])
    out = metric.compute()
    assert out["samples"] == 4 and out["spread_samples"] == pytest.approx(0.0, abs=1e-12)
    assert out["spread_refs"] == pytest.approx(same["spread_refs"][n_refs > 1].mean().item())
    assert out["cover_1"] == pytest.approx(same["cover_1"].mean().item())


def test_samples_from_the_references_distribution_cover_them_better_than_one_point():
    """Each clip's references come from a mixture of three directions; n = 5 samples from the same mixture
    cover the references better than any one point can: the best single point for MSE (the references'
    mean direction, what a regressor learns) and one of the samples alone."""
    from diffusion_link.evaluation.gap_spread import clip_spread

    g = torch.Generator().manual_seed(1)
    modes = torch.nn.functional.normalize(torch.randn(200, 3, D, generator=g), dim=-1)

    def draw(k):
        pick = torch.randint(0, 3, (200, k), generator=g)
        x = modes.gather(1, pick[..., None].expand(-1, -1, D)) + 0.05 * torch.randn(200, k, D, generator=g)
        return torch.nn.functional.normalize(x, dim=-1)

    refs, samples, n_refs = draw(5), draw(5), torch.full((200,), 5)
    mean = torch.nn.functional.normalize(refs.mean(1, keepdim=True), dim=-1)
    drawn, centre = clip_spread(samples, refs, n_refs), clip_spread(mean, refs, n_refs)
    assert drawn["cover_n"].mean() > centre["cover_n"].mean() + 0.1
    assert drawn["cover_n"].mean() > drawn["cover_1"].mean() + 0.2
    assert drawn["spread_samples"].mean().item() == pytest.approx(drawn["spread_refs"].mean().item(), abs=0.05)  # the same spread
    assert centre["spread_samples"].abs().max() == 0
