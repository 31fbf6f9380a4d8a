"""Progress in headless runs: text lines from training and prediction (never an HTML widget), the
KIT_PROGRESS_FILE they keep, and run_all.sh showing that file while a notebook runs."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import resume_worker as rw
import torch
from transformers import ProgressCallback, Trainer, TrainingArguments
from transformers.utils.notebook import NotebookProgressCallback

from kit.config.params import TransformerParams
from kit.core import progress
from kit.core.progress import ProgressLine, count_line, format_duration, show_progress
from kit.errors import KitError
from kit.models.hf.progress import TextProgress, use_text_progress
from kit.models.hf.train import train_transformer
from tests.conftest import REPO

HTML = "<IPython.core.display.HTML"


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def logged(caplog: pytest.LogCaptureFixture, name: str = "kit.models.hf.progress") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_durations_and_count_lines():
    assert [format_duration(s) for s in (0, 4.6, 72, 170, 3600 + 5 * 60 + 9)] == [
        "0s", "5s", "1m12s", "2m50s", "1h05m"]
    assert count_line("step", 120, 400, 60, 120) == (
        "step 120/400 (30%) | 1m00s elapsed | ETA 2m20s")
    assert count_line("step", 0, 400, 0, 0).endswith("ETA ?")
    assert count_line("predict test", 30, 30, 3, 30, " texts") == (
        "predict test 30/30 texts (100%) | 3s elapsed | ETA 0s")
    assert count_line("step", 399, 400, 1, 1).startswith("step 399/400 (99%)")  # 100% = done


def test_training_lines_interval_eval_and_progress_file(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="kit")
    path = tmp_path / "notebooks" / "02_train.progress"
    monkeypatch.setenv(progress.FILE_ENV, str(path))
    clock = FakeClock()
    cb = TextProgress(interval=30, clock=clock)
    args = SimpleNamespace(metric_for_best_model="f1_macro")
    state = SimpleNamespace(global_step=0, max_steps=400)

    def step_to(step: int, t: float) -> None:
        clock.t, state.global_step = t, step
        cb.on_step_end(args, state, None)

    cb.on_train_begin(args, state, None)
    begin = "step 0/400 (0%) | 0s elapsed | ETA ?"
    assert path.read_text() == begin + "\n"
    step_to(1, 1.0)
    assert path.read_text() == begin + "\n"  # the file is replaced at most every 2 s
    step_to(2, 2.0)
    assert path.read_text().startswith("step 2/400 (0%) | 2s elapsed | ETA 6m38s")
    for step in range(3, 41):  # one second a step
        if step in (10, 20):
            cb.on_log(args, state, None, logs={"loss": 0.4123, "learning_rate": 1e-4})
        step_to(step, float(step))
    for t in (41.0, 42.0):  # the evaluation at step 40: three batches
        clock.t = t
        cb.on_prediction_step(args, state, None, eval_dataloader=[0, 1, 2])
    assert path.read_text().strip().endswith("| evaluating 2/3")
    clock.t = 43.0
    cb.on_log(args, state, None, logs={"eval_loss": 0.51, "eval_f1_macro": 0.8734})
    cb.on_evaluate(args, state, None, metrics={"eval_loss": 0.51, "eval_f1_macro": 0.8734})
    step_to(41, 44.0)  # logged 1 s ago, at the evaluation: not logged
    step_to(73, 73.0)
    clock.t, state.global_step = 500.0, 400
    cb.on_train_end(args, state, None)
    lines = logged(caplog)
    assert lines == [
        begin,
        "step 30/400 (7%) | 30s elapsed | ETA 6m10s | loss 0.412",
        # the ETA counts the evaluation's time too: 360 steps at 43 s / 40
        "step 40/400 (10%) | 43s elapsed | ETA 6m27s | loss 0.412 | val f1_macro 0.873 (step 40)",
        "step 73/400 (18%) | 1m13s elapsed | ETA 5m27s | loss 0.412 | val f1_macro 0.873 (step 40)",
        "step 400/400 (100%) | 8m20s elapsed | ETA 0s | loss 0.412 | val f1_macro 0.873 (step 40)",
    ]
    assert path.read_text() == lines[-1] + "\n"
    assert not any("<" in line for line in lines)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_eta_after_a_resume_counts_only_this_process_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kit")
    clock = FakeClock(1000.0)
    cb = TextProgress(interval=30, clock=clock, path=tmp_path / "p")
    args = SimpleNamespace(metric_for_best_model=None)
    state = SimpleNamespace(global_step=200, max_steps=400)  # resumed from checkpoint-200
    cb.on_train_begin(args, state, None)
    for step in range(201, 216):  # two seconds a step in this process
        clock.t, state.global_step = 1000.0 + 2 * (step - 200), step
        cb.on_step_end(args, state, None)
    assert logged(caplog) == [
        "step 200/400 (50%) | 0s elapsed | ETA ? | resumed at step 200",
        # 185 steps left at 2 s each; counting the 200 resumed steps would say 26s
        "step 215/400 (53%) | 30s elapsed | ETA 6m10s",
    ]


def test_no_progress_file_without_the_variable_and_a_bad_interval_is_refused(
        tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(progress.FILE_ENV, raising=False)
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    line = ProgressLine(logging.getLogger("kit.test"))
    assert line.path is None and line.interval == 30
    monkeypatch.setenv(progress.INTERVAL_ENV, "5")
    assert ProgressLine(logging.getLogger("kit.test")).interval == 5
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(KitError, match="KIT_PROGRESS_INTERVAL is 'soon'"):
        ProgressLine(logging.getLogger("kit.test"))
    # A progress file that cannot be written is a warning, never a failed run.
    (tmp_path / "file").write_text("")
    caplog.set_level(logging.INFO, logger="kit")
    blocked_path = tmp_path / "file" / "x.progress"
    blocked = ProgressLine(logging.getLogger("kit.test"), interval=0, path=blocked_path)
    blocked.update("step 1/2")
    blocked.update("step 2/2")
    messages = logged(caplog, "kit.test")
    assert messages[0] == "step 1/2" and messages[2:] == ["step 2/2"]
    assert messages[1].startswith(f"Cannot write the progress file {blocked_path} (")
    monkeypatch.setenv(progress.FILE_ENV, str(tmp_path / "step.progress"))
    show_progress(logging.getLogger("kit.test"), "tfidf: training started")
    assert (tmp_path / "step.progress").read_text() == "tfidf: training started\n"


def test_trainer_bars_are_replaced_by_text_progress(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = Trainer(model=model, args=args)
    trainer.add_callback(NotebookProgressCallback)  # what a notebook kernel gets
    assert any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks)
    cb = use_text_progress(trainer)
    kinds = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert "TextProgress" in kinds and not {"ProgressCallback", "NotebookProgressCallback",
                                            "PrinterCallback"} & set(kinds)
    assert use_text_progress(trainer, cb) is cb
    assert [type(c).__name__ for c in trainer.callback_handler.callbacks] == kinds


def test_tiny_training_logs_progress_lines_and_no_html(tiny_model, tmp_path, monkeypatch,
                                                        capsys):
    path = tmp_path / "02_train.progress"
    monkeypatch.setenv(progress.FILE_ENV, str(path))
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = rw.toy_task()
        cfg = TransformerParams(model=str(tiny_model), max_length=48, epochs=2.0, batch_size=8,
                                eval_batch_size=16, lr=2e-2, eval_steps=12, save_steps=12)
        result = train_transformer(*splits["train"], *splits["val"], splits["test"][0],
                                   task="multiclass", label_names=["a", "b", "c"], cfg=cfg,
                                   seed=7, work_dir=tmp_path / "work")
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert result.global_step == 24
    assert "step 0/24 (0%) | 0s elapsed | ETA ?" in out
    assert any(re.fullmatch(r"step 12/24 \(50%\) \| \d+s elapsed \| ETA \d+s \| loss \d\.\d{3}"
                            r" \| val f1_macro \d\.\d{3} \(step 12\)", line) for line in out)
    assert any(line.startswith("step 24/24 (100%)") for line in out)
    assert any(line.startswith("predict validation 30/30 texts (100%)") for line in out)
    final = [line for line in out if line.startswith("predict test 20/20 texts (100%)")]
    assert final and path.read_text() == final[-1] + "\n"
    both = captured.out + captured.err
    assert HTML not in both and "{'loss'" not in both  # no widget, no PrinterCallback dicts
    assert "/24 [" not in captured.err  # no tqdm training bar


# -- run_all.sh's display of the progress file -------------------------------------------------

# A stand-in for papermill: writes the progress file as the kit does (whole lines, atomically),
# and waits until the display has shown a line before writing the next.
FAKE_NOTEBOOK = textwrap.dedent("""
    import os, sys, time
    path, shown, lines = os.environ["KIT_PROGRESS_FILE"], sys.argv[1], sys.argv[2:]
    print("papermill's own output")
    for i, line in enumerate(lines):
        with open(path + ".tmp", "w") as fh:
            fh.write(line + "\\n")
        os.replace(path + ".tmp", path)
        if line.startswith("wait:"):
            for _ in range(3000):  # up to 30 s for the display to show it
                if line in open(shown, errors="replace").read():
                    break
                time.sleep(0.01)
            else:
                sys.exit(98)
    sys.exit(3)
