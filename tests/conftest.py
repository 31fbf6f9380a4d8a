"""Shared fixtures: small competitions in Kaggle's layout, written to a temporary project; the
stand-in Kaggle API (tests/kaggle_standin) for tests that drive the real kaggle CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (tests/run.sh runs `-n 2`) each worker gets its share of the cores, so the
# workers' torch threads do not fight over them; set before torch is imported anywhere.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the stand-in Kaggle (port 80, bound once per process) run in one xdist
    worker: `--dist loadgroup` sends a group to a single worker."""
    for item in items:
        if "standin_server" in getattr(item, "fixturenames", ()):  # (`standin` uses it)
            item.add_marker(pytest.mark.xdist_group("kaggle-standin"))


@pytest.fixture(autouse=True, scope="session")
def _kit_messages_on_stdout() -> None:
    """The kit logs; notebooks show its messages on stdout, and so do tests (capsys reads them)."""
    from kit.core.logs import show_logs

    show_logs()

@pytest.fixture(params=["kaggle", "colab", "plain"])
def platform_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 ) -> tuple[str, dict[str, str]]:
    """Each platform in turn (tests/helpers/environments.py): os.environ holds its variables
    and its secret modules are importable. Returns (name, variables)."""
    from tests.helpers import environments

    env = environments.environment(request.param)
    environments.apply(monkeypatch, env)
    environments.fake_modules(monkeypatch, request.param)
    return request.param, env


@pytest.fixture
def kaggle_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A Kaggle notebook's variables in os.environ (Colab's inherited ones included)."""
    from tests.helpers import environments

    env = environments.environment("kaggle")
    environments.apply(monkeypatch, env)
    environments.fake_modules(monkeypatch, "kaggle")
    return env


TOPICS = {
    "sport": "the team won the match with a late goal in the final minute",
    "food": "the soup needs more salt and a little fresh pepper tonight",
    "tech": "the laptop compiles the code faster with more memory and cores",
}


def topic_rows(n_per_class: int, start_id: int = 1) -> pd.DataFrame:
    """A separable 3-class text set: each text is its topic sentence plus a counter word."""
    rows = []
    i = start_id
    for label, sentence in TOPICS.items():
        for k in range(n_per_class):
            rows.append({"id": i, "text": f"{sentence} number{k % 7} item{k}", "label": label})
            i += 1
    return pd.DataFrame(rows)


def write_competition(folder: Path, train: pd.DataFrame, test: pd.DataFrame,
                      sample: pd.DataFrame | None = None, answer: pd.DataFrame | None = None,
                      ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns=["label"], errors="ignore").to_csv(folder / "test.csv", index=False)
    if sample is None:
        sample = pd.DataFrame({"id": test["id"], "label": train["label"].iloc[0]})
    sample.to_csv(folder / "sample_submission.csv", index=False)
    if answer is not None:
        answer.to_csv(folder / "answer_key.csv", index=False)
    return folder


def binary_rows(n_per_class: int, start_id: int = 1) -> pd.DataFrame:
    """A separable binary set: label 1 for the sport sentence (the positive class), else 0."""
    rows = topic_rows(n_per_class, start_id)
    sport = rows["label"] == "sport"
    rows = pd.concat([rows[sport], rows[~sport].iloc[::2]], ignore_index=True)
    return rows.assign(label=(rows["label"] == "sport").astype(int))


def multilabel_rows(n: int, start_id: int = 1) -> pd.DataFrame:
    """Texts holding one or two topic sentences; labels joined by "|" (e.g. "food|tech")."""
    names = list(TOPICS)
    combos = [[a] for a in names] + [[a, b] for i, a in enumerate(names) for b in names[i + 1:]]
    rows = []
    for k in range(n):
        labels = combos[k % len(combos)]
        text = " and ".join(TOPICS[x] for x in labels) + f" number{k % 7} item{k}"
        rows.append({"id": start_id + k, "text": text, "label": "|".join(labels)})
    return pd.DataFrame(rows)


def _add_competition(root: Path, slug: str, data: pd.DataFrame, params: dict) -> None:
    """data/<slug> (3/4 train, 1/4 test with a Public/Private answer key) and params/<slug>.yaml."""
    train = data.sample(frac=0.75, random_state=0).sort_values("id")
    test = data.drop(train.index)
    answer = test[["id", "label"]].assign(
        Usage=["Public" if i % 2 else "Private" for i in range(len(test))])
    write_competition(root / "data" / slug, train, test, answer=answer)
    write_params(root / "params" / f"{slug}.yaml", {
        "extends": "base.yaml", "name": slug, **params,
        "competition": {"slug": slug, **params.get("competition", {})},
    })


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with params/ (copies of the shipped ones) and small competitions:
    `topics` (3 classes), `sport` (binary 0/1, metric f1) and `tags` (multilabel, "|")."""
    (tmp_path / "params").mkdir()
    for f in (REPO / "params").glob("*.yaml"):
        (tmp_path / "params" / f.name).write_text(f.read_text())
    data = topic_rows(30)
    train = data.sample(frac=0.75, random_state=0).sort_values("id")
    test = data.drop(train.index)
    answer = test[["id", "label"]].assign(
        Usage=["Public" if i % 2 else "Private" for i in range(len(test))])
    write_competition(tmp_path / "data" / "topics", train, test, answer=answer)
    write_params(tmp_path / "params" / "topics.yaml", {
        "extends": "base.yaml", "name": "topics",
        "competition": {"slug": "topics", "metric": "f1_micro"},
        "thresholds": {"bootstrap": 50},
    })
    _add_competition(tmp_path, "sport", binary_rows(30), {
        "competition": {"task": "binary", "metric": "f1"}, "thresholds": {"bootstrap": 50}})
    _add_competition(tmp_path, "tags", multilabel_rows(84), {
        "competition": {"task": "multilabel", "label_delimiter": "|", "metric": "f1_micro"}})
    monkeypatch.setenv("COMPKIT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT built from a config on the spot (tests/resume_worker.py), saved to a folder."""
    import resume_worker as rw

    return rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests and fixtures (runs compared bitwise; the 2 cores
    are shared). Module-scoped so that a module's trained fixtures run under it too: request it
    with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def standin_server():
    """The stand-in Kaggle API on 127.0.0.1:80, one per test session (use `standin`).

    The kaggle CLI's LOCALHOST environment only talks to port 80. Where it cannot be bound the
    tests skip, except in CI (root on a machine of its own), where a skip would hide a failure.
    """
    from kaggle_standin.server import StandinKaggle

    try:
        server = StandinKaggle()
    except OSError as exc:
        why = (f"cannot bind 127.0.0.1:80 ({exc}): the kaggle CLI's LOCALHOST environment only "
               "talks to port 80, so the stand-in Kaggle API needs it")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with server:
        yield server


@pytest.fixture
def standin(standin_server):
    """The session's one stand-in (port 80 is bound once), its state as fresh as a new one's."""
    standin_server.state.reset()
    return standin_server


def standin_cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    token: str | None = None) -> dict[str, str]:
    """The environment the real kaggle CLI gets in a stand-in test: this machine's Kaggle and
    Colab variables removed, an empty HOME, requests to the LOCALHOST stand-in, and `token`
    (KAGGLE_API_TOKEN) when one is given."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(("KAGGLE_", "COLAB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "NO_PROXY": "localhost,127.0.0.1"}
    if token is not None:
        env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_API_TOKEN=token)
    return env
