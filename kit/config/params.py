"""Params, the kit's one import for them: the schema (kit.config.schema) and its loader.

One YAML file per competition or experiment, read into a strictly validated schema; see
kit.config.loading for how files, `extends:` and overrides are read.
"""

from kit.config.loading import diff_params, dump_params, load_params, params_from_dict
from kit.config.schema import (
    CompetitionParams,
    EdaParams,
    LoraParams,
    Params,
    PseudoParams,
    SubmitParams,
    TfidfParams,
    ThresholdParams,
    TrackingParams,
    TransformerParams,
    ValidationParams,
)
from kit.config.section import BLEND_SECTIONS, MODEL_KINDS, TASKS, Task

__all__ = [
    "BLEND_SECTIONS",
    "MODEL_KINDS",
    "TASKS",
    "CompetitionParams",
    "EdaParams",
    "LoraParams",
    "Params",
    "PseudoParams",
    "SubmitParams",
    "Task",
    "TfidfParams",
    "ThresholdParams",
    "TrackingParams",
    "TransformerParams",
    "ValidationParams",
    "diff_params",
    "dump_params",
    "load_params",
    "params_from_dict",
]
