"""Params sections for where the kit runs and for delivery to Kaggle (package, push)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kit.config.section import Section
from kit.errors import KitError


@dataclass
class PlatformParams(Section):
    """Where the run reads and writes; null: what kit.core.platform detects."""

    section: ClassVar[str] = "platform"

    input_dir: str | None = field(default=None, metadata={
        "help": "Read-only inputs; null: /kaggle/input on Kaggle, none elsewhere."})
    working_dir: str | None = field(default=None, metadata={
        "help": "Where outputs go; null: /kaggle/working, /content on Colab, else the cwd."})
    checkpoint_dir: str | None = field(default=None, metadata={
        "help": "Folder that survives a disconnect; null: Drive on Colab when mounted."})
    disk_budget_gb: float = field(default=20.0, metadata={
        "help": "What Kaggle keeps of the working dir; a warning near it.", "within": "(0, inf)"})


@dataclass
class KaggleParams(Section):
    """Delivery to Kaggle: the offline dataset (`kit package`) and the notebook (`kit push`)."""

    section: ClassVar[str] = "kaggle"

    owner: str | None = field(default=None, metadata={
        "help": "Kaggle username owning dataset and notebook; null: $KAGGLE_USERNAME."})
    dataset: str | None = field(default=None, metadata={
        "help": "Slug of the offline dataset (wheels, model); null: `<name>-offline`."})
    kernel: str | None = field(default=None, metadata={
        "help": "Slug of the pushed notebook; null: `<name>-<notebook>`."})
    notebook: str = field(default="05_infer", metadata={
        "help": "The notebook `kit push` bakes and sends (a name in notebooks/)."})
    accelerator: Literal["none", "t4x2", "p100"] = field(default="t4x2", metadata={
        "help": "GPU of the pushed notebook: none, T4 x2 or P100."})
    internet: bool = field(default=False, metadata={
        "help": "Internet in a pushed scoring notebook (code competitions: off); 02_train: on."})
    private: bool = field(default=True, metadata={
        "help": "Keep the pushed notebook and dataset private."})
    code_competition: bool = field(default=False, metadata={
        "help": "The competition scores a notebook run offline, not an uploaded file."})
    time_limit_hours: float = field(default=9.0, metadata={
        "help": "Session limit: 05_infer stops with advice before it; 02_train's time budget.",
        "within": "(0, inf)"})
    model_sources: list[str] = field(default_factory=list, metadata={
        "help": "Kaggle Models to attach: owner/model/framework/variation/version (a LoRA base)."})

    def check(self) -> None:
        if self.code_competition and self.internet:
            raise KitError(
                "`kaggle.internet` is true for a code competition (`kaggle.code_competition`), "
                "whose notebooks must run with the internet off. Set kaggle.internet: false and "
                "attach what the notebook needs (`python -m kit package` builds that dataset).")
        for handle in self.model_sources:
            # The kaggle CLI's own rule (validate_model_instance_version_string, kaggle 2.2.4).
            parts = str(handle).split("/")
            if len(parts) != 5 or not all(parts) or not parts[4].isdigit():
                raise KitError(
                    f"`kaggle.model_sources` holds {handle!r}; a Kaggle Models handle is "
                    "owner/model/framework/variation/version, e.g. "
                    "'google/gemma/transformers/2b/1' (copy it from the model's page, version "
                    "number included).")
        for key in ("owner", "dataset", "kernel"):
            value = getattr(self, key)
            if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", value):
                raise KitError(f"`kaggle.{key}` is {value!r}; use letters, digits and dashes "
                               "(a Kaggle slug, the last part of its URL).")
