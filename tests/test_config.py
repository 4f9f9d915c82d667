import dataclasses
import os

import pytest

from fer_lib import config


def test_profiles_are_distinct_and_named():
    profs = {n: config.get_profile(n) for n in config.PROFILE_NAMES}
    assert [p.name for p in profs.values()] == list(config.PROFILE_NAMES)
    # smoke is strictly smaller than default, paper uses the published schedule
    assert profs["smoke"].data.n_utkface < profs["default"].data.n_utkface
    assert profs["paper"].finetune.head_epochs == 3 and profs["paper"].finetune.full_epochs == 6
    assert profs["paper"].finetune.sam and profs["paper"].finetune.lr_full == 1e-4
    assert profs["paper"].pretrain_identity.full_epochs == 10


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("FER_PROFILE", "smoke")
    assert config.get_profile().name == "smoke"
    monkeypatch.delenv("FER_PROFILE")
    assert config.get_profile().name == "default"


def test_overrides_coerce_strings_like_a_cli():
    p = config.get_profile(
        "default",
        config.parse_overrides(
            [
                "finetune.full_epochs=7",
                "finetune.sam=true",
                "finetune.grad_clip=1.5",
                "video.strides=1,3",
                "data.real_limit=none",
                "seed=3",
            ]
        ),
    )
    assert p.finetune.full_epochs == 7 and p.finetune.sam is True
    assert p.finetune.grad_clip == 1.5 and p.video.strides == (1, 3)
    assert p.data.real_limit is None and p.seed == 3
    # the source profile is not mutated
    assert config.get_profile("default").finetune.full_epochs != 7


def test_python_overrides_keep_types():
    p = config.get_profile("smoke", {"finetune.lr_full": 0.5, "gcn.tau": 0.2})
    assert p.finetune.lr_full == 0.5 and p.gcn.tau == 0.2


@pytest.mark.parametrize("bad", ["finetune.nope=1", "nosection.x=1", "finetune.sam=maybe"])
def test_bad_overrides_are_rejected(bad):
    with pytest.raises((KeyError, ValueError)):
        config.get_profile("smoke", config.parse_overrides([bad]))


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ValueError, match="unknown profile"):
        config.get_profile("huge")
    with pytest.raises(ValueError, match="section.key=value"):
        config.parse_overrides(["finetune.full_epochs"])


def test_json_round_trip():
    p = config.get_profile("paper")
    d = p.to_dict()
    assert d["finetune"]["backbone"] == "efficientnet_b0"
    assert dataclasses.asdict(p) == d


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path))
    (tmp_path / "utkface").mkdir()
    paths = config.get_paths()
    assert paths.results == (tmp_path / "r").resolve()
    assert paths.metrics_csv.name == "metrics.csv"
    assert paths.real("utkface") == tmp_path.resolve() / "utkface"
    assert paths.real("affectnet") is None
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="FER_DATA_ROOT"):
        config.get_paths()


def test_seed_everything_repeats_draws():
    import numpy as np
    import torch

    config.seed_everything(5)
    a = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    config.seed_everything(5)
    b = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_importing_fer_lib_makes_openmp_threads_wait_passively_unless_told_otherwise():
    import subprocess
    import sys

    code = "import os, fer_lib; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ACTIVE"
