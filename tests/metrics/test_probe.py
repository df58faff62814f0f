"""Encoder probes: k-NN and linear-probe accuracy, silhouette, pooled features.

Hand-built cases (separated clusters, random labels, hand-computed silhouettes and tie rules),
a brute-force k-NN oracle in float64, properties with hypothesis, and (when scikit-learn is
installed) a cross-check against scikit-learn.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl.metrics import (
    knn_accuracy,
    linear_probe_accuracy,
    pooled_features,
    probe_embeddings,
    silhouette_score,
)
from agcl.models import resnet18


def _clusters(n_per, centres, noise, seed, dtype=torch.float32):
    """Gaussian blobs around ``centres`` (C, D); rows in label order 0, 0, ..., 1, 1, ..."""
    g = torch.Generator().manual_seed(seed)
    c, d = centres.shape
    y = torch.arange(c).repeat_interleave(n_per)
    z = centres[y] + noise * torch.randn(c * n_per, d, generator=g, dtype=centres.dtype)
    return z.to(dtype), y


def _centres(c, d, seed, scale=10.0):
    return scale * torch.randn(c, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- separated clusters, chance


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_well_separated_clusters_give_accuracy_one(metric):
    centres = _centres(5, 16, seed=0)
    fit_z, fit_y = _clusters(40, centres, 0.1, seed=1)
    score_z, score_y = _clusters(30, centres, 0.1, seed=2)
    assert knn_accuracy(fit_z, fit_y, score_z, score_y, metric=metric) == 1.0
    assert linear_probe_accuracy(fit_z, fit_y, score_z, score_y) == 1.0
    assert silhouette_score(score_z, score_y, metric=metric) > 0.9


def test_labels_independent_of_the_features_give_chance():
    # the same well-separated blobs, but every label drawn uniformly from 4 classes,
    # independently of the rows: whatever a probe predicts for a score row, it is right with
    # probability exactly 1/4, independently across rows, so the accuracy is Binomial(n, 1/4)/n
    # with sd sqrt(3/16/n) = 0.0079 for n = 3000; 0.04 is 5 sd (a two-sided p of 6e-7)
    centres = _centres(4, 32, seed=3)
    fit_z, _ = _clusters(300, centres, 1.0, seed=4)
    score_z, _ = _clusters(750, centres, 1.0, seed=5)
    g = torch.Generator().manual_seed(6)
    fit_y = torch.randint(0, 4, (fit_z.shape[0],), generator=g)
    score_y = torch.randint(0, 4, (score_z.shape[0],), generator=g)
    assert abs(knn_accuracy(fit_z, fit_y, score_z, score_y) - 0.25) < 0.04
    assert abs(linear_probe_accuracy(fit_z, fit_y, score_z, score_y) - 0.25) < 0.04
    # and the silhouette of clusters that the labels do not follow is about 0 (not > 0.1)
    assert abs(silhouette_score(score_z, score_y)) < 0.1


# ---------------------------------------------------------------- k-NN rules


def test_knn_equally_similar_rows_lower_index_first():
    # two fit rows at the same place: with k = 1 the first one is the neighbour
    fit = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    score, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([5])
    assert knn_accuracy(fit, torch.tensor([5, 3, 3]), score, truth, k=1) == 1.0
    assert knn_accuracy(fit, torch.tensor([3, 5, 3]), score, truth, k=1) == 0.0
    # k = 2 takes both copies (similarity 1) before the third row (similarity 0)
    assert knn_accuracy(fit, torch.tensor([5, 5, 3]), score, truth, k=2) == 1.0


def test_knn_vote_ties_go_to_larger_summed_similarity_then_smallest_label():
    fit = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # one vote each; similarities 0.8 (label 0) and 0.96 (label 1): label 1 wins
    assert (
        knn_accuracy(fit, torch.tensor([0, 1]), torch.tensor([[0.8, 0.6]]), torch.tensor([1]), k=2)
        == 1.0
    )
    # one vote each and equal similarity (1/sqrt 2 each): the smaller label id wins
    fit = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    diag = torch.tensor([[1.0, 1.0]])
    assert knn_accuracy(fit, torch.tensor([2, 1]), diag, torch.tensor([1]), k=2) == 1.0
    assert knn_accuracy(fit, torch.tensor([1, 2]), diag, torch.tensor([1]), k=2) == 1.0
    # a majority beats a larger summed similarity: two votes at 0.6 beat one at 1.0
    fit = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    assert (
        knn_accuracy(
            fit, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0]]), torch.tensor([1]), k=3
        )
        == 1.0
    )


def test_knn_zero_row_has_similarity_zero_to_everything():
    fit = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zero, truth = torch.zeros(1, 2), torch.tensor([4])
    # all similarities 0: k = 1 takes row 0 (label 4); k = 2 ties 1-1 at sum 0 -> label 2
    assert knn_accuracy(fit, torch.tensor([4, 2]), zero, truth, k=1) == 1.0
    assert knn_accuracy(fit, torch.tensor([4, 2]), zero, truth, k=2) == 0.0


def test_knn_k_is_capped_at_the_fit_rows():
    fit = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    score = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # k = 100 -> all 3 fit rows vote, label 1 has the majority for every score row
    assert knn_accuracy(fit, torch.tensor([0, 1, 1]), score, torch.tensor([1, 1]), k=100) == 1.0


def test_unseen_score_labels_count_as_errors():
    centres = _centres(3, 8, seed=7)
    fit_z, fit_y = _clusters(10, centres[:2], 0.1, seed=8)
    score_z, score_y = _clusters(10, centres, 0.1, seed=9)  # label 2 never seen in fit
    assert knn_accuracy(fit_z, fit_y, score_z, score_y) == pytest.approx(2 / 3)
    assert linear_probe_accuracy(fit_z, fit_y, score_z, score_y) == pytest.approx(2 / 3)


def _knn_oracle(fit, fit_y, score, score_y, k, metric):
    """Brute force in float64: sort by (-similarity, index), vote, tie-break as documented."""
    fit, score = fit.double().numpy(), score.double().numpy()
    if metric == "cosine":
        fit = fit / np.linalg.norm(fit, axis=1, keepdims=True)
        score = score / np.linalg.norm(score, axis=1, keepdims=True)
    right = 0
    for s, truth in zip(score, score_y.tolist()):
        sims = [float(f @ s) if metric == "cosine" else -float(np.linalg.norm(f - s)) for f in fit]
        nearest = sorted(range(len(fit)), key=lambda j: (-sims[j], j))[:k]
        count, total = {}, {}
        for j in nearest:
            label = int(fit_y[j])
            count[label] = count.get(label, 0) + 1
            total[label] = total.get(label, 0.0) + sims[j]
        best = min(count, key=lambda c: (-count[c], -total[c], c))
        right += best == truth
    return right / len(score)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(("k", "block_size"), [(1, 1000), (4, 7), (6, 1), (90, 16)])
def test_knn_matches_a_brute_force_oracle(metric, k, block_size):
    # overlapping blobs, 4 labels and even k: many vote ties, decided by the summed similarity
    centres = _centres(4, 5, seed=10, scale=1.0)
    fit_z, fit_y = _clusters(20, centres, 1.0, seed=11, dtype=torch.float64)
    score_z, score_y = _clusters(15, centres, 1.0, seed=12, dtype=torch.float64)
    perm = torch.randperm(len(fit_y), generator=torch.Generator().manual_seed(13))
    fit_z, fit_y = fit_z[perm], fit_y[perm] * 3 - 2  # shuffled rows, labels not 0..C-1
    score_y = score_y * 3 - 2
    got = knn_accuracy(fit_z, fit_y, score_z, score_y, k=k, metric=metric, block_size=block_size)
    want = _knn_oracle(fit_z, fit_y, score_z, score_y, k, metric)
    assert got == want  # both count right answers out of the same 60 rows: exact


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 12),
    powers=st.lists(st.integers(-40, 40), min_size=30, max_size=30),
)
def test_cosine_knn_is_invariant_to_scaling_each_row(seed, k, powers):
    # powers of two scale exactly in binary floating point, so the similarities are identical
    centres = _centres(3, 6, seed=seed, scale=1.0)
    z, y = _clusters(10, centres, 1.0, seed=seed + 1)
    fit_z, fit_y, score_z, score_y = z[:18], y[:18], z[18:], y[18:]
    scale = torch.tensor([2.0**p for p in powers])[:, None]
    base = knn_accuracy(fit_z, fit_y, score_z, score_y, k=k)
    assert knn_accuracy(fit_z * scale[:18], fit_y, score_z * scale[18:], score_y, k=k) == base


def test_huge_finite_values_do_not_overflow():
    centres = _centres(3, 8, seed=14)
    fit_z, fit_y = _clusters(10, centres, 0.1, seed=15)
    score_z, score_y = _clusters(10, centres, 0.1, seed=16)
    big_fit, big_score = fit_z * 1e37, score_z * 1e37  # squares overflow float32
    assert knn_accuracy(big_fit, fit_y, big_score, score_y) == 1.0
    assert linear_probe_accuracy(big_fit, fit_y, big_score, score_y) == 1.0
    assert silhouette_score(big_score, score_y) == pytest.approx(
        silhouette_score(score_z, score_y), abs=1e-6
    )


# ---------------------------------------------------------------- linear probe


def test_linear_probe_standardises_the_features():
    # the label lives in a feature of scale 1e-4 next to a noise feature of scale 1e4: a raw
    # logistic regression would need a weight ~1e5 that the L2 penalty forbids
    g = torch.Generator().manual_seed(17)
    y = torch.arange(2).repeat(100)
    z = torch.stack(
        [
            1e-4 * (y.float() * 2 - 1 + 0.3 * torch.randn(200, generator=g)),
            1e4 * torch.randn(200, generator=g),
        ],
        dim=1,
    )
    assert linear_probe_accuracy(z[:100], y[:100], z[100:], y[100:], weight_decay=1e-2) == 1.0


def test_linear_probe_with_one_fit_label_predicts_it_everywhere():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(18))
    fit_y = torch.full((3,), 7)
    assert linear_probe_accuracy(z[:3], fit_y, z[3:], torch.tensor([7, 7, 1])) == pytest.approx(
        2 / 3
    )


def test_linear_probe_runs_under_no_grad_and_inference_mode():
    centres = _centres(3, 8, seed=19)
    fit_z, fit_y = _clusters(10, centres, 0.5, seed=20)
    score_z, score_y = _clusters(10, centres, 0.5, seed=21)
    want = linear_probe_accuracy(fit_z, fit_y, score_z, score_y)
    with torch.no_grad():
        assert linear_probe_accuracy(fit_z, fit_y, score_z, score_y) == want
    with torch.inference_mode():
        fz, sz = fit_z.clone(), score_z.clone()  # inference tensors
        assert linear_probe_accuracy(fz, fit_y, sz, score_y) == want


# ---------------------------------------------------------------- silhouette


def test_silhouette_hand_computed_euclidean():
    z = torch.tensor([[0.0], [1.0], [5.0], [7.0]], dtype=torch.float64)
    # a = 1, 1, 2, 2; b = 6, 5, 4.5, 6.5 -> s = 5/6, 4/5, 5/9, 9/13
    want = (5 / 6 + 4 / 5 + 5 / 9 + 9 / 13) / 4
    assert silhouette_score(z, torch.tensor([0, 0, 1, 1]), metric="euclidean") == pytest.approx(
        want, rel=1e-12
    )
    # labels across the gaps: a = 5, 6, 5, 6; b = 4, 2.5, 3, 4.5 -> all negative
    want = (-1 / 5 - 3.5 / 6 - 2 / 5 - 1.5 / 6) / 4
    assert silhouette_score(z, torch.tensor([0, 1, 0, 1]), metric="euclidean") == pytest.approx(
        want, rel=1e-12
    )


def test_silhouette_singletons_and_coincident_points_give_zero():
    z = torch.tensor([[0.0], [1.0], [5.0]], dtype=torch.float64)
    # 5 is alone: s = 0; 0: a = 1, b = 5 -> 0.8; 1: a = 1, b = 4 -> 0.75
    assert silhouette_score(z, torch.tensor([3, 3, 9]), metric="euclidean") == pytest.approx(
        1.55 / 3, rel=1e-12
    )
    # every point at the same place: a = b = 0, s = 0 (not 0/0)
    same = torch.ones(4, 2)
    for metric in ("cosine", "euclidean"):
        assert silhouette_score(same, torch.tensor([0, 0, 1, 1]), metric=metric) == 0.0


def test_silhouette_hand_computed_cosine():
    # cosine distance 1 - cos: d(A1, A2) = 0.2, d(A1, B) = 1, d(A2, B) = 0.4, d(B1, B2) = 0
    # (B2 is B1 scaled by 2). s(A1) = 0.8/1, s(A2) = 0.2/0.4, s(B1) = s(B2) = (0.7 - 0)/0.7
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.0, 2.0]])
    assert silhouette_score(z, torch.tensor([0, 0, 1, 1])) == pytest.approx(
        (0.8 + 0.5 + 1 + 1) / 4, abs=1e-6
    )  # float32 inputs: a few ulps of 1


def test_silhouette_subsampling_is_deterministic_and_keeps_every_label():
    centres = _centres(3, 8, seed=22, scale=1.0)
    z, y = _clusters(100, centres, 1.0, seed=23)
    full = silhouette_score(z, y)
    assert silhouette_score(z, y, max_samples=300, seed=5) == full  # no subsampling
    sub = silhouette_score(z, y, max_samples=60, seed=5)
    assert sub == silhouette_score(z, y, max_samples=60, seed=5)
    assert sub != silhouette_score(z, y, max_samples=60, seed=6)
    # one far row of label 9 beside 300 of label 0: floor(1 * 10 / 301) = 0 rows, raised to
    # one, so 9 rows of label 0 (s ~ 1: their own spread is ~4, label 9 is ~1000 away) and the
    # singleton (s = 0) remain: the mean is about 0.9, not an error for a single label
    z = torch.cat([z, torch.full((1, 8), 400.0)])
    y = torch.cat([torch.zeros_like(y), torch.tensor([9])])
    sub = silhouette_score(z, y, max_samples=10, metric="euclidean")
    assert 0.88 < sub < 0.9


def _silhouette_oracle(z, y, metric):
    """Rousseeuw's definition, one row at a time, in float64."""
    z, y = z.double().numpy(), y.numpy()
    if metric == "cosine":
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = []
    for i in range(len(z)):
        d = 1 - z @ z[i] if metric == "cosine" else np.linalg.norm(z - z[i], axis=1)
        own = (y == y[i]) & (np.arange(len(z)) != i)
        if not own.any():
            s.append(0.0)
            continue
        a = d[own].mean()
        b = min(d[y == c].mean() for c in set(y.tolist()) if c != y[i])
        s.append((b - a) / max(a, b))
    return float(np.mean(s))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block_size", [1, 16, 1024])
