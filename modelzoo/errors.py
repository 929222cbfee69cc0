"""The ModelZoo error tree.

    ModelZooError
    (sections below add their classes: FETCH ERRORS, SOURCE ERRORS, JOB ERRORS,
    RESIDENCY ERRORS)
    ├── FetchError (502)                          fetch: base of every download failure
    │   ├── RemoteError (502, ConnectionError)    the server failed after all retries
    │   │   ├── RemoteNotFound (404, FileNotFoundError)
    │   │   ├── RemoteAuthRequired (401, PermissionError)   401/403 from the origin
    │   │   ├── RateLimited (429)                 429 beyond the retry budget
    │   │   └── RemoteChanged (409)               the remote file changed mid-way, twice
    │   ├── BlockedAddress (403, PermissionError) a hop leads into ATELIER_FETCH_BLOCKED_NETWORKS
    │   ├── NotAModel (422, ValueError)           HTML/JSON page or broken safetensors header
    │   ├── SizeMismatch (422, ValueError)        truncated or longer than announced
    │   ├── ChecksumMismatch (422, ValueError)    sha256 differs; the file was deleted
    │   ├── InsufficientSpace (507, OSError)      free-space check or ENOSPC
    │   └── LockTimeout (423, TimeoutError)       another replica held the lock too long
"""

from __future__ import annotations


class ModelZooError(Exception):
    """Base of every error ModelZoo raises on purpose. ``status`` is the HTTP status."""

    status: int = 500
    code: str = "modelzoo_error"


# FETCH ERRORS


class FetchError(ModelZooError):
    """A download failed. ``url`` names the endpoint when one is to blame."""

    status, code = 502, "fetch_failed"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class RemoteError(FetchError, ConnectionError):
    status, code = 502, "remote_error"


class RemoteNotFound(RemoteError, FileNotFoundError):
    status, code = 404, "remote_not_found"


class RemoteAuthRequired(RemoteError, PermissionError):
    status, code = 401, "remote_auth_required"


class RateLimited(RemoteError):
    status, code = 429, "rate_limited"


class RemoteChanged(RemoteError):
    status, code = 409, "remote_changed"


class BlockedAddress(FetchError, PermissionError):
    """The URL (or a redirect on its way) leads to a network downloads may not reach."""

    status, code = 403, "blocked_address"


class NotAModel(FetchError, ValueError):
    status, code = 422, "not_a_model"


class SizeMismatch(FetchError, ValueError):
    status, code = 422, "size_mismatch"


class ChecksumMismatch(FetchError, ValueError):
    status, code = 422, "checksum_mismatch"


class InsufficientSpace(FetchError, OSError):
    status, code = 507, "insufficient_space"


class LockTimeout(FetchError, TimeoutError):
    status, code = 423, "lock_timeout"


# SOURCE ERRORS (references and the remote catalogues: Civitai, Hugging Face, ModelScope)
#
#   FetchError
#   ├── BadReference (400, ValueError)       a reference in no accepted form; lists them
#   └── RemoteError
#       ├── EarlyAccess (403, PermissionError)  Civitai early access not bought
#       └── Archived (410, FileNotFoundError)   Civitai archived the version's files


class BadReference(FetchError, ValueError):
    status, code = 400, "bad_reference"


class EarlyAccess(RemoteError, PermissionError):
    status, code = 403, "early_access"


class Archived(RemoteError, FileNotFoundError):
    status, code = 410, "archived"


# JOB ERRORS (the download queue, the library and who may write where)
#
#   JobError (400)                             a request the queue cannot take
#   ├── JobNotFound (404, LookupError)         no such job, or not yours
#   ├── JobConflict (409)                      pause a finished job, retry a running one...
#   ├── NotAllowed (403, PermissionError)      viewers fetching, a destination outside yours
#   ├── DestinationExists (409, FileExistsError)  another file under that name (conflict=fail)
#   └── QuotaExceeded (507, OSError)           the download would not fit in your quota


class JobError(ModelZooError):
    status, code = 400, "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotFound(JobError, LookupError):
    status, code = 404, "job_not_found"


class JobConflict(JobError):
    status, code = 409, "job_conflict"


class NotAllowed(JobError, PermissionError):
    status, code = 403, "forbidden"


class DestinationExists(JobError, FileExistsError):
    status, code = 409, "destination_exists"