""")


def display_harness(tmp_path: Path, shown: Path, lines: list[str], **env: str
                    ) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run run_all.sh's `run_with_progress` on the fake."""
    functions = subprocess.run(
        ["sed", "-n", "/^show_progress_of() {/,/^}/p; /^run_with_progress() {/,/^}/p",
         str(REPO / "run_all.sh")], capture_output=True, text=True, check=True).stdout
    assert "run_with_progress() {" in functions and "show_progress_of() {" in functions
    (tmp_path / "functions.sh").write_text(functions)
    (tmp_path / "fake.py").write_text(FAKE_NOTEBOOK)
    script = (
        "set -euo pipefail\n"
        f"source {tmp_path / 'functions.sh'}\n"
        "rc=0\n"
        f"run_with_progress {tmp_path / '02_train.progress'} 02_train {tmp_path / 'nb.log'} "
        f"{sys.executable} {tmp_path / 'fake.py'} {shown} "
        + " ".join(f"'{line}'" for line in lines) + " || rc=$?\n"
        "echo \"rc=$rc\"\n"
    )
    environ = {**os.environ, "PROGRESS_POLL_SECONDS": "0.05", **env}
    return ["bash", "-c", script], environ


def test_run_all_prints_each_new_progress_line_in_a_log(tmp_path):
    shown = tmp_path / "stderr.txt"
    lines = ["wait: tfidf: training started", "wait: step 1/3 (33%)", "wait: step 2/3 (66%)",
             "step 3/3 (100%)"]
    cmd, env = display_harness(tmp_path, shown, lines, PROGRESS_LOG_SECONDS="0")
    with open(shown, "w") as err:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                              timeout=120)
    assert proc.stdout.strip() == "rc=3"  # the command's exit status, as before
    printed = shown.read_text().splitlines()
    assert [re.sub(r"^02_train \d+m\d\ds \| ", "", p) for p in printed] == lines, printed
    assert (tmp_path / "nb.log").read_text() == "papermill's own output\n"


