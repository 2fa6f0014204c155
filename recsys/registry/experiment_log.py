"""The registry's append-only record of what happened: typed records, one JSON line each.

``experiments.jsonl`` in the registry folder holds every registry event (a version
registered, promoted, rolled back or restaged), every change of the rollout plan and
every rollout controller decision with its numbers. ``state.json`` keeps only what the
serving replicas poll (stages, production history, the plan), so it stays small however
long experiments run.

Each record is a pydantic model with a ``kind`` (the union :data:`Record`), a sequence
number ``seq`` given on append and a ``schema_version``. Writers hold the registry's
``flock`` lock (:func:`exclusive`) and write each record with one ``write`` to a file
opened with ``O_APPEND``, then ``fsync``, so lines never interleave and a committed record
survives a crash. Readers take no lock and never raise for bad content: a truncated last
line, a corrupt line or a record from a newer schema is logged with its line number,
returned as a :class:`Problem` and skipped.

Registries written before this file existed kept a free-text audit log in ``state.json``
(``log``); :func:`from_legacy` turns it into records, once, on the registry's first write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

log = logging.getLogger(__name__)

RECORDS, LOCK = "experiments.jsonl", ".lock"
SCHEMA_VERSION = 1
TAIL_BLOCK = 64 * 1024
"""Bytes read at a time when reading the file backwards (the last sequence number, the latest records)."""
LEGACY_ARMS = ("treatment", "control", "holdout")
HEALTH_FIELDS = ("requests", "p99_ms", "error_rate")
INTERVAL_FIELDS = ("estimate", "low", "high", "p_value")
REASONS_JOIN = "; "
"""How a decision's reasons are shown on one line (and were joined in the legacy log)."""
EPOCH = datetime.fromtimestamp(0, UTC)
LEGACY = "state.json log"
"""Where legacy problems are said to be (their number is the entry's, from 1)."""

NON_FINITE = frozenset({"Infinity", "-Infinity", "NaN"})
"""How infinite and undefined numbers are written (an always-valid interval is unbounded at first)."""

Scalar = bool | int | float | str | None
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""Experiment names (as :class:`recsys.registry.plan.Experiment` has them): no quotes, so a line's
experiment can be found without parsing it."""
ExperimentName = Annotated[str, Field(pattern=NAME_PATTERN)]
Action = Literal["advance", "hold", "rollback", "complete"]


def now() -> datetime:
    return datetime.now(UTC)


class BaseRecord(BaseModel):
    """What every record carries; unknown fields (from a newer minor change) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="strings")

    schema_version: int = SCHEMA_VERSION
    seq: int = 0
    """Position in the file, from 1; given on append (0 before)."""
    at: datetime = Field(default_factory=now)

    @property
    def summary(self) -> str:
        """One line for an audit table."""
        raise NotImplementedError

    @property
    def subject(self) -> str:
        """The model version the record is about (``-`` when none)."""
        return str(getattr(self, "version", "-"))


class Registered(BaseRecord):
    """A version was published."""

    kind: Literal["registered"] = "registered"
    version: str
    parent: str | None = None

    @property
    def summary(self) -> str:
        return "registered"


class Promoted(BaseRecord):
    """A version became production (``forced``: past a promotion gate that said no)."""

    kind: Literal["promoted"] = "promoted"
    version: str
    forced: bool = False

    @property
    def summary(self) -> str:
        return "promoted (forced)" if self.forced else "promoted"


class RolledBack(BaseRecord):
    """Production went back to ``version`` from ``from_version``."""

    kind: Literal["rolled_back"] = "rolled_back"
    version: str
    from_version: str

    @property
    def summary(self) -> str:
        return f"rolled back from {self.from_version}"


class StageSet(BaseRecord):
    """A non-production version was marked ``candidate`` or ``archived``."""

    kind: Literal["stage"] = "stage"
    version: str
    stage: str

    @property
    def summary(self) -> str:
        return f"stage {self.stage}"


