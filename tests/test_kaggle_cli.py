"""kit.kaggle.cli against the REAL kaggle CLI, talking to a stand-in Kaggle API on loopback.

`KAGGLE_API_ENVIRONMENT=LOCALHOST` makes kaggle 2.x send every request to http://localhost
(port 80); tests/kaggle_standin/server.py answers them and records what it received.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import types
import zipfile
from pathlib import Path

import pytest
from kaggle_standin.server import SUBMISSION_MESSAGE

from kit.core.platform import on_colab, on_kaggle
from kit.errors import KitError
from kit.kaggle import cli as kaggle_cli
from kit.kaggle.cli import (
    SubmitError,
    download_competition,
    find_credentials,
    format_command,
    require_credentials,
    submit,
    submit_command,
)
from kit.submission.store import log_submission
from tests.conftest import standin_cli_env

SLUG = "standin-text-comp"
# Not KGAT_-shaped on purpose: redaction must work by value, not only by pattern.
TOKEN = "tok-3f9a1c7e5b2d4a6f8e0c"
START = "competitions.CompetitionApiService/StartSubmissionUpload"
CREATE = "competitions.CompetitionApiService/CreateSubmission"
INTROSPECT = "security.OAuthService/IntrospectToken"
LIMITS = "competitions.CompetitionApiService/GetSubmissionLimits"


@pytest.fixture
def kaggle(standin_server):
    """The stand-in with its request log and planned failures reset for this test (what the
    module's earlier tests created on it stays)."""
    state = standin_server.state
    state.requests.clear()
    state.failures.clear()
    state.uploads.clear()
    return state


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> dict[str, str]:
    """An environment with no Kaggle credentials at all and an empty HOME."""
    return standin_cli_env(tmp_path, monkeypatch)


@pytest.fixture
def cli_env(clean_env) -> dict[str, str]:
    return {**clean_env, "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_API_TOKEN": TOKEN}


@pytest.fixture
def submission(tmp_path) -> Path:
    path = tmp_path / "run" / "submission_001.csv"
    path.parent.mkdir()
    path.write_text("id,label\n1,spam\n2,ham\n3,ham\n")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


# ----------------------------------------------------------------------------- submit, real CLI


def test_submit_uploads_the_file_and_sends_slug_and_message(kaggle, cli_env, submission,
                                                             capfd, caplog):
    caplog.set_level(logging.DEBUG)
    before = _sha(submission)

    result = submit(SLUG, submission, "run-7 tfidf baseline", dry_run=False, env=cli_env)

    assert result.ok and not result.dry_run and result.returncode == 0
    assert result.answer == f"{SUBMISSION_MESSAGE} (4 submissions remaining today)"
    assert kaggle.endpoints() == [INTROSPECT, START, "/upload/blob-2", CREATE, LIMITS]
    start = kaggle.find(START).json()
    assert start["competitionName"] == SLUG
    assert start["fileName"] == submission.name
    assert start["contentLength"] == submission.stat().st_size
    assert kaggle.uploads["blob-2"] == submission.read_bytes()
    create = kaggle.find(CREATE).json()
    assert create == {"competitionName": SLUG, "blobFileTokens": "blob-2",
                      "submissionDescription": "run-7 tfidf baseline"}
    assert kaggle.find(CREATE).headers["Authorization"] == f"Bearer {TOKEN}"
    assert _sha(submission) == before
    out = capfd.readouterr()
    _assert_no_token(result.output, result.answer, result.command, repr(result), out.out,
                     out.err, caplog.text)


FAILURES = [
    # (where it fails, how, words the advice must contain, CLI exit code)
    pytest.param(START, 401, [f"competitions/{SLUG}/rules", "stale"], 1, id="401-submit"),
    pytest.param(INTROSPECT, 401, [f"competitions/{SLUG}/rules", "token"], 1, id="401-token"),
    pytest.param(START, 403, [f"competitions/{SLUG}/rules", "403"], 1, id="403-echoing-token"),
    pytest.param(CREATE, 500, ["HTTP 500", "retry", f"competitions/{SLUG}/submissions"], 1,
                 id="500"),
    pytest.param(START, "drop", ["connection", "internet"], 1, id="dropped-connection"),
    pytest.param(CREATE, "drop", ["connection", f"competitions/{SLUG}/submissions"], 1,
                 id="dropped-after-upload"),
    # The upload fails, the CLI prints "Could not submit to competition" and still exits 0.
    pytest.param("upload", 403, ["upload", "failed"], 0, id="upload-rejected-exit-0"),
]


@pytest.mark.parametrize(("where", "how", "advice", "exit_code"), FAILURES)
def test_failed_submission_raises_clear_advice_and_leaks_nothing(
    kaggle, cli_env, submission, tmp_path, capfd, caplog, where, how, advice, exit_code
):
    caplog.set_level(logging.DEBUG)
    kaggle.failures[where] = how
    before = _sha(submission)

    with pytest.raises(SubmitError) as caught:
        submit(SLUG, submission, "run-7", dry_run=False, env=cli_env)

    err = caught.value
    assert isinstance(err, KitError)
    for words in advice:
        assert words.lower() in str(err).lower()
    assert not err.result.ok and err.result.returncode == exit_code
    assert err.result.answer and "\n" not in err.result.answer
    assert _sha(submission) == before
    assert CREATE not in kaggle.endpoints() or where == CREATE
    # The failed attempt goes into the log: nothing secret may end up there either.
    log_path = tmp_path / "outputs" / "submissions.csv"
    log_submission(log_path, run="run-7", file=submission, message="run-7", model="tfidf",
                   local_public=None, local_private=None, validation=0.9,
                   kaggle_answer=err.result.answer, ok=err.result.ok, dry_run=False)
    out = capfd.readouterr()
    _assert_no_token(str(err), err.result.output, err.result.answer, out.out, out.err,
                     caplog.text, log_path.read_text())


def test_server_echoing_the_token_is_redacted(kaggle, cli_env, submission):
    kaggle.failures[START] = 403
    with pytest.raises(SubmitError) as caught:
        submit(SLUG, submission, "run-7", dry_run=False, env=cli_env)
    # The stand-in put the token in its error message; the CLI printed it; we cut it out.
    assert "for credential [hidden])" in caught.value.result.output
    assert TOKEN not in caught.value.result.output


def test_notebook_secret_reaches_the_cli_but_not_os_environ(kaggle, clean_env, submission,
                                                            monkeypatch):
    secrets = {"KAGGLE_API_TOKEN": TOKEN}
    _fake_kaggle_secrets(monkeypatch, secrets)
    env = {**clean_env, "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}

    result = submit(SLUG, submission, "from a notebook", dry_run=False, env=env)

    assert result.ok
    assert kaggle.find(CREATE).headers["Authorization"] == f"Bearer {TOKEN}"
    assert "KAGGLE_API_TOKEN" not in os.environ and "KAGGLE_API_TOKEN" not in env


# ----------------------------------------------------------------------------- submit, no CLI


def test_dry_run_returns_the_command_and_runs_nothing(clean_env, submission, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("a dry run must not run the kaggle CLI")

    monkeypatch.setattr(kaggle_cli.subprocess, "run", no_subprocess)
    result = submit(SLUG, submission, "try it", env=clean_env)  # no credentials needed
    assert result.ok and result.dry_run and result.returncode is None
    assert result.command == f"kaggle competitions submit {SLUG} -f {submission} -m 'try it'"


def test_real_submit_without_credentials_lists_what_was_looked_for(clean_env, submission):
    env = {**clean_env, "KAGGLE_USERNAME": "alice"}
    with pytest.raises(KitError) as caught:
        submit(SLUG, submission, "x", dry_run=False, env=env)
    text = str(caught.value)
    assert "KAGGLE_API_TOKEN: not set" in text
    assert f"{clean_env['HOME']}/.kaggle/access_token: missing" in text
    assert "kaggle.json" in text
    assert "KAGGLE_USERNAME is set but KAGGLE_KEY is not" in text
    assert "not in a Kaggle notebook" in text
    assert "https://www.kaggle.com/settings/api" in text


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "empty"])
def test_real_submit_refuses_a_missing_or_empty_file(cli_env, tmp_path, content):
    path = tmp_path / "submission.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KitError, match="save_submission") as caught:
        submit(SLUG, path, "x", dry_run=False, env=cli_env)
    assert str(path) in str(caught.value)


def test_submit_command_uses_kaggle_2_syntax():
    assert submit_command("titanic", "sub.csv", "first") == [
        "kaggle", "competitions", "submit", "titanic", "-f", "sub.csv", "-m", "first"]
    assert submit_command("titanic", "submission.csv", "v3", kernel="alice/nb", version=3) == [
        "kaggle", "competitions", "submit", "titanic", "-k", "alice/nb", "-v", "3",
        "-f", "submission.csv", "-m", "v3"]
    assert format_command("titanic", "my sub.csv", "it's") == (
        "kaggle competitions submit titanic -f 'my sub.csv' -m 'it'\"'\"'s'")
    # argparse would read "-m -5 folds" as two options; the = form keeps it one value.
    assert submit_command("titanic", "s.csv", "-5 folds")[-1] == "--message=-5 folds"


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"kernel": "alice/nb"}, "both kernel and version"),
    ({"version": 2}, "both kernel and version"),
    ({"kernel": "nb-without-owner", "version": 2}, "<owner>/<notebook>"),
    ({"kernel": "alice/nb", "version": "latest"}, "positive whole number"),
])
def test_code_competition_arguments_are_checked(kwargs, words):
    with pytest.raises(KitError, match=words):
        submit_command("titanic", "submission.csv", "m", **kwargs)