def test_silhouette_matches_a_brute_force_oracle(metric, block_size):
    # float32 rows far from the origin, 70 of them (torch.cdist takes its matrix-product path
    # above 25 rows): a self-distance not forced to 0 would be off by ~1e-3; the oracle runs
    # in float64 and float32 sums of 70 distances agree to ~1e-6
    centres = _centres(3, 6, seed=30, scale=1.0) + 20.0
    z, y = _clusters(23, centres, 1.0, seed=31)
    z, y = torch.cat([z, centres[:1]]), torch.cat([y, torch.tensor([7])])  # a singleton
    assert silhouette_score(z, y, metric=metric, block_size=block_size) == pytest.approx(
        _silhouette_oracle(z, y, metric), abs=1e-5
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 40),
    c=st.integers(2, 5),
    metric=st.sampled_from(["cosine", "euclidean"]),
)
def test_silhouette_lies_in_minus_one_one(seed, n, c, metric):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    y[:2] = torch.tensor([0, 1])  # at least two labels
    assert -1.0 <= silhouette_score(z, y, metric=metric, block_size=7) <= 1.0


# ---------------------------------------------------------------- probe_embeddings


def test_probe_embeddings_is_the_three_probes_per_label_set():
    centres = _centres(4, 12, seed=24, scale=1.0)
    fit_z, fit_organ = _clusters(25, centres, 1.0, seed=25)
    score_z, score_organ = _clusters(20, centres, 1.0, seed=26)
    fit = {"organ": fit_organ, "modality": fit_organ % 2}
    score = {"organ": score_organ, "modality": score_organ % 2}
    out = probe_embeddings(fit_z, fit, score_z, score, k=5)
    assert list(out) == ["knn", "linear", "silhouette", "patches"]
    for name in ("organ", "modality"):
        assert out["knn"][name] == knn_accuracy(fit_z, fit[name], score_z, score[name], k=5)
        assert out["linear"][name] == linear_probe_accuracy(fit_z, fit[name], score_z, score[name])
    assert out["silhouette"] == silhouette_score(score_z, score_organ)
    assert out["patches"] == 80
    # the silhouette of another label set, and none when there is nothing to separate
    modality = probe_embeddings(fit_z, fit, score_z, score, silhouette_key="modality")
    assert modality["silhouette"] == silhouette_score(score_z, score["modality"])
    one = {"organ": torch.zeros(80, dtype=torch.long), "modality": score["modality"]}
    assert probe_embeddings(fit_z, fit, score_z, one)["silhouette"] is None
    assert probe_embeddings(fit_z, fit, score_z, score, silhouette_key=None)["silhouette"] is None


