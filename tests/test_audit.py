"""``visprompt audit``: scores, writers, ``shots: all``, the CLI's two forms and its one-line errors."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

import visprompt.cli as cli
from test_engine_runs import COLOURS, world  # noqa: F401  (the module-scoped fixture)
from visprompt.audit import audit_scores, estimate_error_count
from visprompt.audit.report import class_summary, confused_pairs, write_csv, write_fix, write_html
from visprompt.audit.score import crossfit_probs, fit_head, vote_prior
from visprompt.config import load_config
from visprompt.data.custom import load_csv
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import ConfigError, DataError
from worlds import make_folder_dataset


def _clusters(n_per: int = 40, c: int = 4, e: int = 16, seed: int = 0, flip: float = 0.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, e)) * 3
    true = np.repeat(np.arange(c), n_per)
    x = centres[true] + rng.normal(size=(len(true), e))
    given = true.copy()
    wrong = rng.choice(len(true), int(flip * len(true)), replace=False)
    given[wrong] = (true[wrong] + 1 + rng.integers(0, c - 1, len(wrong))) % c
    return x.astype(np.float32), given, true


def test_audit_scores_find_the_flipped_labels() -> None:
    from sklearn.metrics import roc_auc_score

    x, given, true = _clusters()
    r = audit_scores(x, given, 4, steps=30)
    wrong = given != true
    assert roc_auc_score(wrong, r.score) > 0.95
    assert (r.suggested[wrong] == true[wrong]).mean() > 0.9  # the suggestion is the true label
    assert abs(r.estimated_errors - wrong.sum()) <= 0.25 * wrong.sum()
    disagree = r.suggested != r.given
    assert not (r.flagged & ~disagree).any()  # flagged samples are disagreements ...
    assert r.flagged.sum() == min(r.estimated_errors, disagree.sum())  # ... as many as estimated ...
    assert r.score[r.flagged].min() >= r.score[disagree & ~r.flagged].max(initial=0)  # ... the highest-scored ones
    assert set(r.ranking()[: wrong.sum() // 2]) <= set(np.flatnonzero(wrong))  # the top half-k are all wrong
    assert np.allclose(r.probs.sum(1), 1) and ((r.score >= 0) & (r.score <= 1)).all()
    again = audit_scores(x, given, 4, steps=30)
    assert np.array_equal(again.score, r.score) and np.array_equal(again.flagged, r.flagged)  # deterministic


def test_audit_scores_reject_bad_input() -> None:
    x, given, _ = _clusters(n_per=5)
    with pytest.raises(ValueError, match="features must be"):
        audit_scores(x[:-1], given, 4)
    with pytest.raises(ValueError, match="labels must lie"):
        audit_scores(x, given + 10, 4)
    with pytest.raises(ValueError, match="text_features"):
        audit_scores(x, given, 4, text_features=np.ones((3, x.shape[1])))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        audit_scores(bad, given, 4)


def _noisy_world(n: int, c: int, transition: np.ndarray, seed: int = 0):
    """Calibrated class posteriors (N, C), true labels drawn from them, given labels drawn from ``transition``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    true = np.array([rng.choice(c, p=p) for p in probs])
    given = np.array([rng.choice(c, p=transition[t]) for t in true])
    return probs, true, given


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_estimate_error_count_recovers_a_known_number_of_errors(kind: str) -> None:
    c, rate = 5, 0.3
    if kind == "symmetric":
        t = np.full((c, c), rate / (c - 1)) + np.eye(c) * (1 - rate - rate / (c - 1))
    else:  # y -> y + 1 with probability rate
        t = (1 - rate) * np.eye(c) + rate * np.roll(np.eye(c), 1, axis=1)
    probs, true, given = _noisy_world(3000, c, t)
    wrong = int((given != true).sum())
    estimate, fitted, posterior = estimate_error_count(probs, given)
    assert abs(estimate - wrong) <= 0.1 * wrong, (estimate, wrong)
    assert np.allclose(fitted.sum(1), 1) and np.abs(fitted - t).max() < 0.08  # the transition matrix is recovered
    assert posterior.shape == (3000,) and ((posterior >= 0) & (posterior <= 1)).all()
    assert abs(posterior.sum() - estimate) < 1e-6
    # the flagged count of the same posteriors would miss by far more: the count is not just the disagreements
    assert abs((probs.argmax(1) != given).sum() - wrong) > 0.3 * wrong
    clean = estimate_error_count(probs, true)[0]  # the true labels: few errors are estimated
    assert clean < 0.1 * wrong


