"""Every shipped offline recipe trains end to end (a couple of steps): the params really run."""

from pathlib import Path

import numpy as np
import pytest

from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.steps.train import train_models
from tests.conftest import REPO

OFFLINE_RECIPES = ["demo", "champ-math-topic", "champ-math-correctness",
                   "champ-math-topic-llm", "champ-math-correctness-llm"]


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFLINE_RECIPES)
def test_offline_recipe_trains_and_predicts(tmp_path: Path, monkeypatch, name: str):
    monkeypatch.setenv("COMPKIT_ROOT", str(tmp_path))
    (tmp_path / "params").symlink_to(REPO / "params")
    # Two steps, one evaluation, short texts: the recipe's code path, not its score.
    quick = {"transformer.max_steps": 2, "transformer.eval_steps": 2,
             "transformer.save_steps": 2, "transformer.batch_size": 4,
             "transformer.max_length": 64}
    run = open_run(f"params/{name}.yaml", overrides=quick)
    comp = load_competition(run.params)
    table = train_models(run, comp)
    assert list(table.index) == ["tfidf", "transformer"]
    assert table.loc["transformer", "global_step"] == 2
    preds = run.load_predictions("transformer")
    assert preds.test_probs.shape == (len(comp.test), len(comp.labels))
    assert np.allclose(preds.test_probs.sum(axis=1), 1.0, atol=1e-5)
    assert (run.path / "hardware.json").exists()
    if name.endswith("-llm"):
        report = (run.path / "llm_report.json").read_text()
        assert '"backend": "peft"' in report and "score" in report
        assert (run.models / "transformer" / "model").is_dir()