# ---------------------------------------------------------------- pooled_features


def test_pooled_features_pools_the_deepest_map_in_eval_mode():
    torch.manual_seed(0)
    enc = resnet18(in_chans=2, base_width=4)
    x = torch.randn(5, 2, 32, 32)
    with torch.no_grad():  # one training-mode pass moves the running statistics off 0 / 1
        enc(torch.randn(8, 2, 32, 32) * 3 + 1)
    enc.train()
    got = pooled_features(enc, x, batch_size=2)
    assert enc.training  # mode restored
    enc.eval()
    with torch.no_grad():
        want = enc.forward_pooled(x)
    torch.testing.assert_close(got, want)
    assert not got.requires_grad


# ---------------------------------------------------------------- bad input


def _ok():
    return torch.randn(4, 3), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"fit_z": [[1.0]]}, TypeError, "fit_z must be a torch.Tensor"),
        ({"fit_z": torch.ones(4, 3, dtype=torch.long)}, TypeError, "fit_z must be a floating"),
        ({"fit_z": torch.ones(4)}, ValueError, r"fit_z must be 2-D \(N, D\).*\(4,\)"),
        (
            {"fit_z": torch.ones(0, 3), "fit_y": torch.zeros(0, dtype=torch.long)},
            ValueError,
            "fit_z must hold at least one row",
        ),
        ({"score_z": torch.ones(4, 2)}, ValueError, r"score_z must have D=3 columns.*\(4, 2\)"),
        (
            {"score_z": torch.tensor([[0.0, 1.0, float("nan")]] * 4)},
            ValueError,
            "score_z must hold finite values; got NaN or inf in 4 of 4 rows",
        ),
        (
            {"fit_y": torch.tensor([0, 1, 0])},
            ValueError,
            r"fit_y must have one entry per row of fit_z \(4 rows\); got 3",
        ),
        ({"score_y": torch.tensor([0.0, 1, 0, 1])}, TypeError, "score_y must be an integer tensor"),
    ],
)
def test_bad_embeddings_and_labels(kwargs, err, match):
    z, y = _ok()
    args = {"fit_z": z, "fit_y": y, "score_z": z, "score_y": y, **kwargs}
    for fn in (knn_accuracy, linear_probe_accuracy):
        with pytest.raises(err, match=match):
            fn(args["fit_z"], args["fit_y"], args["score_z"], args["score_y"])