@pytest.mark.parametrize("seed", [0, 1])
def test_audit_count_holds_under_a_heavy_asymmetric_flip(seed: int) -> None:
    """40% of every class labelled as the next one, on overlapping clusters: the head fitted on the given labels
    absorbs much of the flip, so EM on it alone under-counts; the forward-corrected prior keeps within 20%."""
    rng = np.random.default_rng(seed)
    c, n_per = 5, 60
    true = np.repeat(np.arange(c), n_per)
    x = (rng.normal(size=(c, 16)) * 0.7)[true] + rng.normal(size=(len(true), 16))
    given = true.copy()
    flip = rng.choice(len(true), int(0.4 * len(true)), replace=False)
    given[flip] = (true[flip] + 1) % c
    r = audit_scores(x.astype(np.float32), given, c, steps=30)
    wrong = int((given != true).sum())
    assert abs(r.stats["estimate"] - wrong) <= 0.2 * wrong, (r.stats["estimate"], wrong)
    assert r.stats["estimate_head_only"] < 0.8 * wrong  # the earlier estimate: the head alone under-counts here
    assert r.estimated_errors == round(r.stats["estimate"])


@pytest.mark.parametrize("seed", [1, 3])
def test_zero_shot_vote_count_is_not_pulled_down_by_an_absorbed_flip(seed: int) -> None:
    """40% asymmetric flip on clusters, with text embeddings near the class centres (a label-blind vote about 80%
    right): round 2's count (head mix alone) under-counts; the vote's count does not, and their mean is within
    20% where round 2's is not."""
    rng = np.random.default_rng(seed)
    c, n_per, e = 5, 60, 16
    true = np.repeat(np.arange(c), n_per)
    centres = rng.normal(size=(c, e)) * 0.8
    x = centres[true] + rng.normal(size=(len(true), e))
    given = true.copy()
    flip = rng.choice(len(true), int(0.4 * len(true)), replace=False)
    given[flip] = (true[flip] + 1) % c
    text = centres + 0.5 * rng.normal(size=centres.shape) * np.linalg.norm(centres, axis=1, keepdims=True) / 4
    r = audit_scores(x.astype(np.float32), given, c, text_features=text.astype(np.float32), steps=30)
    wrong = int((given != true).sum())
    vote, round2 = r.stats["estimate_vote"] / wrong, r.stats["estimate_round2"] / wrong
    assert abs(vote - 1) < abs(round2 - 1) - 0.1, (vote, round2)
    assert r.stats["estimate"] == pytest.approx(0.5 * (r.stats["estimate_vote"] + r.stats["estimate_round2"]))
    assert abs(r.stats["estimate"] / wrong - 1) <= 0.15, r.stats["estimate"] / wrong
    assert round2 < 0.85  # round 2's count alone under-counts here


def test_vote_prior() -> None:
    rng = np.random.default_rng(0)
    c, n = 4, 400
    true = rng.integers(0, c, n)
    given = true.copy()
    wrong = rng.random(n) < 0.25
    given[wrong] = (true[wrong] + 1 + rng.integers(0, c - 1, int(wrong.sum()))) % c
    right_vote = np.where(rng.random(n) < 0.9, true, rng.integers(0, c, n))  # 90% right, blind to the labels
    prior = vote_prior(right_vote, given, given == true, c)
    assert prior.shape == (n, c) and np.allclose(prior.sum(1), 1)
    assert (prior.argmax(1) == right_vote).all()  # an accurate vote: the posterior follows it
    estimate = estimate_error_count(prior, given)[0]
    assert abs(estimate - wrong.sum()) <= 0.15 * wrong.sum(), (estimate, wrong.sum())
    blind = rng.integers(0, c, n)  # a vote unrelated to the class: rows near the class frequencies
    flat = vote_prior(blind, given, given == true, c)
    assert np.abs(flat - np.bincount(given, minlength=c) / n).max() < 0.15
    with pytest.raises(ValueError, match="alike"):
        vote_prior(right_vote[:-1], given, given == true, c)
    with pytest.raises(ValueError, match="smooth"):
        vote_prior(right_vote, given, given == true, c, smooth=0)


