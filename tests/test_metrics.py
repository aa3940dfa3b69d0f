"""Evaluation metrics: likelihood/NLL, top-k, per-class, calibration, empty-frame filtering."""

from __future__ import annotations

import numpy as np
import pytest

from kerascls.evaluation import metrics as M

Y = [0, 1, 0, 1, 1]
P1 = [0.1, 0.8, 0.2, 0.7, 0.9]


@pytest.mark.parametrize("y, p1, expected", [
    (Y, P1, 0.362880),                                    # 0.9·0.8·0.8·0.7·0.9
    (Y, [0.1, 0.9, 0.2, 0.7, 0.9], 0.408240),
    (np.repeat(Y, 10), np.repeat(P1, 10), 0.000040),      # 0.36288**10 = 4.0e-5
])
def test_binary_likelihood_is_the_product_of_observed_probabilities(y, p1, expected):
    rep = M.binary_likelihood(y, p1)
    assert round(rep["likelihood"], 6) == expected
    assert rep["nll"] == pytest.approx(-np.log(rep["likelihood"]) / len(y), rel=1e-9)
    assert rep["log_likelihood"] == pytest.approx(np.log(rep["likelihood"]), rel=1e-9)


def test_likelihood_stays_finite_in_log_space_for_many_images():
    rep = M.binary_likelihood(np.repeat(Y, 10_000), np.repeat(P1, 10_000))
    assert rep["likelihood"] == 0.0  # underflows, as it must …
    assert rep["log_likelihood"] == pytest.approx(10_000 * np.log(0.36288))  # … the log doesn't
    assert rep["nll"] == pytest.approx(-np.log(0.36288) / 5)


def test_multiclass_nll_equals_keras_cross_entropy():
    import keras
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    y = rng.integers(0, 4, 50)
    ref = float(keras.losses.SparseCategoricalCrossentropy()(y, probs))
    assert M.classification_report(probs, y, list("abcd"))["nll"] == pytest.approx(ref, rel=1e-4)


def test_topk_confusion_and_per_class():
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    y = np.array([0, 1, 2, 2])
    assert M.topk_accuracy(probs, y, 1) == 0.5
    assert M.topk_accuracy(probs, y, 2) == 1.0
    cm = M.confusion_matrix(y, probs.argmax(1), 3)
    assert cm.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    rows = {r["class"]: r for r in M.per_class(cm, ["a", "b", "c"])}
    assert rows["a"]["precision"] == 0.5 and rows["a"]["recall"] == 1.0
    assert rows["a"]["f1"] == pytest.approx(2 / 3)
    assert rows["b"] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows["c"]["precision"] == 1.0 and rows["c"]["recall"] == 0.5


def test_calibration_error():
    # all confident at 0.88 (not a bin midpoint) and all right: ECE = 0.12, one populated bin
    probs = np.tile([[0.88, 0.12]], (10, 1))
    cal = M.calibration(probs, np.zeros(10))
    assert cal["ece"] == pytest.approx(0.12)
    full = [b for b in cal["bins"] if b["count"]]
    assert len(full) == 1 and full[0]["accuracy"] == 1.0
    assert full[0]["confidence"] == pytest.approx(0.88)
    assert full[0]["lower"] == pytest.approx(13 / 15) and full[0]["upper"] == pytest.approx(14 / 15)
    # perfectly calibrated: half right at confidence 0.5
    assert M.calibration(np.tile([[0.5, 0.5]], (4, 1)), [0, 1, 0, 1])["ece"] == pytest.approx(0)


def test_empty_filter_precision_recall():
    names = ["deer", "Blank", "fox"]
    assert M.find_empty_class(names) == 1 and M.find_empty_class(["a", "b"]) is None
    p_empty = np.array([0.95, 0.8, 0.6, 0.3, 0.7, 0.1])
    y = np.array([1, 1, 1, 1, 0, 2])
    probs = np.stack([(1 - p_empty) / 2, p_empty, (1 - p_empty) / 2], 1)
    rows = {r["threshold"]: r for r in M.empty_filter_table(probs, y, 1, [0.5, 0.75, 0.99])}
    assert rows[0.5] == {"threshold": 0.5, "discarded": 4, "precision": 0.75, "recall": 0.75,
                         "animals_lost": 1}
    assert rows[0.75]["precision"] == 1.0 and rows[0.75]["recall"] == 0.5
    assert rows[0.99]["discarded"] == 0 and rows[0.99]["precision"] == 1.0
    rep = M.classification_report(probs, y, names)
    assert rep["empty_class"] == "Blank" and len(rep["empty_filter"]) == 19


def test_unknown_labels_are_skipped():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    rep = M.classification_report(probs, [0, 1, -1], ["a", "b"])
    assert rep["count"] == 2 and rep["skipped_unknown_labels"] == 1 and rep["accuracy"] == 1.0


def test_average_precision_by_hand():
    # ranks: pos, neg, pos, neg -> precisions at the positives 1/1 and 2/3
    assert M.average_precision(np.array([0.9, 0.8, 0.7, 0.1]),
                               np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision(np.array([0.2, 0.1]), np.array([1, 1])) == 1.0
    assert np.isnan(M.average_precision(np.array([0.2, 0.1]), np.array([0, 0])))


def test_multilabel_report():
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    probs = np.array([[0.9, 0.1, 0.6], [0.8, 0.3, 0.4], [0.2, 0.7, 0.1], [0.4, 0.1, 0.2]])
    rep = M.multilabel_report(probs, y, ["deer", "empty", "fox"])
    rows = {r["class"]: r for r in rep["per_class"]}
    assert rows["deer"]["recall"] == pytest.approx(2 / 3) and rows["deer"]["precision"] == 1
    assert rows["fox"]["f1"] == 1.0 and rows["empty"]["support"] == 1
    assert rep["exact_match"] == 0.75 and rep["mAP"] == 1.0  # every positive ranks first
    assert rep["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 0 + 1))
    p_obs = np.where(y > 0, probs, 1 - probs)
    assert rep["loss"] == pytest.approx(-np.log(p_obs).mean())


def test_binary_head_becomes_two_classes():
    probs = M.two_class(np.array([[0.9], [0.2]]))
    np.testing.assert_allclose(probs, [[0.1, 0.9], [0.8, 0.2]])
    rep = M.classification_report(probs, np.array([1, 1]), ["empty", "animal"])
    assert rep["accuracy"] == 0.5 and rep["empty_class"] == "empty"