def test_bad_options():
    z, y = _ok()
    with pytest.raises(ValueError, match="k must be an int >= 1; got 0"):
        knn_accuracy(z, y, z, y, k=0)
    with pytest.raises(ValueError, match="metric must be one of 'cosine', 'euclidean'"):
        knn_accuracy(z, y, z, y, metric="manhattan")
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        linear_probe_accuracy(z, y, z, y, weight_decay=-1.0)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        linear_probe_accuracy(z, y, z, y, max_iter=0)
    with pytest.raises(ValueError, match=r"y must hold at least two distinct labels.*\[0\]"):
        silhouette_score(z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="y must have one entry per row of z"):
        silhouette_score(z, y[:3])
    with pytest.raises(ValueError, match="max_samples must be an int >= 2"):
        silhouette_score(z, y, max_samples=1)
    with pytest.raises(TypeError, match="fit_labels must be a mapping"):
        probe_embeddings(z, y, z, {"organ": y})
    with pytest.raises(ValueError, match="fit_labels must hold at least one label set"):
        probe_embeddings(z, {}, z, {})
    with pytest.raises(ValueError, match=r"same label sets.*\['modality'\] and \['organ'\]"):
        probe_embeddings(z, {"organ": y}, z, {"modality": y})
    with pytest.raises(ValueError, match="silhouette_key must be None or one of"):
        probe_embeddings(z, {"organ": y}, z, {"organ": y}, silhouette_key="modality_organ")
    with pytest.raises(ValueError, match="score_y must have one entry per row of score_z"):
        probe_embeddings(z, {"organ": y}, z, {"organ": y[:2]})
    with pytest.raises(TypeError, match="encoder must be an nn.Module with forward_features"):
        pooled_features(torch.nn.Linear(3, 3), z)
    enc = resnet18(in_chans=2, base_width=4)
    with pytest.raises(ValueError, match=r"x must be \(N, C_in, \*spatial\) with N >= 1"):
        pooled_features(enc, torch.ones(0, 2, 8, 8))
    with pytest.raises(ValueError, match="x must hold finite values"):
        pooled_features(enc, torch.full((1, 2, 8, 8), float("inf")))

    class Flat(torch.nn.Module):  # returns one tensor instead of a list of maps
        def forward_features(self, x):
            return x

    flat = Flat().train()
    with pytest.raises(ValueError, match="a non-empty list of feature maps; got Tensor"):
        pooled_features(flat, torch.ones(1, 2, 8, 8))
    assert flat.training  # restored even when the forward pass fails


