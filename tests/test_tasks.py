"""The task registry (fer_lib.tasks): every head is built, trained, decoded, scored and served from its
spec, so a new entry is tested the day it is added, and a head registered here (a toy ``pose`` head)
is picked up by the model, the loss, the evaluation and the metric vocabulary without other edits."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fer_lib import metrics as M
from fer_lib import tasks
from fer_lib.models import MultiTaskNet
from fer_lib.serving import Recognizer
from fer_lib.serving.predict import columns
from fer_lib.serving.recognizer import FacePrediction, served_tasks
from fer_lib.training import MultiTaskLoss, count_classes, evaluate, metrics_from_predictions
from fer_lib.training.losses import LOSSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = tasks.all_tasks()
IDS = [s.key for s in SPECS]


def _size(spec: tasks.TaskSpec) -> int:
    return spec.outputs or 3  # identity: as many classes as the data has identities


def _labels(spec: tasks.TaskSpec, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Labels a head of ``spec`` trains on: class indices for a classification, values otherwise."""
    g = torch.Generator().manual_seed(seed)
    k = spec.n_classes(_size(spec))
    if k is not None:
        return {key: torch.arange(n) % k for key in spec.label_keys}
    return {key: torch.rand(n, generator=g) * 80 + 1 for key in spec.label_keys}


class _Faces(Dataset):
    """Random images with the labels of some heads, every label present."""

    def __init__(self, specs, n: int = 12) -> None:
        self.x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        self.lab = {k: v for s in specs for k, v in _labels(s, n).items()}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], {k: v[i] for k, v in self.lab.items()}, {k: torch.tensor(True) for k in self.lab}


# ------------------------------------------------------------------------------- every registered head
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_spec_names_a_known_loss_decoder_and_scores(spec):
    assert spec.loss in LOSSES and spec.decode in tasks.DECODERS
    assert set(spec.quantities) <= set(M.SCORES)
    assert spec.label_keys and spec.display and spec.public
    for name in spec.metric_names():
        assert M.metric_spec(name).description, name


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_head_is_built_and_trained_from_its_spec(spec):
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", {spec.key: _size(spec)}, hidden=16, verbose=False)
    assert (net.heads[spec.key].in_features == 16) == spec.on_trunk
    x, lab = torch.randn(6, 3, 32, 32), _labels(spec, 6)
    out = net(x)
    loss_fn = MultiTaskLoss(net.tasks)
    total, parts, counts = loss_fn(out, lab, {k: torch.ones(6, dtype=torch.bool) for k in lab})
    total.backward()
    value = float(total.detach())
    assert np.isfinite(value) and counts[spec.key] == 6 and parts[spec.key] == value
    assert net.heads[spec.key].weight.grad.abs().sum() > 0
    # no labelled sample: an exact zero loss and gradient
    net.zero_grad()
    none = {k: torch.zeros(6, dtype=torch.bool) for k in lab}
    total, parts, counts = loss_fn(net(x), lab, none)
    total.backward()
    assert float(total.detach()) == 0.0 and counts[spec.key] == 0
    assert torch.count_nonzero(net.heads[spec.key].weight.grad) == 0


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_head_decodes_and_scores_perfect_predictions_best(spec):
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", {spec.key: _size(spec)}, hidden=16, verbose=False)
    out = net(torch.randn(5, 3, 32, 32))[spec.key]
    decoded = spec.decoder.predictions(spec, out, net.age_mode, net.male_threshold)
    assert {f"{k}_pred" for k in spec.label_keys} <= set(decoded)
    assert all(len(v) == 5 for v in decoded.values())
    # predictions equal to the labels score the best value of every quantity
    lab = {k: v.numpy() for k, v in _labels(spec, 8).items()}
    pred = {f"label_{k}": v for k, v in lab.items()} | {f"{k}_pred": v for k, v in lab.items()}
    pred |= {f"mask_{k}": np.ones(8, bool) for k in lab}
    got = metrics_from_predictions(pred, {spec.key: _size(spec)})
    assert list(got) == spec.metric_names()
    for name, value in got.items():
        best = 0.0 if M.metric_spec(name).direction == "min" else 1.0
        assert value == pytest.approx(best), name


@pytest.mark.parametrize("spec", [s for s in SPECS if s.n_classes(_size(s)) is not None], ids=str)
def test_each_classification_head_is_counted_for_class_weights(spec):
    ds = _Faces([spec])
    counts = count_classes(ds, {spec.key: _size(spec)}, progress=False)
    k = spec.n_classes(_size(spec))
    np.testing.assert_array_equal(counts[spec.key], np.bincount(np.arange(12) % k, minlength=k))