class PlanChange(BaseRecord):
    """An experiment of the rollout plan was set (share, pause, mode) or stopped."""

    kind: Literal["plan"] = "plan"
    experiment: ExperimentName
    treatment: str | None = None
    share: float = 0.0
    """The treatment's share after the change (0 when stopped)."""
    paused: bool = False
    mode: str | None = None
    stopped: bool = False

    @property
    def summary(self) -> str:
        if self.stopped:
            return f"rollout {self.experiment}: stopped"
        return f"rollout {self.experiment}: share {self.share:g}" + (" (paused)" if self.paused else "")

    @property
    def subject(self) -> str:
        return self.treatment or "-"


class HoldoutChange(BaseRecord):
    """The plan's holdout share was set (0 ends it)."""

    kind: Literal["holdout"] = "holdout"
    share: float

    @property
    def summary(self) -> str:
        return f"holdout: share {self.share:g}"


class Interval(BaseModel):
    """A difference with its confidence interval (:class:`recsys.experiments.analysis.Difference`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="strings")

    estimate: float
    low: float
    high: float
    p_value: float


class ArmHealth(BaseModel):
    """The serving guardrail numbers of the version that served one arm."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="strings")

    requests: int = 0
    p99_ms: float = 0.0
    error_rate: float = 0.0


class DecisionRecord(BaseRecord):
    """One rollout controller decision on an experiment, with every number it saw."""

    kind: Literal["decision"] = "decision"
    experiment: ExperimentName
    treatment: str
    """The treatment version."""
    control_version: str | None = None
    """Production when the decision was made."""
    action: Action
    share: float
    """The treatment's share after the decision."""
    reasons: list[str] = Field(default_factory=list)
    arms: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per arm (``treatment``, ``control``, ``holdout``), its metrics as a dict
    (:class:`recsys.experiments.analysis.ArmMetrics`, field by field)."""
    listening: Interval | None = None
    """The fixed-sample interval of the listening difference."""
    sequential: Interval | None = None
    """The always-valid interval of the listening difference."""
    srm_p_value: float | None = None
    checks: list[dict[str, Scalar]] = Field(default_factory=list)
    """Every guardrail judged (:class:`recsys.experiments.controller.GuardrailCheck`, field by field)."""
    health: dict[str, ArmHealth] = Field(default_factory=dict)
    """Per arm, the serving latency and errors of the version that served it."""
    slices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per slice (``platform=ios``), users per arm and the listening difference with its CI."""

    @field_validator("checks")
    @classmethod
    def _non_finite_back(cls, checks: list[dict[str, Scalar]]) -> list[dict[str, Scalar]]:
        """Infinite and NaN numbers are written as strings (JSON has none); read them back as floats."""
        return [{k: float(v) if v in NON_FINITE else v for k, v in check.items()} for check in checks]

    @property
    def summary(self) -> str:
        return f"rollout {self.experiment}: {self.action}"

    @property
    def subject(self) -> str:
        return self.treatment

    def event_detail(self) -> dict[str, Scalar]:
        """The decision's numbers as flat scalars, for a ``model-events`` announcement."""
        flat: dict[str, Scalar] = {
            "experiment": self.experiment,
            "action": self.action,
            "share": self.share,
            "reasons": REASONS_JOIN.join(self.reasons),
            "control_version": self.control_version,
            "srm_p_value": self.srm_p_value,
        }
        for name in ("listening", "sequential"):
            interval = getattr(self, name)
            if interval is not None:
                flat |= {f"{name}_{k}": v for k, v in interval.model_dump().items()}
        for arm, metrics in self.arms.items():
            flat |= {f"{arm}_{k}": v for k, v in metrics.items()}
        for arm, health in self.health.items():
            flat |= {f"{arm}_{k}": v for k, v in health.model_dump().items()}
        return flat


class Note(BaseRecord):
    """A legacy audit entry no other kind describes, kept as its text."""

    kind: Literal["note"] = "note"
    text: str
    version: str = "-"

    @property
    def summary(self) -> str:
        return self.text


