"""KitTrainer overrides private methods of transformers' Trainer: they exist, shaped as expected.

Private methods change without a deprecation (they are not API). When an upgrade of transformers
renames one or changes its parameters, the override would silently stop being called, or be
called with other arguments; this test fails first and names the version the kit was written for.
"""

from __future__ import annotations

import inspect
import re

import pytest

from tests.conftest import REPO

pytest.importorskip("transformers")

# The private Trainer methods KitTrainer overrides, with the parameters (after self) it expects:
# name, kind, whether it has a default. Read from transformers' trainer.py at the pinned version.
EXPECTED: dict[str, list[tuple[str, str, bool]]] = {
    "_get_train_sampler": [("train_dataset", "POSITIONAL_OR_KEYWORD", True)],
    "_load_from_checkpoint": [("resume_from_checkpoint", "POSITIONAL_OR_KEYWORD", False),
                              ("model", "POSITIONAL_OR_KEYWORD", True)],
    "_load_best_model": [],
    "_get_output_dir": [("trial", "POSITIONAL_OR_KEYWORD", False)],
    "_save_checkpoint": [("model", "POSITIONAL_OR_KEYWORD", False),
                         ("trial", "POSITIONAL_OR_KEYWORD", False)],
}


def pinned_transformers() -> str:
    """The transformers version of requirements-lock.txt, the one KitTrainer was written for."""
    lock = (REPO / "requirements-lock.txt").read_text()
    found = re.search(r"^transformers==(\S+)", lock, re.MULTILINE)
    assert found, "requirements-lock.txt pins no transformers version"
    return found.group(1)


def _shape(function: object) -> list[tuple[str, str, bool]]:
    params = list(inspect.signature(function).parameters.values())[1:]  # without self
    return [(p.name, p.kind.name, p.default is not inspect.Parameter.empty) for p in params]


def contract_breaks(trainer_cls: type, kit_cls: type, installed: str, pinned: str) -> list[str]:
    """What no longer matches between `trainer_cls` and the overrides `kit_cls` expects."""
    where = (f"transformers {installed} (KitTrainer in kit/models/hf/trainer.py was written "
             f"against transformers=={pinned}, requirements-lock.txt)")
    breaks = []
    overridden = {name for name in vars(kit_cls) if name.startswith("_")
                  and not name.startswith("__") and hasattr(trainer_cls, name)}
    for name in sorted(overridden - set(EXPECTED)):
        breaks.append(f"KitTrainer overrides Trainer.{name}, which this test does not list: add "
                      f"its expected parameters to EXPECTED in {__name__}.")
    for name, expected in EXPECTED.items():
        if not hasattr(trainer_cls, name):
            breaks.append(f"Trainer.{name} no longer exists in {where}: KitTrainer's override is "
                          "never called. Find what replaced it in that version's trainer.py.")
            continue
        if _shape(getattr(trainer_cls, name)) != expected:
            breaks.append(f"Trainer.{name}{inspect.signature(getattr(trainer_cls, name))} in "
                          f"{where} differs from the expected parameters {expected}: re-read it "
                          "and update the override.")
        if name in vars(kit_cls) and [p[0] for p in _shape(vars(kit_cls)[name])] != [
                p[0] for p in expected]:
            breaks.append(f"KitTrainer.{name} takes {_shape(vars(kit_cls)[name])}, not the "
                          f"parameters of Trainer.{name} {expected}.")
    return breaks


def test_the_private_trainer_methods_kit_trainer_overrides_are_as_expected():
    import transformers
    from transformers import Trainer

    from kit.models.hf.trainer import KitTrainer

    breaks = contract_breaks(Trainer, KitTrainer, transformers.__version__, pinned_transformers())
    assert not breaks, "\n".join(breaks)


def test_a_changed_private_method_fails_naming_the_pinned_version():
    class Upgraded:  # a Trainer whose next version renamed one method and changed another
        def _get_train_sampler(self, dataset, shuffle=True): ...
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None): ...
        def _load_best_model(self): ...
        def _get_output_dir(self, trial): ...
        def _save_checkpoint_v2(self, model, trial): ...

    class Kit(Upgraded):
        def _get_train_sampler(self, train_dataset=None): ...
        def _load_best_model(self): ...
        def _get_output_dir(self, trial): ...
        def _save_checkpoint(self, model, trial): ...

    breaks = contract_breaks(Upgraded, Kit, "9.0.0", "5.23.0")
    assert len(breaks) == 2, breaks
    assert breaks[0].startswith("Trainer._get_train_sampler(self, dataset, shuffle=True) in "
                                "transformers 9.0.0 (KitTrainer in kit/models/hf/trainer.py was "
                                "written against transformers==5.23.0")
    assert breaks[1].startswith("Trainer._save_checkpoint no longer exists in transformers 9.0.0")


def test_an_unlisted_override_fails_too():
    class Base:
        def _inner_training_loop(self): ...

    class Kit(Base):
        def _inner_training_loop(self): ...

    breaks = contract_breaks(Base, Kit, "5.23.0", "5.23.0")
    assert breaks[0].startswith("KitTrainer overrides Trainer._inner_training_loop, which this "
                                "test does not list")