def test_bad_slug_and_empty_message_are_refused():
    with pytest.raises(KitError, match="after /competitions/"):
        submit_command("https://www.kaggle.com/competitions/titanic", "s.csv", "m")
    with pytest.raises(KitError, match="Empty submission message"):
        submit_command("titanic", "s.csv", "  ")


def test_code_competition_dry_run_needs_no_local_file(clean_env):
    result = submit("titanic", "submission.csv", "v3", kernel="alice/nb", version=3,
                    env=clean_env)
    assert result.dry_run and "-k alice/nb -v 3" in result.command


# ----------------------------------------------------------------------------- credentials


def _home(env: dict[str, str]) -> Path:
    return Path(env["HOME"])


def _fake_kaggle_secrets(monkeypatch, secrets: dict[str, str]) -> None:
    class UserSecretsClient:
        def get_secret(self, name: str) -> str:
            if name not in secrets:
                raise Exception(f"No user secrets exist for label {name}")  # like Kaggle's
            return secrets[name]

    module = types.ModuleType("kaggle_secrets")
    module.UserSecretsClient = UserSecretsClient
    monkeypatch.setitem(sys.modules, "kaggle_secrets", module)


def test_no_source_gives_none(clean_env):
    assert find_credentials(clean_env) is None


def test_env_token_comes_first(clean_env):
    (_home(clean_env) / ".kaggle").mkdir()
    (_home(clean_env) / ".kaggle" / "access_token").write_text("KGAT_file")
    source = find_credentials({**clean_env, "KAGGLE_API_TOKEN": TOKEN})
    assert source.kind == "KAGGLE_API_TOKEN environment variable"
    _assert_no_token(repr(source), str(source))


