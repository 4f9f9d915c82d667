"""A published run's models: half-precision copies with model cards, and predict's fallback to them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib import config, reporting
from fer_lib.models import MultiTaskNet, load_checkpoint, save_checkpoint
from fer_lib.serving import NoCheckpointError, Recognizer, default_checkpoint
from fer_lib.stages import report

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run_folder(tmp_results, stamp=True):
    """A run's two checkpoints (tiny networks) and its test metrics, as the stages leave them: recording
    a model's metrics stamps its checkpoint with their ``model`` name (``stamp=False``: never recorded)."""
    paths = config.get_paths()
    torch.manual_seed(0)
    expr = MultiTaskNet("tiny_cnn", {"expression": 7}, verbose=False, input_size=40)
    expr.preprocess = expr.preprocess.replace(colour="grey", max_side=48, margin=(0.1, -0.01, 0.13, -0.02))
    attrs = MultiTaskNet(
        "tiny_cnn",
        {"age": 100, "gender": 1, "race": 5},
        verbose=False,
        male_threshold=0.45,
        grey_heads=("age", "gender"),
        mirror=True,
    )
    attrs.preprocess = attrs.preprocess.replace(max_side=64, contrast="standardise")
    expr_ckpt = save_checkpoint(paths.checkpoints / "02_fer2013_finetune" / "best.pt", expr)
    attrs_ckpt = save_checkpoint(
        paths.checkpoints / "01_attributes" / "best.pt", attrs, config={"train": {"age_sigma": 2.0}}
    )
    kw = dict(profile="default", seed=42, path=paths.metrics_csv)
    chain = dict(kw, checkpoint=expr_ckpt if stamp else None)
    reporting.record_metrics(
        "finetune", "fer2013", "test", "tiny_cnn_40px_utk_init", {"accuracy": 0.612}, **chain
    )
    reporting.record_metrics(  # the predict path's rows of the same model, recorded later
        "finetune", "fer2013", "test", "tiny_cnn_40px_utk_init", {"accuracy_predict": 0.55}, **chain
    )
    reporting.record_metrics(  # the same model on faces from elsewhere (evaluation only)
        "finetune", "ckplus48", "test", "tiny_cnn_40px_utk_init", {"accuracy": 0.433}, **chain
    )
    reporting.record_metrics(
        "finetune", "fer2013", "test", "tiny_cnn_utk_init", {"accuracy": 0.5}, **kw
    )  # an arm
    reporting.record_metrics(  # the from-scratch baseline: same backbone and size, another model
        "finetune", "fer2013", "test", "tiny_cnn_40px_scratch_2ep", {"accuracy": 0.777}, **kw
    )
    reporting.record_metrics(
        "pretrain",
        "utkface",
        "balanced_test_2000",
        "tiny_cnn@32",
        {"age_mae": 5.25},
        **dict(kw, checkpoint=attrs_ckpt if stamp else None),
    )
    return paths


