"""fer_lib.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
import torch

from fer_lib import metrics as M

RNG = np.random.default_rng(0)
Y_TRUE = RNG.integers(0, 5, 200)
Y_PRED = np.where(RNG.random(200) < 0.6, Y_TRUE, RNG.integers(0, 5, 200))


def test_classification_metrics_match_sklearn():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PRED))
    assert M.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert M.macro_f1(Y_TRUE, Y_PRED) == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"))
    np.testing.assert_array_equal(M.confusion_matrix(Y_TRUE, Y_PRED), skm.confusion_matrix(Y_TRUE, Y_PRED))
    np.testing.assert_allclose(
        M.per_class_recall(Y_TRUE, Y_PRED), skm.recall_score(Y_TRUE, Y_PRED, average=None)
    )
    np.testing.assert_allclose(
        M.confusion_matrix(Y_TRUE, Y_PRED, normalize="true"),
        skm.confusion_matrix(Y_TRUE, Y_PRED, normalize="true"),
    )


def test_fixed_label_space_counts_absent_classes_as_zero():
    t, p = [0, 0, 1, 1], [0, 0, 1, 0]
    # hand: class 0 F1 = 2*2/(3+2) = 0.8, class 1 F1 = 2*1/(1+2) = 2/3, class 2 absent -> 0
    assert M.macro_f1(t, p) == pytest.approx((0.8 + 2 / 3) / 2)
    assert M.macro_f1(t, p, labels=range(3)) == pytest.approx((0.8 + 2 / 3) / 3)
    assert M.confusion_matrix(t, p, labels=range(3)).tolist() == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert M.balanced_accuracy(t, p) == pytest.approx((1.0 + 0.5) / 2)


def test_abaw_expression_scores():
    f1, acc = skm.f1_score(Y_TRUE, Y_PRED, average="macro"), skm.accuracy_score(Y_TRUE, Y_PRED)
    assert M.abaw_expr_score_2020(Y_TRUE, Y_PRED) == pytest.approx(0.67 * f1 + 0.33 * acc)
    assert M.abaw_expr_score(Y_TRUE, Y_PRED) == pytest.approx(f1)


def test_age_metrics():
    t, p = [20, 30, 40, 50], [22, 30, 33, 56]
    assert M.age_mae(t, p) == pytest.approx((2 + 0 + 7 + 6) / 4)
    assert M.cumulative_score(t, p, 5) == pytest.approx(0.5)
    assert M.cumulative_score(t, p, 6) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="match one to one"):
        M.age_mae([1, 2], [1])


def test_ccc_hand_values():
    x = np.array([0.1, -0.5, 0.8, 0.3, -0.2])
    x = x - x.mean()  # zero mean: x and -x then differ only in sign
    assert M.ccc(x, x) == pytest.approx(1.0)
    assert M.ccc(x, -x) == pytest.approx(-1.0)
    assert M.ccc(x + 1, -x) == pytest.approx(-2 * x.var() / (2 * x.var() + 1))
    c = 0.4
    closed = 2 * x.var() / (2 * x.var() + c**2)  # x and x + c: perfect correlation, shifted mean
    assert M.ccc(x, x + c) == pytest.approx(closed)
    assert M.ccc(x, x + c) < 1
    # scale: y = 2x -> 2*2var / (var + 4var) = 0.8
    assert M.ccc(x, 2 * x) == pytest.approx(0.8)
    # per dimension on [N, 2] and the ABAW VA score as their mean
    va_t = np.stack([x, x], 1)
    va_p = np.stack([x, -x], 1)
    np.testing.assert_allclose(M.ccc(va_t, va_p), [1.0, -1.0])
    assert M.abaw_va_score(va_t, np.stack([x, x + c], 1)) == pytest.approx((1 + closed) / 2)


def test_ccc_loss_matches_numpy_and_is_differentiable():
    t = torch.tensor(RNG.normal(size=(64, 2)), dtype=torch.float32)
    p = (0.7 * t + 0.3 * torch.randn(64, 2)).requires_grad_(True)
    loss = M.ccc_loss(p, t)
    expected = np.mean(1 - M.ccc(t.numpy(), p.detach().numpy()))
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_ccc_loss_mask_ignores_unlabelled_and_empty_gives_zero():
    t = torch.tensor(RNG.normal(size=(10, 2)), dtype=torch.float32)
    p = torch.tensor(RNG.normal(size=(10, 2)), dtype=torch.float32)
    mask = torch.ones(10, 2, dtype=torch.bool)
    mask[7:] = False
    garbage_t = t.clone()
    garbage_t[7:] = 99.0  # unlabelled rows may hold anything
    masked = M.ccc_loss(p, garbage_t, mask)
    assert float(masked) == pytest.approx(float(M.ccc_loss(p[:7], t[:7])), abs=1e-6)
    q = p.clone().requires_grad_(True)
    none = M.ccc_loss(q, t, torch.zeros(10, 2, dtype=torch.bool))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.count_nonzero(q.grad) == 0


def test_declared_directions_and_units():
    assert M.metric_spec("age_mae").direction == "min" and M.metric_spec("age_mae").unit == "years"
    assert M.metric_spec("loss").direction == "min" and M.metric_spec("latency_ms").direction == "min"
    for name in ("accuracy", "accuracy_8cls", "gender_accuracy", "age_cs5", "face_detection_rate"):
        assert M.metric_spec(name) == M.MetricSpec("max", "fraction", M.metric_spec(name).description), name
    for name in ("valence_ccc", "arousal_ccc", "va_ccc"):
        assert (M.metric_spec(name).direction, M.metric_spec(name).unit) == ("max", ""), name
    assert M.metric_spec("accuracy_stride6").direction == "max"
    spec = M.metric_spec("accuracy_detect_every3")
    assert (spec.direction, spec.unit) == ("max", "fraction") and "every 3-th frame" in spec.description
    assert all(spec.description for spec in M.METRICS.values())


@pytest.mark.parametrize(
    "name",
    ["gender_acc", "ccc_valence", "frame_detection_rate", "accuracy_stride0", "accuracy_detect_every", "mae"],
)
def test_unknown_metric_name_lists_the_known_ones(name):
    with pytest.raises(ValueError, match=f"unknown metric name '{name}'") as err:
        M.metric_spec(name)
    listed = str(err.value).split(" are: ")[1].split(", ")
    assert set(M.METRICS) <= set(listed) and {"accuracy_stride<N>", "accuracy_detect_every<N>"} <= set(listed)


def test_every_name_the_stages_and_the_trainer_compute_is_declared():
    from fer_lib.stages import expression, pretrain
    from fer_lib.training import metrics_from_predictions

    y = np.array([0, 1, 1, 0])
    pred = {
        f"{k}_{t}": y for k in ("label", "mask") for t in ("identity", "age", "gender", "race", "expression")
    }
    pred.update({f"{t}_pred": y for t in ("identity", "age", "gender", "race", "expression")})
    va = np.array([0.1, -0.3, 0.5, 0.0])
    pred.update({f"{k}_{d}": v for d in ("valence", "arousal") for k, v in (("label", va), ("pred", va))})
    pred.update({f"{d}_pred": va for d in ("valence", "arousal")})
    pred.update({f"mask_{d}": np.ones(4, bool) for d in ("valence", "arousal")})
    tasks = {"identity": 2, "age": 1, "gender": 1, "race": 2, "expression": 8, "va": 2}
    names = set(metrics_from_predictions(pred, tasks)) | {"loss"}
    logits = np.eye(8)[[0, 7, 2, 1]]
    names |= set(
        expression.expression_metrics(
            {**pred, "label_expression": np.array([0, 7, 2, 7]), "expression_logits": logits}, 8
        )
    )
    attrs = pd.DataFrame(
        {
            "age": [20, 30],
            "age_pred": [22, 25],
            "gender": [0, 1],
            "gender_pred": [0, 0],
            "race": [1, 2],
            "race_pred": [1, 2],
        }
    )
    names |= set(pretrain.attribute_metrics(attrs))
    assert {
        "valence_ccc",
        "va_ccc",
        "accuracy_7cls",
        "gender_accuracy",
        "race_accuracy",
        "expression_macro_f1",
    } <= names
    assert [n for n in names if n not in M.METRICS] == []


def test_every_head_metric_name_comes_from_the_task_registry():
    from fer_lib.tasks import all_tasks

    from_registry = {name for spec in all_tasks() for name in spec.metric_names()}
    heads = tuple(f"{k}_" for spec in all_tasks() for k in (*spec.label_keys, spec.key))
    assert from_registry <= set(M.METRICS)
    # the heads' names in the vocabulary are the registry's, plus the stages' own (worst-group recalls, ABAW)
    others = {"race_min_recall", "gender_min_recall", "expression_abaw2020"}
    assert {n for n in M.METRICS if n.startswith(heads)} - from_registry == others


@pytest.mark.parametrize("quantity", sorted(M.SCORES))
def test_each_head_quantity_is_declared_and_scores_a_perfect_prediction_best(quantity):
    spec = M.QUANTITIES[quantity]
    y = np.array([3.0, 1.0, 2.0, 1.0, 0.0])
    assert M.score(quantity, y, y) == (0.0 if spec.direction == "min" else 1.0)
    assert M.SCORES[quantity].min_samples >= 1


def test_share_interval_draws_whole_groups_again():
    rng = np.random.default_rng(1)
    hits = rng.random(400) < 0.5
    low, high = M.share_interval(hits, np.arange(400))  # one sample per group: the ordinary bootstrap
    half = 1.96 * np.sqrt(0.25 / 400)  # the normal approximation's half width, 0.049
    assert low < hits.mean() < high and (high - low) / 2 == pytest.approx(half, rel=0.15)
    # the same hits in 8 groups of 50 that each hold all hits or none: 8 independent draws, not 400
    clustered = np.repeat([1, 0, 1, 0, 1, 0, 1, 0], 50)
    low, high = M.share_interval(clustered, np.repeat(np.arange(8), 50))
    assert high - low > 0.5 and low <= 0.25 and high >= 0.75
    # identical draws for one seed, a share of 0 has the interval (0, 0)
    assert M.share_interval(hits, np.arange(400), seed=3) == M.share_interval(hits, np.arange(400), seed=3)
    assert M.share_interval(np.zeros(10), np.arange(10)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="must match"):
        M.share_interval([1, 0], [0])