Record = Annotated[
    Registered | Promoted | RolledBack | StageSet | PlanChange | HoldoutChange | DecisionRecord | Note,
    Field(discriminator="kind"),
]
"""Any record, told apart by ``kind``."""
_RECORD: TypeAdapter[Record] = TypeAdapter(Record)
RecordT = TypeVar("RecordT", bound=BaseRecord)


@dataclass(frozen=True)
class Problem:
    """A line that could not be read."""

    line: int
    """1-based line number in the file (or entry number in a legacy log)."""
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Records:
    """What a read found: the good records in order, and the lines it skipped."""

    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# -- writing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the registry's writer lock (``flock`` on ``root/.lock``); not re-entrant."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ExperimentLog:
    """The records file of one registry folder.

    Parameters
    ----------
    root : Path
        The registry folder; the file is ``root/experiments.jsonl``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / RECORDS

    def append(self, records: Sequence[RecordT]) -> list[RecordT]:
        """Append ``records`` in order under the registry lock; returns them with their ``seq``."""
        with exclusive(self.root):
            return self.append_locked(records)

    def append_locked(self, records: Sequence[RecordT]) -> list[RecordT]:
        """:meth:`append` for a caller that already holds :func:`exclusive`.

        Each record is one ``write`` of one line; the batch is flushed to disk with one
        ``fsync`` before this returns.
        """
        if not records:
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                _write_all(fd, b"\n")  # a crash cut the last line: keep it apart from the next record
            seq = _last_seq(fd, size)
            stored: list[RecordT] = []
            for record in records:
                seq += 1
                numbered = record.model_copy(update={"seq": seq})
                _write_all(fd, numbered.model_dump_json().encode() + b"\n")
                stored.append(numbered)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.root)
        return stored

    def migrate_locked(self, entries: Sequence[Mapping[str, Any]]) -> Records:
        """Append a legacy audit log's entries as records (the caller holds :func:`exclusive`).

        Entries already in the file (an earlier migration cut short before ``state.json``
        lost its log) are not appended again.
        """
        converted = from_legacy(entries)
        converted.records = _not_yet_in(converted.records, self.read().records)
        self.append_locked(converted.records)
        return converted

    # -- reading ---------------------------------------------------------------------------

    def read(self, *, experiments: Collection[str] | None = None) -> Records:
        """Every readable record in order (only those of ``experiments`` when given).

        With ``experiments``, lines that do not name one of them are not parsed at all
        (nor checked), which keeps reading one experiment fast in a long file.
        """
        out = Records()
        wanted = None if experiments is None else set(experiments)
        for number, line in self._lines():
            if wanted is not None and _named_experiment(line) not in wanted:
                continue
            record = _parse(line, number, out.problems, self.path)
            if record is not None and (experiments is None or experiment_of(record) in experiments):
                out.records.append(record)
        return out

    def tail(self, count: int) -> Records:
        """The last ``count`` readable records, oldest first (the file is read from its end)."""
        out = Records()
        if count <= 0:
            return out
        block = TAIL_BLOCK
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                while True:
                    start = max(0, size - block)
                    fh.seek(start)
                    lines = _split_lines(fh.read(size - start))[1 if start else 0 :]
                    found: list[tuple[int, Record | str | None]] = []
                    good = 0
                    for index in range(len(lines) - 1, -1, -1):
                        found.append((index, _check(lines[index])))
                        good += isinstance(found[-1][1], BaseRecord)
                        if good >= count:
                            break
                    if good >= count or start == 0:
                        break
                    block *= 4
                damaged = any(isinstance(result, str) for _, result in found)
                first = _newlines_before(fh, start) + 2 if start and damaged else 1  # counted only if needed
        except FileNotFoundError:
            return out
        for index, result in reversed(found):
            if isinstance(result, str):
                _bad(out.problems, self.path, first + index, result)
            elif result is not None:
                out.records.append(result)
        return out

    def experiment_names(self) -> list[str]:
        """Every experiment the file mentions, in order of first appearance (no line is parsed)."""
        names: dict[str, None] = {}
        for _, line in self._lines():
            name = _named_experiment(line)
            if name is not None:
                names.setdefault(name, None)
        return list(names)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with self.path.open("rb") as fh:
                yield from enumerate(fh, start=1)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("%s: cannot read the experiment records: %s", self.path, exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _last_seq(fd: int, size: int) -> int:
    """The ``seq`` of the last readable line of the open file (0 when none)."""
    end = size
    carry = b""
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        chunk = os.pread(fd, end - start, start) + carry
        lines = chunk.split(b"\n")
        carry = lines[0] if start > 0 else b""
        for line in reversed(lines[1:] if start > 0 else lines):
            seq = _seq_of(line)
            if seq is not None:
                return seq
        end = start
    return 0


def _seq_of(line: bytes) -> int | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    seq = value.get("seq") if isinstance(value, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------------


def _parse(line: bytes, number: int, problems: list[Problem], path: Path) -> Record | None:
    """The record on ``line``, or ``None`` with the reason added to ``problems`` (blank lines are skipped)."""
    result = _check(line)
    if isinstance(result, str):
        _bad(problems, path, number, result)
        return None
    return result


def _check(line: bytes) -> Record | str | None:
    """The record on ``line``, or why there is none (``None`` for a blank line)."""
    if not line.strip():
        return None
    if not line.endswith(b"\n"):
        return "incomplete last line (cut short, or being written)"
    try:
        record = _RECORD.validate_json(line)
    except ValidationError as exc:
        return _reason(exc)
    if record.schema_version > SCHEMA_VERSION:
        return f"schema version {record.schema_version} is newer than this reader"
    return record


def _bad(
    problems: list[Problem], path: Path | str, number: int, reason: str, *, outcome: str = "record skipped"
) -> None:
    log.warning("%s:%d: %s; %s", path, number, reason, outcome)
    problems.append(Problem(number, reason))


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _split_lines(data: bytes) -> list[bytes]:
    """Lines with their newline; a last line without one is kept as it is."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _newlines_before(fh: BinaryIO, offset: int) -> int:
    fh.seek(0)
    count, left = 0, offset
    while left > 0:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            break
        count, left = count + chunk.count(b"\n"), left - len(chunk)
    return count


