"""Where am I: Kaggle interactive/batch, Colab with and without Drive, a plain machine (faked)."""

import json
import sys
import types
from pathlib import Path

import pytest

from kit.core.platform import detect
from kit.core.rundir import open_run
from kit.errors import KitError
from kit.kaggle.credentials import find_credentials, redact, require_credentials

TOKEN = "tok-colab-77c1e0d2a9f4"


@pytest.fixture(autouse=True)
def no_colab_module(monkeypatch):
    for name in ("google.colab", "google.colab.userdata", "kaggle_secrets"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(("run_type", "mode"), [("Interactive", "interactive"),
                                                ("Batch", "batch")])
def test_kaggle_interactive_and_batch(tmp_path: Path, run_type, mode):
    env = {"KAGGLE_KERNEL_RUN_TYPE": run_type, "KIT_KAGGLE_INPUT": str(tmp_path / "input")}
    where = detect(env, kaggle_working=tmp_path / "working")
    assert (where.platform, where.mode) == ("kaggle", mode)
    assert where.input_dir == tmp_path / "input" and where.working_dir == tmp_path / "working"
    assert where.disk_budget_gb == 20.0 and where.warnings == []


def test_kaggle_working_dir_near_its_budget_warns(tmp_path: Path, caplog):
    work = tmp_path / "working"
    work.mkdir()
    (work / "ckpt.bin").write_bytes(b"x" * 900)
    where = detect({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, kaggle_working=work,
                   disk_budget_gb=1e-6)  # 1000 bytes: 900 is past 80 %
    assert len(where.warnings) == 1 and "save_total_limit" in where.warnings[0]
    assert "GB the platform keeps" in caplog.text


def test_colab_with_drive_checkpoints_to_drive(tmp_path: Path):
    drive = tmp_path / "MyDrive"
    drive.mkdir()
    where = detect({"COLAB_RELEASE_TAG": "release-colab_20251101"}, drive=drive)
    assert where.platform == "colab" and where.drive_mounted
    assert where.checkpoint_dir == drive / "compkit" / "checkpoints" and not where.warnings


def test_colab_without_drive_warns_that_checkpoints_die(tmp_path: Path):
    where = detect({"COLAB_RELEASE_TAG": "x"}, drive=tmp_path / "not-mounted")
    assert where.platform == "colab" and not where.drive_mounted
    assert where.checkpoint_dir is None
    assert "drive.mount('/content/drive')" in where.warnings[0]


def test_colab_without_drive_but_a_given_checkpoint_dir_does_not_warn(tmp_path: Path):
    where = detect({"COLAB_GPU": "1"}, drive=tmp_path / "no", checkpoint_dir=tmp_path / "ck")
    assert where.checkpoint_dir == tmp_path / "ck" and not where.warnings


def test_plain_machine_and_overrides(tmp_path: Path):
    where = detect({}, input_dir=tmp_path / "in", working_dir=tmp_path / "out")
    assert (where.platform, where.mode) == ("plain", None)
    assert where.input_dir == tmp_path / "in" and where.working_dir == tmp_path / "out"
    assert json.loads(json.dumps(where.to_dict()))["working_dir"] == str(tmp_path / "out")


def test_env_json_records_where_with_the_params_overrides(project: Path, tmp_path: Path):
    run = open_run("params/topics.yaml",
                   overrides={"platform.working_dir": str(tmp_path / "w")})
    env = json.loads((run.path / "env.json").read_text())
    assert env["where"]["platform"] == "plain"
    assert env["where"]["working_dir"] == str(tmp_path / "w")


def _fake_colab(monkeypatch, secrets: dict[str, str]) -> None:
    class SecretNotFoundError(Exception):
        pass

    def get(name: str) -> str:
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = get
    colab.userdata = userdata
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


def test_colab_userdata_token_goes_to_the_cli_env_only(tmp_path: Path, monkeypatch):
    _fake_colab(monkeypatch, {"KAGGLE_API_TOKEN": TOKEN})
    env = {"HOME": str(tmp_path), "COLAB_RELEASE_TAG": "x"}
    source = find_credentials(env)
    assert source is not None and source.kind == "Colab secret"
    assert source.env == {"KAGGLE_API_TOKEN": TOKEN}
    assert TOKEN not in repr(source) and TOKEN not in str(source)
    assert "KAGGLE_API_TOKEN" not in env
    assert redact(f"echo {TOKEN}", source.secrets, env) == "echo [hidden]"


def test_colab_without_the_secret_says_where_to_add_it(tmp_path: Path, monkeypatch):
    _fake_colab(monkeypatch, {})
    with pytest.raises(KitError) as err:
        require_credentials({"HOME": str(tmp_path), "COLAB_RELEASE_TAG": "x"})
    assert "Colab secrets: no attached secret KAGGLE_API_TOKEN" in str(err.value)
    assert "in Colab: the key icon" in str(err.value)


def test_training_checkpoints_follow_the_platform_checkpoint_dir(project: Path, tmp_path: Path):
    from kit.models.fit import persistent_checkpoint_dir

    run = open_run("params/topics.yaml")
    assert persistent_checkpoint_dir(run) is None  # a plain machine: the run folder
    drive = open_run("params/topics.yaml", "on-drive",
                     {"platform.checkpoint_dir": str(tmp_path / "drive")})
    assert persistent_checkpoint_dir(drive) == str(tmp_path / "drive" / "on-drive" / "transformer")


# --- Kaggle-true environments (tests/helpers/environments.py): Kaggle is decided before Colab.

EXPECTED = {"kaggle": ("kaggle", "/kaggle/working", "Kaggle notebook secret"),
            "colab": ("colab", "/content", "Colab secret"),
            "plain": ("plain", None, None)}


def test_each_platform_is_detected_as_itself(platform_env, tmp_path: Path, monkeypatch):
    from kit.core.envinfo import environment
    from kit.core.platform import on_colab, on_kaggle

    name, _ = platform_env
    monkeypatch.chdir(tmp_path)
    where = detect(drive=tmp_path / "no-drive")
    platform, working, _ = EXPECTED[name]
    assert where.platform == platform
    assert str(where.working_dir) == (working or str(tmp_path))
    assert (on_kaggle(), on_colab()) == (name == "kaggle", name == "colab")
    recorded = environment(tmp_path, where)
    assert (recorded["kaggle"], recorded["colab"]) == (name == "kaggle", name == "colab")


def test_each_platform_reads_its_own_notebook_secret(platform_env, tmp_path: Path, monkeypatch):
    from tests.helpers import environments

    name, env = platform_env
    # Both secret stores hold a token: only the platform's own may be read.
    environments.fake_modules(monkeypatch, name, {"KAGGLE_API_TOKEN": TOKEN})
    source = find_credentials({**env, "HOME": str(tmp_path)})
    expected = EXPECTED[name][2]
    assert (source.kind if source else None) == expected
    if source:
        assert dict(source.env) == {"KAGGLE_API_TOKEN": TOKEN}


def test_inside_kaggle_a_missing_secret_names_the_kaggle_fix(kaggle_env, tmp_path: Path):
    with pytest.raises(KitError) as err:
        require_credentials({**kaggle_env, "HOME": str(tmp_path)})
    assert "Kaggle notebook secrets: no attached secret KAGGLE_API_TOKEN" in str(err.value)
    assert "Colab secrets" not in str(err.value)


def test_kaggle_input_paths_are_found_under_each_platform(platform_env, tmp_path: Path,
                                                          monkeypatch):
    from kit.core.platform import find_input

    name, _ = platform_env
    deep = tmp_path / "input" / "datasets" / "alice" / "demo-offline" / "params.yaml"
    deep.parent.mkdir(parents=True)
    deep.write_text("name: demo\n")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    where = detect(kaggle_working=tmp_path / "working", drive=tmp_path / "no-drive")
    assert (where.input_dir == tmp_path / "input") == (name == "kaggle")
    assert find_input(tmp_path / "input" / "demo-offline" / "params.yaml") == deep


def test_accelerator_detection_is_the_same_under_each_platform(platform_env):
    from kit.models.hardware import DeviceQuery, detect_hardware

    t4x2 = DeviceQuery(cuda_available=lambda: True, device_count=lambda: 2,
                       get_device_name=lambda i: "Tesla T4",
                       get_device_capability=lambda i: (7, 5),
                       total_memory=lambda i: 15 * 1024**3,
                       get_arch_list=lambda: ["sm_75", "sm_80", "sm_90"])
    profile = detect_hardware(t4x2)
    assert (profile.kind, profile.n_gpus, profile.fp16, profile.bf16) == ("t4", 2, True, False)
    assert detect_hardware().device == "cpu"  # this machine: no GPU, whatever the variables say
