from fer_lib import published
from fer_lib.metrics import metric_spec


def test_every_published_row_has_a_source_and_a_value():
    df = published.published_table()
    assert list(df.columns) == published.COLUMNS
    assert (df.source.str.len() > 10).all()
    assert df.value.notna().all()
    # one number per (model, dataset, split, metric): no conflicting duplicates
    assert not df.duplicated(["model", "dataset", "split", "metric"]).any()


def test_wide_model_table_is_a_reshape_of_the_long_one():
    wide = published.published_models_table().set_index("model")
    long = published.published_table()
    row = long[(long.model == "enet_b2_8_best") & (long.dataset == "vgaf")]
    assert wide.loc["enet_b2_8_best", "vgaf"] == row.value.item()
    # models without an 8-class result stay blank rather than zero
    assert wide["accuracy_8cls"].isna().sum() == 3
    assert list(wide.index[:2]) == ["mobilenet_7", "enet_b0_8_best_afew"]


def test_stride_study_decreases_with_stride():
    vals = [published.STRIDE_STUDY[s] for s in sorted(published.STRIDE_STUDY)]
    assert vals == sorted(vals, reverse=True)


def test_every_published_metric_is_declared_and_in_its_declared_unit():
    df = published.published_table()
    units = {m: metric_spec(m).unit for m in df.metric.unique()}  # raises for an undeclared name
    assert {"gender_accuracy", "valence_ccc", "age_mae", "accuracy_stride4"} <= set(units)
    for r in df.itertuples():
        assert r.unit == ("%" if units[r.metric] == "fraction" else units[r.metric]), r
    assert set(df[df.metric == "age_mae"].unit) == {"years"} and set(df[df.metric == "accuracy"].unit) == {
        "%"
    }


def test_mobilenet_7_vgaf_is_the_authors_corrected_value():
    # The README showed 70.31 at d0ac879; the authors corrected it to 68.92 in a9ad080 (2021-10-02), the
    # value of every later README (checked up to f1df0e8), whose table the other rows come from.
    wide = published.published_models_table().set_index("model")
    assert wide.loc["mobilenet_7", "vgaf"] == 68.92