def test_published_models_are_half_precision_copies_with_cards(tmp_results):
    paths = _run_folder(tmp_results)
    table = report.publish_models(config.get_profile("default"), paths)
    assert list(table.model) == ["expression.pt", "attributes.pt"] and set(table.dtype) == {"float16"}
    assert (table.max_abs_diff <= 1e-3).all()
    for name, src in (("expression.pt", "02_fer2013_finetune"), ("attributes.pt", "01_attributes")):
        out = load_checkpoint(paths.results / "models" / name)
        assert {v.dtype for v in out["state_dict"].values() if v.is_floating_point()} == {torch.float16}
        assert out.get("optimizer") is None  # nothing but what serving needs
        full = (paths.checkpoints / src / "best.pt").stat().st_size
        assert (paths.results / "models" / name).stat().st_size < 0.7 * full
    card = (paths.results / "models" / "expression.md").read_text()
    # its own rows (the trainer's and the predict path's), not a transfer arm's or the baseline's
    assert "0.612" in card and "0.55" in card and "0.5 " not in card and "0.777" not in card
    assert "| tiny_cnn_40px_utk_init | ckplus48 | accuracy | 0.433 |" in card  # CK+48's rows beside FER2013's
    assert "widened to its training faces' frame (left +10%, top -1%, right +13%, bottom -2%" in card
    assert "shrunk to at most 48 px -> grey, resized to 40 x 40" in card
    assert "Label order of `expression`: Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger." in card
    assert "mirror image" not in card  # a model without the mirror readout
    card = (paths.results / "models" / "attributes.md").read_text()
    assert "5.25" in card and "p(male) >= 0.45" in card and "non-commercial research only" in card
    assert "the face box (MTCNN's in `predict`, no margin)" in card
    assert "Read from the face's greyscale view (its luma on the three channels, computed inside the " in card
    assert "network): `age`, `gender`; the other heads from the face as it is." in card
    assert "It reads `age` and `gender` from each face's greyscale view" in card
    assert "- Every head reads the mean of its outputs on the face and on its mirror image" in card
    assert "read out as their median" not in card  # this tiny model keeps paper A's readout
    assert "top-2 expected value, trained against a Gaussian of 2 years around each face's age." in card
    assert "`race` sees the colours. Every face's contrast is standardised" in card
    assert "a greyscale copy can change the gender it gives" not in card


def test_a_card_says_what_colour_does_to_each_head():
    pre = MultiTaskNet("tiny_cnn", {"age": 100}, verbose=False).preprocess
    tasks = {"age": 100, "gender": 1, "race": 5}
    words = report._colour_words({"tasks": tasks}, pre)  # a checkpoint older than grey heads
    assert words == "A photo's colours move its answers: a greyscale copy can change the gender it gives."
    words = report._colour_words({"tasks": tasks, "grey_heads": ["age", "gender", "race"]}, pre)
    assert words.startswith("It reads `age` and `gender` and `race` from") and words.endswith("grey levels.")
    assert "moves them only through the box the detector finds" in words


def test_a_checkpoint_without_its_metrics_name_gets_a_card_without_metrics(tmp_results, capsys):
    paths = _run_folder(tmp_results, stamp=False)  # the rows exist, but nothing says they are its own
    report.publish_models(config.get_profile("default"), paths)
    assert capsys.readouterr().out.count("has no 'metrics_model'") == 2
    for name in ("expression", "attributes"):
        card = (paths.results / "models" / f"{name}.md").read_text()
        assert "(none recorded)" in card and "0.612" not in card and "5.25" not in card


def test_the_stages_stamp_the_published_checkpoints_with_the_name_of_their_rows(tmp_results, capsys):
    """What the stages record is what publish_models finds: the name travels in the checkpoint (here the
    profile's names, unlike the tiny networks', so a name rebuilt from the checkpoint finds other rows)."""
    from types import SimpleNamespace

    from fer_lib.stages import expression as E
    from fer_lib.stages import pretrain as P

    paths, cfg = _run_folder(tmp_results, stamp=False), config.get_profile("default")
    tc = cfg.fer2013_finetune
    source = paths.checkpoints / "02_fer2013_finetune" / "best.pt"
    run = E.Run("02_fer2013_finetune", None, tc, E.Init("checkpoint", "01_attributes/best.pt"), None, 60.0)
    run.checkpoint, run.metrics = source, {"accuracy": 0.6321, "macro_f1": 0.5}
    rows = E.record_fer2013(run, cfg, E.model_label(tc, run), paths)
    res = P.Run("01_attributes", None, cfg.pretrain_attributes, E.Init("random"), None, 60.0)
    res.source = SimpleNamespace(name="utkface", real=True)
    res.checkpoint = paths.checkpoints / "01_attributes" / "best.pt"
    cols = ("age", "age_pred", "gender", "gender_pred", "race", "race_pred")
    pred = pd.DataFrame({c: [30, 40] if c.startswith("age") else [0, 1] for c in cols})
    P.record_attributes(res, pred, cfg, paths)
    m = reporting.load_metrics(paths.metrics_csv)
    assert load_checkpoint(source)["metrics_model"] == rows.model.iloc[0]
    assert (
        load_checkpoint(res.checkpoint)["metrics_model"]
        == m.model.iloc[-1]
        == P.model_name(cfg.pretrain_attributes)
    )
    report.publish_models(cfg, paths)
    assert "metrics_model" not in capsys.readouterr().out
    card = (paths.results / "models" / "expression.md").read_text()
    assert f"| {rows.model.iloc[0]} | fer2013 | accuracy | 0.6321 |" in card and "0.777" not in card
    card = (paths.results / "models" / "attributes.md").read_text()
    assert "| age_mae | 0 |" in card and "5.25" not in card