def test_run_all_log_lines_are_throttled_but_the_last_one_is_shown(tmp_path):
    shown = tmp_path / "stderr.txt"
    lines = ["wait: step 1/3 (33%)", "step 2/3 (66%)", "step 3/3 (100%)"]
    cmd, env = display_harness(tmp_path, shown, lines, PROGRESS_LOG_SECONDS="3600")
    with open(shown, "w") as err:
        subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, timeout=120)
    printed = [re.sub(r"^02_train \d+m\d\ds \| ", "", p) for p in shown.read_text().splitlines()]
    assert printed == ["wait: step 1/3 (33%)", "step 3/3 (100%)"]


def test_run_all_redraws_one_line_on_a_terminal(tmp_path):
    shown = tmp_path / "terminal.txt"
    lines = ["wait: step 1/3 (33%)", "wait: step 2/3 (66%)", "step 3/3 (100%)"]
    cmd, env = display_harness(tmp_path, shown, lines)
    master, slave = pty.openpty()
    with open(shown, "wb") as copy:
        def pump() -> None:  # the terminal's screen, for the fake to wait on
            while True:
                try:
                    data = os.read(master, 4096)
                except OSError:  # the other end closed
                    return
                if not data:
                    return
                copy.write(data)
                copy.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=slave, text=True,
                              timeout=120)
        os.close(slave)
        reader.join(timeout=30)
    os.close(master)
    assert proc.stdout.strip() == "rc=3"
    screen = shown.read_bytes().decode()  # keep the \r
    assert screen.endswith("\n") and screen.count("\n") == 1  # one line, ended at the end
    draws = [d for d in screen.rstrip("\r\n").split("\r\x1b[K") if d]
    assert all(re.fullmatch(r"02_train \d+m\d\ds( \| .*)?", d) for d in draws), draws
    contents = [d.split(" | ", 1)[1] for d in draws if " | " in d]
    assert contents[0] == lines[0] and contents[-1] == lines[-1] and lines[1] in contents


def test_lines_inside_a_stage_say_which_fold_they_count(tmp_path, caplog):
    import logging

    from kit.core.progress import ProgressLine, progress_stage

    logger = logging.getLogger("stage-test")
    line = ProgressLine(logger, interval=0, path=tmp_path / "p")
    with caplog.at_level(logging.INFO, logger="stage-test"):
        with progress_stage("transformer fold 2/5"):
            line.update("step 3/10", force=True)
            line.update("transformer fold 2/5: training started", force=True)
        line.update("step 4/10", force=True)
    assert caplog.messages == ["transformer fold 2/5 | step 3/10",
                               "transformer fold 2/5: training started", "step 4/10"]
    assert (tmp_path / "p").read_text() == "step 4/10\n"