class QuotaExceeded(JobError, OSError):
    status, code = 507, "quota_exceeded"



# RESIDENCY ERRORS
#
#   ResidencyError (500)                   carries ``message`` and JSON ``extra`` fields
#   ├── InvalidGenerateRequest (400, ValueError)   size/steps/sampler out of range
#   ├── ResidencyForbidden (403, PermissionError)  viewers generating, non-admins pinning
#   ├── UnknownModel (404, LookupError)
#   ├── UnknownDevice (404, LookupError)
#   ├── ModelBusy (409, RuntimeError)              unloading a model that is running
#   ├── InvalidCheckpoint (422, ValueError)        truncated file, HTML posing as safetensors
#   │   ├── UnsupportedModel (422)                 a family we cannot run (LoRA, VAE, pix2pix...)
#   │   └── ModelConfigMissing (422)               no local diffusers config for its family
#   ├── UnknownJob (404, LookupError)              no such generation job (or not yours)
#   ├── UnknownNetwork (404, LookupError)          a LoRA / embedding / VAE not in its folder
#   ├── InvalidNetwork (422, ValueError)           a LoRA / embedding that does not fit the model
#   ├── JobNotFinished (409, RuntimeError)         cancelling a job that has finished
#   ├── QueueFull (429)                            the generation queue is at its bound
#   ├── BackendUnavailable (503, ImportError)      torch/diffusers missing
#   ├── ModelTooLarge (507, MemoryError)           cannot fit even with everything evicted
#   ├── OutOfDeviceMemory (507, MemoryError)       CUDA OOM again after one eviction + retry
#   └── StorageQuotaExceeded (507, OSError)        the images would exceed the owner's quota


class ResidencyError(ModelZooError):
    """Base of the residency errors; ``extra`` goes into the JSON body beside error/message."""

    message: str = "model residency error"
    code = "residency_error"

    def __init__(self, message: str | None = None, **extra: object) -> None:
        self.message = message or self.message
        self.extra = extra
        super().__init__(self.message)

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidGenerateRequest(ResidencyError, ValueError):
    status, code, message = 400, "invalid_request", "invalid generation request"


class ResidencyForbidden(ResidencyError, PermissionError):
    status, code, message = 403, "forbidden", "not allowed for your role"


class UnknownModel(ResidencyError, LookupError):
    status, code, message = 404, "unknown_model", "no such model"


class UnknownDevice(ResidencyError, LookupError):
    status, code, message = 404, "unknown_device", "no such device"


class ModelBusy(ResidencyError, RuntimeError):
    status, code, message = 409, "model_busy", "the model is running a job"


class InvalidCheckpoint(ResidencyError, ValueError):
    status, code, message = 422, "invalid_checkpoint", "not a valid safetensors checkpoint"


class BackendUnavailable(ResidencyError, ImportError):
    status, code, message = 503, "backend_unavailable", "torch/diffusers are not installed"


class ModelTooLarge(ResidencyError, MemoryError):
    status, code, message = 507, "model_too_large", "the model cannot fit in memory"


class OutOfDeviceMemory(ResidencyError, MemoryError):
    status, code, message = 507, "out_of_memory", "device out of memory after eviction and retry"


class UnsupportedModel(InvalidCheckpoint):
    status, code, message = 422, "unsupported_model", "this kind of model cannot be run here"


class ModelConfigMissing(InvalidCheckpoint):
    status, code, message = 422, "missing_config", "no local diffusers config for this model"


class UnknownJob(ResidencyError, LookupError):
    status, code, message = 404, "unknown_job", "no such generation job"


class UnknownNetwork(ResidencyError, LookupError):
    status, code, message = 404, "unknown_network", "no such LoRA, embedding or VAE"


class InvalidNetwork(ResidencyError, ValueError):
    status, code, message = 422, "invalid_network", "the LoRA, embedding or VAE does not fit"


class JobNotFinished(ResidencyError, RuntimeError):
    status, code, message = 409, "job_state", "the job is not in a state that allows this"


class QueueFull(ResidencyError):
    status, code, message = 429, "queue_full", "the generation queue is full; retry later"


class StorageQuotaExceeded(ResidencyError, OSError):
    status, code, message = 507, "quota_exceeded", "this would exceed your storage quota"