def test_predict_falls_back_to_the_published_models_and_feeds_each_its_own_input(tmp_results, capsys):
    paths = _run_folder(tmp_results)
    report.publish_models(config.get_profile("default"), paths)
    models = paths.results / "models"
    empty = tmp_results / "elsewhere"
    chosen = default_checkpoint(empty, published=models)
    assert chosen == [models / "expression.pt", models / "attributes.pt"]
    assert "using the published models" in capsys.readouterr().err
    rec = Recognizer(chosen)
    assert set(rec.tasks) == {"expression", "age", "gender", "race"} and rec.male_threshold == 0.45
    assert "expression.pt + " in rec.source
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (90, 80, 3), dtype=np.uint8) for _ in range(5)]
    both = rec.infer(crops)
    alone = {
        **Recognizer(models / "expression.pt").infer(crops),
        **Recognizer(models / "attributes.pt").infer(crops),
    }
    for k in ("expression_probs", "age", "p_female", "ethnicity_probs"):
        np.testing.assert_allclose(both[k], alone[k], atol=1e-6)
    faces = rec.predict_faces(crops)
    assert faces[0].expression is not None and faces[0].age is not None and faces[0].ethnicity is not None
    with pytest.raises(NoCheckpointError, match="results/models"):
        default_checkpoint(empty, published=tmp_results / "none")
    with pytest.raises(ValueError, match="earlier model"):
        Recognizer([models / "expression.pt", models / "expression.pt"])


def test_the_committed_models_fit_the_size_bound_and_have_cards():
    folder = config.repo_root() / "results" / "models"
    files = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    if not files:
        pytest.skip("no published models committed yet (a published run writes results/models/)")
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    for f in files:
        assert f.with_suffix(".md").is_file(), f"{f.name} has no model card"
        assert {v.dtype for v in load_checkpoint(f)["state_dict"].values() if v.is_floating_point()} <= {
            torch.float16,
            torch.float32,
        }


def test_a_median_age_on_its_half_way_point_keeps_the_copy_in_float16(tmp_path):
    """A median readout moves in whole years, so a rounding-level change can move a face's age by one
    year: the half-precision copy is checked on the age bins' probabilities, not on the read-out age."""
    from fer_lib.serving.half_precision import half_precision_checkpoint

    net = MultiTaskNet("tiny_cnn", {"age": 100}, age_mode="median", verbose=False)
    with torch.no_grad():  # every face: bins 30 and 31 hold all but 1e-5 of it
        net.heads["age"].weight.zero_()
        net.heads["age"].bias.fill_(48.0)
        net.heads["age"].bias[30] = 64.01  # float32: bin 30 just ahead, so the median is 30; float16
        net.heads["age"].bias[31] = 64.0  # steps by 1/16 at 64, rounds 64.01 to 64 and ties them: 31
    src = save_checkpoint(tmp_path / "median.pt", net)
    report_ = half_precision_checkpoint(src, tmp_path / "half.pt")
    assert report_["dtype"] == "float16" and 2e-3 < report_["max_abs_diff"] < 3e-3  # bin 30's share
    crops = [np.full((60, 60, 3), 128, np.uint8)]
    assert Recognizer(src).infer(crops)["age"].tolist() == [30.0]
    assert Recognizer(tmp_path / "half.pt").infer(crops)["age"].tolist() == [31.0]