def test_served_heads_fill_declared_prediction_fields_in_their_order():
    fields = [f.name for f in dataclasses.fields(FacePrediction)]
    served = served_tasks()
    assert [s.key for s in served] == ["expression", "va", "age", "gender", "race"]
    flat = [f for s in served for f in s.fields]
    assert flat == [f for f in fields if f in flat]  # each head's fields, in FacePrediction's order
    assert "identity" not in {s.key for s in served}  # a training head: no prediction field


def test_race_is_ethnicity_outside():
    race = tasks.get_task("race")
    assert (race.key, race.public, race.display) == ("race", "ethnicity", "Ethnicity")
    assert race.fields == ("ethnicity", "ethnicity_probs")
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", {"race": 5, "gender": 1}, hidden=16, verbose=False)
    rec = Recognizer(net, crops=True, fold_bn=False)
    cols = columns(rec)
    assert cols[cols.index("ethnicity") :] == ["ethnicity"] + [f"eth_{n}" for n in race.classes]
    assert not [c for c in cols if "race" in c]
    face = rec.predict_faces([np.full((40, 40, 3), 128, np.uint8)])[0]
    assert face.ethnicity in race.classes and set(face.ethnicity_probs) == set(race.classes)
    assert set(face.to_row()) >= set(cols) - {"file", "face"}


def test_the_registry_imports_without_torch():
    code = "import sys, fer_lib.tasks, fer_lib.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_spec_with_an_unknown_decoder_or_a_taken_key_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="choose one of argmax, threshold, age, values"):
        tasks.TaskSpec(key="pose", display="Pose", loss="cross_entropy", decode="softmax", quantities=())
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    with pytest.raises(ValueError, match="registered already"):
        tasks.register_task(tasks.get_task("age"))
    with pytest.raises(ValueError, match="clash"):
        tasks.register_task(dataclasses.replace(tasks.get_task("va"), key="va2"))
    with pytest.raises(ValueError, match="unknown task head 'pose'; the heads are identity, age"):
        tasks.get_task("pose")


# --------------------------------------------------------------------------------- a head added here
POSE = tasks.TaskSpec(
    key="pose",
    display="Head pose",
    loss="cross_entropy",
    decode="argmax",
    quantities=("accuracy", "macro_f1"),
    classes=("left", "frontal", "right"),
    outputs=3,
    served=False,
)


@pytest.fixture
def pose(monkeypatch):
    """The registry with a toy ``pose`` head, for this test only (the real registry is restored)."""
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    return tasks.register_task(POSE)


def test_a_registered_head_is_built_trained_evaluated_and_scored(pose):
    torch.manual_seed(0)
    heads = {"pose": 3, "age": 100}
    net = MultiTaskNet("tiny_cnn", heads, hidden=16, verbose=False).eval()
    assert net.heads["pose"].out_features == 3 and net.heads["pose"].in_features == net.num_features
    ds = _Faces([pose, tasks.get_task("age")])
    x, lab, mask = next(iter(DataLoader(ds, batch_size=12)))
    with torch.no_grad():
        out = net(x)
    _, parts, counts = MultiTaskLoss(heads)(out, lab, mask)
    want = torch.nn.functional.cross_entropy(out["pose"], lab["pose"])
    assert parts["pose"] == pytest.approx(float(want), rel=1e-6) and counts["pose"] == 12
    got = evaluate(net, DataLoader(ds, batch_size=5), device="cpu", progress=False)
    y, p = lab["pose"].numpy(), out["pose"].argmax(-1).numpy()
    assert got["pose_accuracy"] == pytest.approx(M.accuracy(y, p))
    assert got["pose_macro_f1"] == pytest.approx(M.macro_f1(y, p))
    assert M.metric_spec("pose_accuracy").direction == "max"
    assert tasks.default_label_orders(net.tasks)["pose"] == ["left", "frontal", "right"]
    assert count_classes(ds, heads, progress=False)["pose"].tolist() == [4, 4, 4]
    # not served: the Recognizer leaves it out
    rec = Recognizer(net, crops=True, fold_bn=False)
    assert [s.key for s in served_tasks(rec.tasks)] == ["age"]
    assert columns(rec)[-1] == "age"


def test_a_served_head_needs_its_prediction_fields_declared(pose, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "pose", dataclasses.replace(pose, served=True))
    with pytest.raises(
        ValueError, match=r"FacePrediction does not declare: \{'pose': \['pose', 'pose_probs'\]"
    ):
        served_tasks()
