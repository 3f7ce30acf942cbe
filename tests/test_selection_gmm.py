"""The GMM split (parity with scikit-learn's GaussianMixture) and the selection metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from visprompt.selection import fit_gmm_1d, gmm_split, selection_counts, selection_metrics


def _bimodal(n_clean: int = 300, n_noisy: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses: clean ones low (Gamma-like), noisy ones high; and the true clean mask."""
    g = torch.Generator().manual_seed(seed)
    clean = 0.3 * torch.rand(n_clean, generator=g).pow(2) + 0.05 * torch.randn(n_clean, generator=g).abs()
    noisy = 2.0 + 0.4 * torch.randn(n_noisy, generator=g)
    perm = torch.randperm(n_clean + n_noisy, generator=g)
    losses = torch.cat([clean, noisy])[perm]
    truth = torch.cat([torch.ones(n_clean, dtype=torch.bool), torch.zeros(n_noisy, dtype=torch.bool)])[perm]
    return losses.double(), truth


def _sklearn_from(fit_init, x: torch.Tensor, **kwargs) -> GaussianMixture:
    weights, means, variances = fit_init
    gm = GaussianMixture(
        n_components=2,
        weights_init=np.array(weights),
        means_init=np.array(means)[:, None],
        precisions_init=(1.0 / np.array(variances))[:, None, None],
        **kwargs,
    )
    return gm.fit(x.numpy()[:, None])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("max_iter", "tol", "reg_covar"), [(10, 1e-2, 5e-4), (3, 1e-12, 1e-6), (200, 1e-10, 1e-6)])
def test_em_matches_sklearn_from_the_same_start(max_iter: int, tol: float, reg_covar: float) -> None:
    x, _ = _bimodal(seed=1)
    x = (x - x.min()) / (x.max() - x.min())
    init = ((0.5, 0.5), (0.2, 0.6), (0.05, 0.05))  # deliberately poor start: EM has work to do
    ours = fit_gmm_1d(x, max_iter=max_iter, tol=tol, reg_covar=reg_covar, init=init)
    ref = _sklearn_from(init, x, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
    order = np.argsort(ref.means_.ravel())
    np.testing.assert_allclose(ours.means, ref.means_.ravel()[order], rtol=1e-10)
    np.testing.assert_allclose(ours.variances, ref.covariances_.ravel()[order], rtol=1e-10)
    np.testing.assert_allclose(ours.weights, ref.weights_[order], rtol=1e-10)
    assert ours.iterations == ref.n_iter_ and ours.converged == ref.converged_
    assert ours.log_likelihood == pytest.approx(ref.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.posterior(x).numpy(), ref.predict_proba(x.numpy()[:, None])[:, order], atol=1e-10)


def test_default_start_finds_sklearns_optimum() -> None:
    x, _ = _bimodal(seed=2)
    ours = fit_gmm_1d(x, max_iter=1000, tol=1e-12)
    ref = GaussianMixture(n_components=2, max_iter=1000, tol=1e-12, random_state=0).fit(x.numpy()[:, None])
    order = np.argsort(ref.means_.ravel())
    assert ours.converged and ours.means[0] < ours.means[1]
    np.testing.assert_allclose(ours.means, ref.means_.ravel()[order], rtol=1e-6)
    np.testing.assert_allclose(ours.variances, ref.covariances_.ravel()[order], rtol=1e-5)
    np.testing.assert_allclose(ours.weights, ref.weights_[order], rtol=1e-6)


def test_gmm_split_finds_the_low_loss_samples() -> None:
    losses, truth = _bimodal(seed=3)
    result = gmm_split(losses.float())
    assert torch.equal(result.clean, truth)
    assert result.confidence.dtype == torch.float32 and ((result.confidence >= 0) & (result.confidence <= 1)).all()
    assert torch.equal(result.clean, result.confidence > 0.5)
    stats = result.stats
    assert stats["num_clean"] == int(truth.sum()) and stats["clean_fraction"] == pytest.approx(truth.float().mean())
    assert stats["means"][0] < stats["means"][1] and sum(stats["weights"]) == pytest.approx(1.0)
    assert 1 <= stats["iterations"] <= 10 and isinstance(stats["converged"], bool)
    assert torch.equal(result.pseudo_labels, torch.zeros(len(losses), dtype=torch.long))


def test_gmm_split_threshold_labels_and_normalisation() -> None:
    g = torch.Generator().manual_seed(4)
    losses = torch.cat(
        [1.0 + 0.5 * torch.randn(200, generator=g), 2.0 + 0.5 * torch.randn(200, generator=g)]
    )  # overlap
    labels = torch.arange(len(losses)) % 7
    loose, strict = gmm_split(losses, labels, threshold=0.1), gmm_split(losses, labels, threshold=0.99)
    assert (strict.clean <= loose.clean).all() and strict.num_clean < loose.num_clean
    assert torch.equal(loose.pseudo_labels, labels)  # a GMM does not relabel
    # Min-max normalisation makes the split invariant to a positive affine change of the losses.
    torch.testing.assert_close(gmm_split(3.0 * losses + 7.0).confidence, gmm_split(losses).confidence)


def test_gmm_split_edge_cases() -> None:
    with pytest.warns(RuntimeWarning, match="all losses are equal"):
        same = gmm_split(torch.full((5,), 0.7))
    assert same.clean.all() and same.stats["clean_fraction"] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        gmm_split(torch.tensor([0.1, float("nan"), 0.3]))
    with pytest.raises(ValueError, match="1-D"):
        gmm_split(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="at least 2"):
        fit_gmm_1d(torch.tensor([1.0]))


def test_selection_metrics_by_hand() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    true = torch.tensor([0, 1, 2, 3, 9, 9, 6, -1])  # samples 4, 5 are noisy; sample 7's truth is unknown
    clean = torch.tensor([True, True, False, False, True, False, True, True])
    pseudo = torch.tensor([0, 1, 2, 0, 9, 0, 6, 7])
    m = selection_metrics(clean, labels, true, pseudo)
    # known: 7 samples, truly clean {0,1,2,3,6}; selected & known {0,1,4,6}; hits {0,1,6}
    assert m["known"] == 7 and m["noise_rate"] == pytest.approx(2 / 7)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["selected_fraction"] == pytest.approx(5 / 8)
    assert m["pseudo_label_accuracy"] == pytest.approx(5 / 7)  # 0, 1, 2, 4 (-> 9), 6 right
    counts = selection_counts(clean, labels, true)
    assert counts == {"n": 8, "selected": 5, "known": 7, "selected_known": 4, "truly_clean": 5, "hits": 3}
    from visprompt.methods.selection import split_counts  # the training log's counts are the same figures

    assert split_counts(clean, labels, true) == {
        "n_clean": 5,
        "n_selected_from": 8,
        "sel_selected": 4,
        "sel_true_clean": 5,
        "sel_hits": 3,
    }


def test_selection_metrics_empty_and_unknown() -> None:
    labels = torch.tensor([0, 1, 2])
    m = selection_metrics(torch.zeros(3, dtype=torch.bool), labels, labels)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["selected_fraction"] == 0.0
    m = selection_metrics(torch.ones(3, dtype=torch.bool), labels, torch.full((3,), -1))
    assert m["known"] == 0 and m["precision"] == 0.0 and m["noise_rate"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        selection_metrics(torch.ones(3, dtype=torch.bool), labels, labels[:2])