@pytest.mark.parametrize("c", [10, 50])
def test_vote_prior_smoothing_is_a_total_per_row(c: int) -> None:
    """n clean samples per class, all voted right, equal class frequencies: P(true = vote | vote) is
    (n + s / C) / (n + s) with s pseudo-counts per row (s / C per cell), so at a fixed s it hardly moves with C;
    with 0.5 per cell it would fall from 0.55 at C = 10 to 0.18 at C = 50."""
    n = 5
    labels = np.repeat(np.arange(c), n)
    votes = labels.copy()
    prior = vote_prior(votes, labels, np.ones(len(labels), dtype=bool), c)  # default: 5 per row
    expected = (n + 5.0 / c) / (n + 5.0)
    assert prior[np.arange(len(labels)), votes] == pytest.approx(np.full(len(labels), expected))
    assert expected > 0.5
    prior = vote_prior(votes, labels, np.ones(len(labels), dtype=bool), c, smooth=0.5 * c)  # 0.5 per cell
    assert prior[0, 0] == pytest.approx((n + 0.5) / (n + 0.5 * c))


def test_audit_scores_pass_the_vote_smoothing_on() -> None:
    """A near-infinite smoothing flattens the vote's confusion, so its posterior is the class frequencies and its
    count is what EM makes of a flat prior; the default (5 per row) follows the (here perfect) vote closer to the
    true count."""
    x, given, true = _clusters(n_per=60, flip=0.3)
    centres = np.stack([x[given == k].mean(axis=0) for k in range(4)])
    default = audit_scores(x, given, 4, text_features=centres, steps=20)
    flat = audit_scores(x, given, 4, text_features=centres, steps=20, vote_smoothing=1e9)
    freq = np.bincount(given, minlength=4) / len(given)
    flat_count = estimate_error_count(np.tile(freq, (len(given), 1)), given)[0]
    assert flat.stats["estimate_vote"] == pytest.approx(flat_count, rel=1e-4)
    assert default.stats["estimate_round2"] == pytest.approx(flat.stats["estimate_round2"])
    wrong = int((given != true).sum())
    assert abs(default.stats["estimate_vote"] - wrong) < abs(flat_count - wrong) - 5, (default.stats, flat_count)


def test_count_without_text_is_round_twos() -> None:
    x, given, _ = _clusters(n_per=20)
    r = audit_scores(x, given, 4, steps=20)
    assert r.stats["estimate_vote"] is None and r.stats["estimate"] == r.stats["estimate_round2"]


def test_forward_corrected_head() -> None:
    import torch

    x, given, _ = _clusters(n_per=20)
    xt = torch.nn.functional.normalize(torch.as_tensor(x), dim=-1)
    y = torch.as_tensor(given)
    plain = crossfit_probs(xt, y, 4, None, steps=20)
    through_identity = crossfit_probs(xt, y, 4, None, steps=20, transition=torch.eye(4))
    assert torch.allclose(plain, through_identity, atol=1e-4)  # T = I: the forward loss is cross-entropy
    flips = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)  # 30% of every class spread over the others
    sharper = crossfit_probs(xt, y, 4, None, steps=20, transition=flips)
    assert sharper.max(dim=1).values.mean() > plain.max(dim=1).values.mean()  # T explains part of the labels
    with pytest.raises(ValueError, match="transition must be"):
        fit_head(xt, y, torch.eye(4, 16), transition=torch.eye(3))


def test_estimate_error_count_rejects_bad_input() -> None:
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="probs must be"):
        estimate_error_count(probs[:3], np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="labels must lie"):
        estimate_error_count(probs, np.array([0, 1, 2, 3]))
    bad = probs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        estimate_error_count(bad, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="two classes"):
        estimate_error_count(np.ones((4, 1)), np.zeros(4, dtype=int))


