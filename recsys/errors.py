"""The one exception tree of the service; the HTTP edge maps each class to its status.

::

    RecsysError                      500
    ├── ConfigurationError           500  bad settings, refused at startup
    ├── DataError                    400  input data cannot be used
    │   ├── DataFormatError          400  names the file and line at fault
    │   └── EmptyDataError           400
    ├── InvalidRequest               422  a well-formed call with unusable values
    │   └── UnknownScope             422  an API key scope that does not exist
    ├── NotFound                     404
    │   ├── ModelNotFound            404
    │   ├── UnknownTrack             404
    │   ├── UnknownPlaylist          404
    │   └── KeyNotFound              404  no API key by that name
    ├── RegistryError                409
    │   ├── VersionConflict          409
    │   ├── PromotionRefused         409  the promotion gate said no
    │   ├── NothingToRollBack        409
    │   └── KeyNameTaken             409  an API key by that name exists (revoked ones too)
    ├── Unauthenticated              401  no API key, or an unknown or revoked one
    ├── AccessDenied                 403  a valid API key without the scope the route needs
    ├── RateLimited                  429  over a feedback rate limit (with Retry-After)
    ├── PayloadTooLarge              413  request body over the configured limit
    ├── UnsupportedMediaType         415  a request body that is not JSON
    ├── ArtifactCorrupt              503  checksum or structure mismatch; never served
    ├── ModelUnavailable             503  no verified model loaded yet (with Retry-After)
    ├── RegistryUnreadable           503  the model registry has failed to be read for a while
    ├── BackboneUnavailable          503  the event backbone did not confirm a write
    ├── Overloaded                   503  as many requests in progress as the replica admits
    └── DeviceUnavailable            503  a GPU was required but is not usable

Foreign exceptions (pyarrow, numpy, onnxruntime, OS errors) are converted where
they are caught, with ``raise RecsysError(...) from exc``.
"""

from __future__ import annotations

from pathlib import Path


class RecsysError(Exception):
    """Base class of every error the service raises on purpose."""

    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(RecsysError):
    """Settings are invalid; raised at startup."""

    code = "configuration_error"


class DataError(RecsysError):
    """Input data cannot be used."""

    http_status = 400
    code = "invalid_data"


class DataFormatError(DataError):
    """A data file is malformed; the message names the file and, when known, the line."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class EmptyDataError(DataError):
    """A data source holds no interactions."""


class InvalidRequest(RecsysError):
    """A call whose values cannot be served (bad k, unknown option)."""

    http_status = 422
    code = "invalid_request"


class UnknownScope(InvalidRequest):
    """An API key scope other than ``recommend``, ``feedback`` and ``admin``."""

    code = "unknown_scope"


class NotFound(RecsysError):
    """Something named by the caller does not exist."""

    http_status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """No model version or alias by that name in the registry."""

    code = "model_not_found"


class UnknownTrack(NotFound):
    """The track id is not in the model's catalog."""

    code = "unknown_track"


class UnknownPlaylist(NotFound):
    """The playlist id is not known to the model."""

    code = "unknown_playlist"


class KeyNotFound(NotFound):
    """No API key by that name in the key store."""

    code = "key_not_found"


class RegistryError(RecsysError):
    """A registry operation conflicts with its current state."""

    http_status = 409
    code = "registry_conflict"


class VersionConflict(RegistryError):
    """A version with that number already exists."""

    code = "version_conflict"


class PromotionRefused(RegistryError):
    """The promotion gate refused the candidate; pass ``force`` to override."""

    code = "promotion_refused"


class NothingToRollBack(RegistryError):
    """There is no earlier production version to return to."""

    code = "nothing_to_roll_back"


class KeyNameTaken(RegistryError):
    """An API key by that name exists already (revoked keys keep their names)."""

    code = "key_name_taken"


class ArtifactCorrupt(RecsysError):
    """A model version's files fail verification; it is refused, never served."""

    http_status = 503
    code = "artifact_corrupt"


class Unauthenticated(RecsysError):
    """No API key was sent, or the key sent is unknown or revoked (the message never says which,
    and never repeats the key)."""

    http_status = 401
    code = "unauthenticated"


class AccessDenied(RecsysError):
    """A valid API key without the scope the route needs."""

    http_status = 403
    code = "access_denied"


class RateLimited(RecsysError):
    """A request over a feedback rate limit; retry after ``retry_after_s`` seconds.

    Parameters
    ----------
    message : str
    limit : str
        Which limit refused it: ``key`` (per API key) or ``user`` (per listener).
    retry_after_s : int
        Whole seconds until the limit's window has room again (at least 1).
    """

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, limit: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


class PayloadTooLarge(RecsysError):
    """The request body is larger than the service accepts."""

    http_status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RecsysError):
    """A request body sent as something other than JSON (a form, plain text)."""

    http_status = 415
    code = "unsupported_media_type"


class ModelUnavailable(RecsysError):
    """No verified model is loaded; the caller should retry later."""

    http_status = 503
    code = "model_unavailable"


class RegistryUnreadable(RecsysError):
    """The model registry has failed to be read for several checks: promotions may be missed."""

    http_status = 503
    code = "registry_unreadable"


class BackboneUnavailable(RecsysError):
    """The event backbone (Kafka) cannot be reached, started, or did not confirm a write."""

    http_status = 503
    code = "event_backbone_unavailable"


class Overloaded(RecsysError):
    """The replica has as many requests in progress as it admits; retry later or elsewhere."""

    http_status = 503
    code = "overloaded"


class DeviceUnavailable(RecsysError):
    """A GPU was required but implicit's CUDA build or a device is missing."""

    http_status = 503
    code = "device_unavailable"
