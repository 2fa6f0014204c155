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
they are caught, with ``raise RecsysError(...) from exc``. The event backbone's client
(aiokafka, which the core never imports) is the exception: its errors are recognised in one
place, :func:`backbone_error`, and every process converts them through it (most often with
:func:`backbone_failures`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


BACKBONE_CLIENT = "aiokafka"
"""The package of the event backbone's client: an exception whose class, or a base of it, is
defined in it is a failure of the backbone."""


def backbone_error(exc: BaseException, context: str) -> BackboneUnavailable | None:
    """The service's error for a failure of the event backbone's client; ``None`` for any other.

    The core imports no Kafka client, so the client's exceptions are recognised by their
    classes: one whose class or a base class is defined in :data:`BACKBONE_CLIENT` (its
    ``KafkaError`` tree, retriable or not, and ``ConsumerStoppedError``). A
    ``TimeoutError`` is one too: a wait on the backbone that ran out.

    Parameters
    ----------
    exc : BaseException
        What a call to the backbone's client raised.
    context : str
        What failed, the start of the message (``"the event backbone did not confirm the events"``).

    Returns
    -------
    BackboneUnavailable or None
        ``None`` for an exception the backbone's client did not raise (a bug, a
        :class:`RecsysError` already), which the caller lets through unchanged.
    """
    if isinstance(exc, RecsysError) or not (isinstance(exc, TimeoutError) or _from_backbone_client(exc)):
        return None
    return BackboneUnavailable(f"{context} ({_described(exc)})")


@contextmanager
def backbone_failures(context: str) -> Iterator[None]:
    """Raise :class:`BackboneUnavailable` from the backbone client's errors in the block.

    Parameters
    ----------
    context : str
        What failed, the start of the message (see :func:`backbone_error`).

    Raises
    ------
    BackboneUnavailable
        From an exception :func:`backbone_error` recognises; any other passes unchanged.
    """
    try:
        yield
    except Exception as exc:
        error = backbone_error(exc, context)
        if error is None:
            raise
        raise error from exc


def _from_backbone_client(exc: BaseException) -> bool:
    """Whether ``exc``'s class or one of its bases is defined in :data:`BACKBONE_CLIENT`."""
    return any(cls.__module__.partition(".")[0] == BACKBONE_CLIENT for cls in type(exc).__mro__)


def _described(exc: BaseException) -> str:
    """``exc``'s own words, with its class name once (the client's errors already name it)."""
    name = type(exc).__name__
    try:
        detail = str(exc).strip()
    except Exception:  # an abstract class of the client's (no error number to show)
        detail = ", ".join(str(arg) for arg in exc.args)
    if not detail:
        return name
    return detail if name in detail else f"{name}: {detail}"