def _read(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _splits(tmp_path, n: int = 6) -> DatasetSplits:
    names = ("a", "b")
    parts: dict[str, list[Sample]] = {}
    for key, count in (("train", n), ("val", 3), ("test", 2)):
        parts[key] = []
        for i in range(count):
            path = tmp_path / f"{key}{i}.png"
            path.write_bytes(b"")
            parts[key].append(Sample(index=i, path=str(path), label=i % 2, true_label=i % 2, classname=names[i % 2]))
    return DatasetSplits(name="csv", classnames=names, **{k: tuple(v) for k, v in parts.items()})


def test_csv_and_fix_files(tmp_path) -> None:
    splits = _splits(tmp_path)
    x = np.eye(6, 3, dtype=np.float32) + 0.1
    r = audit_scores(x, np.array([s.label for s in splits.train]), 2, steps=5, folds=2)
    r.flagged[:] = False
    r.flagged[1] = True
    r.suggested[1] = 0
    write_csv(tmp_path / "audit.csv", splits.train, r, splits.classnames)
    rows = _read(tmp_path / "audit.csv")
    assert [int(row["rank"]) for row in rows] == list(range(1, 7))
    assert [float(row["score"]) for row in rows] == sorted((float(row["score"]) for row in rows), reverse=True)
    fix = write_fix(tmp_path / "fixed.csv", splits, splits.train, r, labels=("a_1", "b"))
    table = _read(fix)
    assert list(table[0]) == ["path", "label", "split", "given_label", "changed"]
    assert [row["split"] for row in table] == ["train"] * 6 + ["val"] * 3 + ["test"] * 2  # every row of the source
    assert [row["path"] for row in table] == [s.path for key in ("train", "val", "test") for s in getattr(splits, key)]
    assert [row["changed"] for row in table] == ["0", "1"] + ["0"] * 9  # only the flagged row changed
    assert table[1]["label"] == "a_1" and table[1]["given_label"] == "b"  # labels as the source writes them
    assert [row["label"] for row in table] == ["a_1", "a_1", "a_1", "b", "a_1", "b", "a_1", "b", "a_1", "a_1", "b"]
    loaded = load_csv(fix)  # the package reads its own corrected file (the extra columns are known)
    assert [s.label for s in loaded.train] == [0, 0, 0, 1, 0, 1] and (len(loaded.val), len(loaded.test)) == (3, 2)
    few = audit_scores(x[:4], np.array([0, 1, 0, 1]), 2, steps=5, folds=2)
    with pytest.raises(DataError, match="are not the 6 training rows"):  # a few-shot run's samples cover 4 of 6
        write_fix(tmp_path / "bad.csv", splits, splits.train[:4], few)
    changed = (replace(splits.train[0], label=1, classname="b"), *splits.train[1:])  # the source changed since
    with pytest.raises(DataError, match="is not training row 0"):
        write_fix(tmp_path / "bad.csv", splits, changed, r)
    assert not (tmp_path / "bad.csv").exists()
    train = (replace(splits.train[0], true_label=1), replace(splits.train[1], true_label=None), *splits.train[2:])
    table = _read(write_fix(tmp_path / "truth.csv", replace(splits, train=train), splits.train, r))  # truth kept
    assert [row["true_label"] for row in table[:3]] == ["b", "", "a"]
    assert [s.true_label for s in load_csv(tmp_path / "truth.csv").train[:3]] == [1, None, 0]
    (tmp_path / "odd.csv").write_text("path,label,comment\n0.png,a,x\n")
    with pytest.raises(DataError, match="unknown column 'comment'"):
        load_csv(tmp_path / "odd.csv")
    assert class_summary(r, splits.classnames)[1] == {"class": "b", "samples": 3, "flagged": 1, "rate": 1 / 3}
    assert confused_pairs(r, splits.classnames) == [{"given": "b", "suggested": "a", "count": 1}]
    r.suggested[0], r.score[0], r.score[1] = r.given[0], 0.9, 0.5  # an agreeing sample scored above the flagged one
    page = write_html(tmp_path / "audit.html", splits.train, r, splits.classnames, thumbnails=0).read_text()
    assert ("<b>1</b> flagged:\nthe highest-scored of the samples whose suggested label differs from the given one, "
            "no more than the estimate.") in page  # fmt: skip


def test_shots_all_keeps_every_training_image(world) -> None:  # noqa: F811
    from visprompt.data.pipeline import prepare_fewshot

    assert load_config([], ["data.shots=all"]).data.shots == "all"
    with pytest.raises(ConfigError, match=r"data\.shots"):
        load_config([], ["data.shots=some"])
    splits = prepare_fewshot("folder", "DATA", "all", path=str(world["data"]))
    few = prepare_fewshot("folder", "DATA", 2, path=str(world["data"]))
    assert len(splits.train) > len(few.train) == 2 * len(COLOURS)
    assert len(splits.val) == len(prepare_fewshot("folder", "DATA", 4, path=str(world["data"])).val)


def test_audit_cli_errors_are_one_line(tmp_path, capsys) -> None:
    assert cli.main(["audit", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: run directory {tmp_path / 'nope'} does not exist"
    run = tmp_path / "run"
    run.mkdir()
    assert cli.main(["audit", str(run)]) == 2
    assert "not a run directory (no config.yaml)" in capsys.readouterr().err
    (run / "config.yaml").write_text("{}\n")
    assert cli.main(["audit", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no split.json" in err
    assert cli.main(["audit"]) == 2
    assert "give a RUN_DIR" in capsys.readouterr().err
    # --data moves a run's images; with --dataset it would audit other images than those trained on
    one_shot = ["audit", "--dataset", "testbed-backgrounds", "--root", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main([*one_shot, "--data", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data: only with RUN_DIR") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # refused before anything is trained
    for option in (["--method", "coop"], ["--feature-store", "none"], ["--set", "optim.lr=0.1"], ["--seed", "2"]):
        assert cli.main(["audit", str(run), *option]) == 2  # options of a training run RUN_DIR never makes
        assert capsys.readouterr().err.startswith(f"error: {option[0]}: only with --dataset")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,note\nx.png,a,hi\n")
    before = labels.read_bytes()
    out = tmp_path / "out"
    testbed = ["--backbone", "testbed", "--set", "backbone.weights=null"]
    assert cli.main(["audit", "--dataset", "csv", "--set", f"data.path={labels}", "--out", str(out), *testbed]) == 2
    assert "unknown column 'note'" in capsys.readouterr().err
    assert not any(out.rglob("*")) and labels.read_bytes() == before  # nothing written, the user's file untouched
    for name in ("csv", "CSV"):  # any name of the dataset
        assert cli.main(["audit", "--dataset", name, "--set", f"data.path={labels}", "--fix", str(labels)]) == 2
        assert "never overwrites" in capsys.readouterr().err


def _label_file(base) -> tuple:
    """A CSV of 6 train, 6 val and 3 test rows per class (labels written ``c_<colour>``), two training labels wrong."""
    images = make_folder_dataset(base / "images", train=12, test=3)
    rows = []
    for colour in COLOURS:
        files = sorted((images / "train" / colour).iterdir(), key=lambda p: int(p.stem))
        rows += [(f, f"c_{colour}", "train") for f in files[:6]] + [(f, f"c_{colour}", "val") for f in files[6:]]
        rows += [(f, f"c_{colour}", "test") for f in sorted((images / "test" / colour).iterdir())]
    rows[0], rows[15] = (rows[0][0], "c_green", "train"), (rows[15][0], "c_blue", "train")
    labels = base / "labels.csv"
    labels.write_text("path,label,split\n" + "".join(f"{f},{y},{k}\n" for f, y, k in rows))
    return labels, rows


def _check_fixed(fixed, rows, audit_csv) -> None:
    """``fixed`` holds every row of the source ``rows`` (split by split); only the audit's flagged rows changed."""
    table = _read(fixed)
    rows = [r for key in ("train", "val", "test") for r in rows if r[2] == key]
    assert [(r["path"], r["split"]) for r in table] == [(str(f), k) for f, _, k in rows]
    assert [r["given_label"] for r in table] == [y for _, y, _ in rows]
    flagged = {r["path"]: r["suggested_label"] for r in _read(audit_csv) if r["flagged"] == "1"}
    for r in table:
        if r["path"] in flagged:  # the suggestion, written as the source writes its labels
            assert r["changed"] == "1" and r["label"] == flagged[r["path"]].replace(" ", "_") != r["given_label"]
        else:
            assert r["changed"] == "0" and r["label"] == r["given_label"]


def test_audit_fix_holds_every_row_of_the_source(world, tmp_path, capsys) -> None:  # noqa: F811
    labels, rows = _label_file(tmp_path)
    base = ["--backbone", str(world["arch"]), "--weights", "none", "--method", "zeroshot", "--device", "cpu"]
    one_shot = ["audit", "--dataset", "csv", "--set", f"data.path={labels}", *base]
    out, fixed = tmp_path / "runs", tmp_path / "fixed.csv"
    for option, message in (
        (["--shots", "2"], "--fix: the run trained on 2 images per class (data.shots=2), not on every training image"),
        (["--noise", "sym", "--rate", "0.25"], "--fix: the run trained on labels with synthetic noise"),
    ):  # refused before training: nothing written
        assert cli.main([*one_shot, *option, "--out", str(out), "--fix", str(fixed)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1
        assert not out.exists() and not fixed.exists()
    assert cli.main([*one_shot, "--out", str(out), "--name", "all", "--fix", str(fixed)]) == 0
    assert "corrected labels: " in capsys.readouterr().out
    assert len(_read(fixed)) == len(rows) == 45  # 18 train, 18 val, 9 test: not 18 + 4 per class + 9
    _check_fixed(fixed, rows, out / "all" / "audit" / "audit.csv")
    summary = json.loads((out / "all" / "audit" / "summary.json").read_text())
    assert sum(r["changed"] == "1" for r in _read(fixed)) == summary["flagged"]
    again = tmp_path / "again.csv"  # the run-directory form writes the same rows
    assert cli.main(["audit", str(out / "all"), "--to", str(tmp_path / "again"), "--fix", str(again)]) == 0
    _check_fixed(again, rows, tmp_path / "again" / "audit.csv")
    assert cli.main(["audit", str(out / "all"), "--to", str(tmp_path / "x"), "--fix", str(labels)]) == 2
    assert "that is the input label file" in capsys.readouterr().err
    assert cli.main([*one_shot, "--shots", "2", "--out", str(out), "--name", "few"]) == 0  # audited, no --fix
    capsys.readouterr()
    assert cli.main(["audit", str(out / "few"), "--to", str(tmp_path / "x"), "--fix", str(tmp_path / "x.csv")]) == 2
    assert "(data.shots=2), not on every training image" in capsys.readouterr().err
    lines = labels.read_text().splitlines(keepends=True)
    labels.write_text("".join([*lines[:2], lines[2].replace(",train", ",test"), *lines[3:]]))  # a row moved to test
    assert cli.main(["audit", str(out / "all"), "--to", str(tmp_path / "x"), "--fix", str(tmp_path / "x.csv")]) == 2
    assert "are not the 17 training rows of csv" in capsys.readouterr().err  # the source changed since the run
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_audit_one_shot_and_run_dir(world, tmp_path, capsys) -> None:  # noqa: F811
    args = [
        "audit", "--dataset", "folder", "--set", f"data.path={world['data']}", "--backbone", str(world["arch"]),
        "--weights", "none", "--method", "coop", "--noise", "sym", "--rate", "0.25", "--epochs", "1", "--out",
        str(tmp_path), "--name", "run", "--device", "cpu", "--set", "optim.batch_size=4", "--set", "prompt.n_ctx=4",
        "--thumbnails", "3",
    ]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    split = json.loads((run / "split.json").read_text())
    n = len(split["train"]["label"])
    assert f"{n} training samples audited" in out and "labels are known to be wrong" in out
    rows = _read(run / "audit" / "audit.csv")
    assert len(rows) == n
    page = (run / "audit" / "audit.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "http://" not in page and "https://" not in page
    summary = json.loads((run / "audit" / "summary.json").read_text())
    assert summary["true_errors"] == sum(
        a != b for a, b in zip(split["train"]["label"], split["train"]["true_label"], strict=True)
    )
    assert summary["timings"]["features_cached"] == 0.0
    est, flagged = summary["estimated_errors"], summary["flagged"]
    assert f"about {est} wrong labels" in out and f"{flagged} flagged" in out and f"about <b>{est}</b>" in page
    assert flagged == sum(r["flagged"] == "1" for r in rows) <= max(est, 0)  # the flagged set is the top estimate
    assert est == round(summary["stats"]["estimate"])
    fix = ["--to", str(tmp_path / "x"), "--fix", str(tmp_path / "fixed.csv")]
    assert cli.main(["audit", str(run), *fix]) == 2  # the labels are the run's synthetic noise: nothing to correct
    assert "synthetic noise (noise.type=sym)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "fixed.csv").exists()
    assert cli.main(["audit", str(run), "--to", str(tmp_path / "again"), "--device", "cpu"]) == 0  # from the cache
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["timings"]["features_cached"] == 1.0 and again["estimated_errors"] == summary["estimated_errors"]
