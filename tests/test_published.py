from fer_lib import published


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