# ---------------------------------------------------------------- scikit-learn cross-check


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_agrees_with_scikit_learn(metric):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score as sk_silhouette
    from sklearn.neighbors import KNeighborsClassifier

    del sklearn
    centres = _centres(2, 8, seed=27, scale=0.5)
    fit_z, fit_y = _clusters(80, centres, 1.0, seed=28, dtype=torch.float64)
    score_z, score_y = _clusters(60, centres, 1.0, seed=29, dtype=torch.float64)
    # two labels and odd k: no vote ties, where scikit-learn's rule (smallest label) differs
    knn = KNeighborsClassifier(7, metric=metric, algorithm="brute").fit(fit_z, fit_y)
    assert knn_accuracy(fit_z, fit_y, score_z, score_y, k=7, metric=metric) == knn.score(
        score_z, score_y
    )
    # sklearn minimises C * sum CE + ||W||^2 / 2, i.e. ours with weight_decay = 1 / (C N)
    mean, std = fit_z.mean(0), fit_z.std(0, correction=0)
    wd = 0.05
    lr = LogisticRegression(C=1 / (wd * len(fit_y)), tol=1e-10, max_iter=10_000)
    lr.fit((fit_z - mean) / std, fit_y)
    assert linear_probe_accuracy(fit_z, fit_y, score_z, score_y, weight_decay=wd) == lr.score(
        (score_z - mean) / std, score_y
    )
    # float64 throughout: agreement to rounding
    assert silhouette_score(score_z, score_y, metric=metric, block_size=13) == pytest.approx(
        sk_silhouette(score_z.numpy(), score_y.numpy(), metric=metric), abs=1e-12
    )
