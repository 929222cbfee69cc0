"""The ModelZoo fetch engine: multi-connection, resumable, verified, mirror-aware."""

from .control import ControlFile, Validators
from .engine import FetchProgress, FetchResult, fetch
from .lock import FileLock
from .segments import Scheduler, Segment
from .settings import FetchSettings
from .validate import ModelFile, Safetensors, Validator, check_safetensors, validator_for

__all__ = [
    "ControlFile",
    "FetchProgress",
    "FetchResult",
    "FetchSettings",
    "FileLock",
    "ModelFile",
    "Safetensors",
    "Scheduler",
    "Segment",
    "Validator",
    "Validators",
    "check_safetensors",
    "fetch",
    "validator_for",
]