def test_access_token_file(clean_env):
    token_file = _home(clean_env) / ".kaggle" / "access_token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    source = find_credentials(clean_env)
    assert source.kind == "access token file" and source.location == str(token_file)
    assert source.secrets == (TOKEN,) and not source.warning
    _assert_no_token(repr(source), str(source))


def test_kaggle_json_readable_by_others_warns_with_the_fix(clean_env, caplog):
    config = _home(clean_env) / ".kaggle" / "kaggle.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"username": "alice", "key": TOKEN}))
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        source = require_credentials(clean_env)
    assert source.kind == "legacy kaggle.json" and source.location == str(config)
    assert f"chmod 600 {config}" in source.warning
    assert f"chmod 600 {config}" in caplog.text
    config.chmod(0o600)
    assert not find_credentials(clean_env).warning
    _assert_no_token(repr(source), caplog.text)


def test_kaggle_config_dir_is_honoured(clean_env, tmp_path):
    elsewhere = tmp_path / "kaggle-config"
    elsewhere.mkdir()
    (elsewhere / "kaggle.json").write_text(json.dumps({"username": "alice", "key": TOKEN}))
    (elsewhere / "kaggle.json").chmod(0o600)
    assert find_credentials(clean_env) is None
    source = find_credentials({**clean_env, "KAGGLE_CONFIG_DIR": str(elsewhere)})
    assert source.location == str(elsewhere / "kaggle.json")


def test_kaggle_json_without_key_is_reported(clean_env):
    config = _home(clean_env) / ".kaggle" / "kaggle.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"username": "alice"}))
    with pytest.raises(KitError, match=r"kaggle\.json: has no key"):
        require_credentials(clean_env)


def test_username_and_key_env(clean_env):
    source = find_credentials({**clean_env, "KAGGLE_USERNAME": "alice", "KAGGLE_KEY": TOKEN})
    assert source.kind == "KAGGLE_USERNAME + KAGGLE_KEY environment variables"
    _assert_no_token(repr(source), str(source))