_NAMED = re.compile(rb'"experiment":"([A-Za-z0-9_.-]+)"')
"""The experiment a line names (written early in the line, so the search stops soon)."""


def _named_experiment(line: bytes) -> str | None:
    match = _NAMED.search(line)
    return match.group(1).decode() if match else None


def experiment_of(record: Record) -> str | None:
    """The experiment a plan change or decision is about (``None`` for other records)."""
    return record.experiment if isinstance(record, PlanChange | DecisionRecord) else None


def with_legacy(found: Records, legacy: Records) -> Records:
    """``found`` (from the file) and a legacy log's records not already in it, in time order."""
    if not legacy.records and not legacy.problems:
        return found
    older = _not_yet_in(legacy.records, found.records)
    merged = sorted([*older, *found.records], key=lambda r: r.at)  # stable: ties keep this order
    return Records(merged, [*legacy.problems, *found.problems])


def _not_yet_in(records: Iterable[Record], existing: Iterable[Record]) -> list[Record]:
    def key(record: Record) -> str:
        return record.model_dump_json(exclude={"seq"})

    seen = {key(r) for r in existing}
    return [r for r in records if key(r) not in seen]


# -- the legacy audit log --------------------------------------------------------------------

_ROLLOUT = re.compile(r"^rollout (?P<name>[A-Za-z0-9_.-]+): (?P<what>.+)$")
_SHARE = re.compile(r"^share (?P<share>[0-9.eE+-]+)$")
_HOLDOUT = re.compile(r"^holdout: share (?P<share>[0-9.eE+-]+)$")
_ROLLED_BACK = re.compile(r"^rolled back from (?P<version>\S+)$")
_STAGE = re.compile(r"^stage (?P<stage>\S+)$")
_ACTIONS = ("advance", "hold", "rollback", "complete")