def test_key_without_username_is_named(clean_env):
    with pytest.raises(KitError, match="KAGGLE_KEY is set but KAGGLE_USERNAME is not"):
        require_credentials({**clean_env, "KAGGLE_KEY": TOKEN})


def test_notebook_secrets(clean_env, monkeypatch):
    notebook = {**clean_env, "KAGGLE_KERNEL_RUN_TYPE": "Interactive"}
    _fake_kaggle_secrets(monkeypatch, {"KAGGLE_API_TOKEN": TOKEN})
    source = find_credentials(notebook)
    assert source.kind == "Kaggle notebook secret"
    assert dict(source.env) == {"KAGGLE_API_TOKEN": TOKEN}
    _assert_no_token(repr(source), str(source))
    assert "KAGGLE_API_TOKEN" not in os.environ

    _fake_kaggle_secrets(monkeypatch, {"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": TOKEN})
    assert dict(find_credentials(notebook).env) == {"KAGGLE_USERNAME": "alice",
                                                    "KAGGLE_KEY": TOKEN}

    _fake_kaggle_secrets(monkeypatch, {})
    with pytest.raises(KitError, match="no attached secret KAGGLE_API_TOKEN"):
        require_credentials(notebook)
    # Outside a notebook the secrets client is not even asked.
    assert find_credentials(clean_env) is None


def test_on_kaggle_and_on_colab():
    assert on_kaggle({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    assert not on_kaggle({})
    assert on_colab({"COLAB_RELEASE_TAG": "release-colab_20250101"})
    assert not on_colab({})
    # Kaggle's image inherits Colab's variables (kagglehub PR #230): it is still Kaggle.
    inside_kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Batch",
                     "COLAB_RELEASE_TAG": "release-colab-external-images_20260514-060047_RC00"}
    assert on_kaggle(inside_kaggle) and not on_colab(inside_kaggle)


def test_inside_kaggle_the_kaggle_secret_is_read_never_colab_userdata(clean_env, monkeypatch):
    from tests.helpers import environments

    kaggle = {**environments.environment("kaggle"), "HOME": clean_env["HOME"]}
    environments.fake_modules(monkeypatch, "kaggle", {"KAGGLE_API_TOKEN": TOKEN})
    source = find_credentials(kaggle)
    assert source.kind == "Kaggle notebook secret" and dict(source.env) == {
        "KAGGLE_API_TOKEN": TOKEN}


# ----------------------------------------------------------------------------- download


def test_download_competition_unzips_into_dest(kaggle, cli_env, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.csv", "id,text,label\n1,hello,0\n")
        zf.writestr("test.csv", "id,text\n2,bye\n")
        zf.writestr("sample_submission.csv", "id,label\n2,0\n")
    kaggle.zip_bytes = buf.getvalue()
    dest = tmp_path / "data" / SLUG

    folder = download_competition(SLUG, dest, env=cli_env)

    assert folder == dest
    assert sorted(p.name for p in dest.iterdir()) == ["sample_submission.csv", "test.csv",
                                                      "train.csv"]
    assert (dest / "train.csv").read_text() == "id,text,label\n1,hello,0\n"
    assert kaggle.find("competitions.CompetitionApiService/DownloadDataFiles").json() == {
        "competitionName": SLUG}


def test_download_without_credentials_says_which_files_to_put_where(clean_env, tmp_path):
    dest = tmp_path / "data" / SLUG
    with pytest.raises(KitError) as caught:
        download_competition(SLUG, dest, env=clean_env)
    text = str(caught.value)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        assert str(dest / name) in text
    assert f"https://www.kaggle.com/competitions/{SLUG}/data" in text
    assert "KAGGLE_API_TOKEN" in text


def test_download_without_network_says_which_files_to_put_where(kaggle, cli_env, tmp_path):
    kaggle.failures["competitions.CompetitionApiService/DownloadDataFiles"] = "drop"
    dest = tmp_path / "data" / SLUG
    with pytest.raises(KitError) as caught:
        download_competition(SLUG, dest, env=cli_env)
    text = str(caught.value)
    assert "connection" in text.lower()
    assert str(dest / "train.csv") in text
    _assert_no_token(text)


def test_half_in_kaggle_json_half_in_env_is_what_the_cli_merges(clean_env):
    config = _home(clean_env) / ".kaggle" / "kaggle.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"username": "alice"}))
    config.chmod(0o600)
    source = find_credentials({**clean_env, "KAGGLE_KEY": TOKEN})
    assert source.location == str(config) and source.secrets == (TOKEN,)