def from_legacy(entries: Sequence[Mapping[str, Any]]) -> Records:
    """Records from a legacy ``state.json`` audit log (``{"at", "action", "version", "detail"?}``).

    The only place the log's free text is read. An entry it cannot place becomes a
    :class:`Note` with its text; one without a readable time takes the previous entry's.
    Records are numbered from 1 in the log's order.
    """
    out = Records()
    last_at = EPOCH
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping):
            _bad(out.problems, LEGACY, number, f"not an entry: {entry!r:.80}")
            continue
        try:
            at = datetime.fromisoformat(str(entry["at"]))
        except (KeyError, ValueError) as exc:
            _bad(out.problems, LEGACY, number, f"no readable time ({exc})", outcome="previous time used")
            at = last_at
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        last_at = at
        try:
            record = _legacy_record(entry, at)
        except (ValidationError, ValueError, TypeError) as exc:
            _bad(out.problems, LEGACY, number, _short(exc), outcome="kept as a note")
            record = Note(at=at, text=str(entry.get("action", "")), version=str(entry.get("version", "-")))
        out.records.append(record.model_copy(update={"seq": len(out.records) + 1}))
    return out


def _legacy_record(entry: Mapping[str, Any], at: datetime) -> Record:
    action, version = str(entry.get("action", "")), str(entry.get("version", "-"))
    rollout = _ROLLOUT.match(action)
    if rollout:
        return _legacy_rollout(rollout["name"], rollout["what"], version, entry.get("detail"), at)
    if action in ("registered",):
        return Registered(at=at, version=version)
    if action in ("promoted", "promoted (forced)"):
        return Promoted(at=at, version=version, forced=action.endswith("(forced)"))
    if match := _ROLLED_BACK.match(action):
        return RolledBack(at=at, version=version, from_version=match["version"])
    if match := _STAGE.match(action):
        return StageSet(at=at, version=version, stage=match["stage"])
    if match := _HOLDOUT.match(action):
        return HoldoutChange(at=at, share=float(match["share"]))
    return Note(at=at, text=action, version=version)


def _legacy_rollout(name: str, what: str, version: str, detail: Any, at: datetime) -> Record:
    if share := _SHARE.match(what):
        return PlanChange(at=at, experiment=name, treatment=version, share=float(share["share"]))
    if what == "stopped":
        return PlanChange(at=at, experiment=name, stopped=True)
    if what in _ACTIONS and isinstance(detail, Mapping):
        return _legacy_decision(name, what, version, detail, at)
    return Note(at=at, text=f"rollout {name}: {what}", version=version)


def _legacy_decision(
    name: str, action: str, version: str, detail: Mapping[str, Any], at: datetime
) -> DecisionRecord:
    """A decision from its flat legacy numbers (``treatment_users``, ``listening_low``, ...)."""
    arms: dict[str, dict[str, float]] = {}
    health: dict[str, ArmHealth] = {}
    for arm in LEGACY_ARMS:
        own = {k.removeprefix(f"{arm}_"): v for k, v in detail.items() if k.startswith(f"{arm}_")}
        metrics = {k: float(v) for k, v in own.items() if k not in HEALTH_FIELDS and _is_number(v)}
        if "users" in metrics:
            arms[arm] = metrics
        if any(k in own for k in HEALTH_FIELDS):
            health[arm] = ArmHealth.model_validate({k: own[k] for k in HEALTH_FIELDS if k in own})
    intervals = {
        name: Interval(**{k: float(detail[f"{name}_{k}"]) for k in INTERVAL_FIELDS})
        for name in ("listening", "sequential")
        if f"{name}_estimate" in detail
    }
    reasons = str(detail.get("reasons", ""))
    control = detail.get("control_version")
    return DecisionRecord(
        at=at,
        experiment=name,
        treatment=version,
        control_version=None if control is None else str(control),
        action=action,
        share=float(detail.get("share", 0.0)),
        reasons=reasons.split(REASONS_JOIN) if reasons else [],
        arms=arms,
        listening=intervals.get("listening"),
        sequential=intervals.get("sequential"),
        srm_p_value=detail.get("srm_p_value"),
        health=health,
        slices=dict(detail.get("slices", {})),
    )


def _short(exc: Exception) -> str:
    return _reason(exc) if isinstance(exc, ValidationError) else str(exc)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
