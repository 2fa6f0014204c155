"""The registry's records: typed round trips, damaged lines, concurrent writers, the legacy log."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recsys.events.schemas import ModelEvent
from recsys.experiments.analysis import ArmMetrics, Difference
from recsys.experiments.report.history import History, Look, arm_metrics, history
from recsys.registry.experiment_log import (
    RECORDS,
    SCHEMA_VERSION,
    ArmHealth,
    DecisionRecord,
    ExperimentLog,
    HoldoutChange,
    Interval,
    Note,
    PlanChange,
    Promoted,
    Record,
    Registered,
    RolledBack,
    StageSet,
    exclusive,
    from_legacy,
)
from recsys.registry.plan import Experiment, RolloutPlan
from recsys.registry.store import FileRegistry

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ARM_FIELDS = (
    "listen_s_per_user",
    "listen_s_variance",
    "plays_per_user",
    "love_rate",
    "hate_rate",
    "skip_rate",
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def a_decision(
    minutes: float = 0, *, experiment: str = "v2.2", action: str = "advance", share: float = 0.02
) -> DecisionRecord:
    return DecisionRecord(
        at=at(minutes),
        experiment=experiment,
        treatment="2.2",
        control_version="2.1",
        action=action,
        share=share,
        reasons=["listening time per user +5.0s (always-valid 95% CI -1.0..+11.0), not worse", "1% -> 2%"],
        arms={
            "treatment": {"users": 320.0, "listen_s_per_user": 655.0, "hate_rate": 0.01, "novel_metric": 2.5},
            "control": {"users": 300.0, "listen_s_per_user": 650.0, "hate_rate": 0.011},
        },
        listening=Interval(estimate=5.0, low=-1.0, high=11.0, p_value=0.1),
        sequential=Interval(estimate=5.0, low=-math.inf, high=math.inf, p_value=1.0),
        srm_p_value=0.42,
        checks=[
            {
                "metric": "hate_rate",
                "estimate": -0.001,
                "low": -math.inf,
                "high": 0.004,
                "margin": 0.01,
                "alpha": 0.0125,
                "treatment_users": 320,
                "control_users": 300,
                "breached": False,
            }
        ],
        health={"treatment": ArmHealth(requests=900, p99_ms=41.5, error_rate=0.001)},
        slices={"platform=ios": {"treatment_users": 100.0, "control_users": 90.0, "estimate": -3.0}},
    )


def one_of_each() -> list[Record]:
    return [
        Registered(at=at(0), version="2.1", parent=None),
        Promoted(at=at(1), version="2.1", forced=True),
        PlanChange(at=at(2), experiment="v2.2", treatment="2.2", share=0.01, mode="interleave"),
        PlanChange(at=at(3), experiment="v2.2", treatment="2.2", share=0.01, paused=True),
        HoldoutChange(at=at(4), share=0.02),
        a_decision(5),
        PlanChange(at=at(6), experiment="v2.2", treatment="2.2", stopped=True),
        StageSet(at=at(7), version="2.2", stage="archived"),
        RolledBack(at=at(8), version="2.1", from_version="2.3"),
        Note(at=at(9), text="something the old log said", version="2.1"),
    ]


def test_every_kind_of_record_round_trips_in_order(tmp_path: Path) -> None:
    store = ExperimentLog(tmp_path)
    written = one_of_each()
    stored = store.append(written)
    assert [r.seq for r in stored] == list(range(1, len(written) + 1))
    read = store.read()
    assert not read.problems
    assert read.records == stored
    assert [r.model_copy(update={"seq": 0}) for r in read.records] == written
    decision = read.records[5]
    assert isinstance(decision, DecisionRecord)
    assert decision.sequential is not None and decision.sequential.low == -math.inf
    assert decision.checks[0]["low"] == -math.inf and decision.checks[0]["breached"] is False
    assert decision.checks[0]["treatment_users"] == 320
    for line in store.path.read_bytes().splitlines():
        assert json.loads(line)["schema_version"] == SCHEMA_VERSION  # each line is standard JSON


def test_a_decision_reads_back_tolerantly_into_a_look() -> None:
    decision = a_decision()
    look = history(
        [PlanChange(at=at(-1), experiment="v2.2", treatment="2.2", share=0.01), decision], "v2.2"
    ).last
    assert look is not None
    treatment = look.arms["treatment"]
    assert treatment.users == 320 and isinstance(treatment.users, int)  # the unknown key is ignored
    assert treatment.plays_per_user == 0.0  # a missing key takes the default
    assert look.reasons == "; ".join(decision.reasons)
    assert look.sequential == Difference(5.0, -math.inf, math.inf, 1.0)
    assert look.health == {"treatment": {"p99_ms": 41.5, "error_rate": 0.001}}
    assert look.checks[0]["metric"] == "hate_rate"
    full = ArmMetrics(
        **{f.name: 7 if f.name == "users" else 0.5 for f in fields(ArmMetrics) if f.default is not None}
    )
    assert arm_metrics({**vars(full), "from_a_newer_writer": 1.0}) == full


def test_the_event_detail_is_flat() -> None:
    detail = a_decision().event_detail()
    assert detail["treatment_users"] == 320.0 and detail["treatment_p99_ms"] == 41.5
    assert detail["listening_low"] == -1.0 and detail["reasons"].startswith("listening")  # type: ignore[union-attr]
    ModelEvent(kind="rollout_decision", version="2.2", detail=detail)  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "garbage_at"), [(3, 2), (8, 5), (25, 1)])
def test_a_cut_last_line_and_a_garbage_line_are_reported_and_skipped(
    tmp_path: Path, count: int, garbage_at: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = ExperimentLog(tmp_path)
    store.append([a_decision(i, share=i / 100) for i in range(count)])
    lines = store.path.read_bytes().splitlines(keepends=True)
    lines.insert(garbage_at - 1, b'{"kind": "decision", "exp\xff garbage\n')
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a crash cut the last record short
    store.path.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING, logger="recsys.registry.experiment_log"):
        read = store.read()
    assert [p.line for p in read.problems] == [garbage_at, count + 1]
    assert "incomplete last line" in read.problems[1].reason
    assert [r.seq for r in read.records] == list(range(1, count))  # all but the cut one, in order
    assert f"{RECORDS}:{garbage_at}:" in caplog.text and f"{RECORDS}:{count + 1}:" in caplog.text
    assert [r.seq for r in store.tail(2).records] == [count - 2, count - 1]
    assert [p.line for p in store.tail(count + 5).problems] == [garbage_at, count + 1]
    # the next write starts a fresh line: the cut record stays one bad line, the new one is whole
    (again,) = store.append([a_decision(99)])
    assert again.seq == count  # numbered after the last readable record
    after = store.read()
    assert [p.line for p in after.problems] == [garbage_at, count + 1]
    assert after.records[-1] == again and len(after.records) == count


def test_unknown_kinds_and_newer_schemas_are_skipped_not_raised(tmp_path: Path) -> None:
    store = ExperimentLog(tmp_path)
    store.append([Registered(version="2.1")])
    with store.path.open("ab") as fh:
        fh.write(b'{"kind": "teleported", "seq": 2, "at": "2026-03-01T09:00:00Z"}\n')
        newer = {"kind": "registered", "seq": 3, "schema_version": 99, "version": "2.2", "at": T0.isoformat()}
        fh.write(json.dumps(newer).encode() + b"\n")
        fh.write(b"\n[1, 2, 3]\n")
    read = store.read()
    assert [r.seq for r in read.records] == [1]
    assert [p.line for p in read.problems] == [2, 3, 5]
    assert "schema version 99" in read.problems[1].reason
    assert store.append([Registered(version="2.3")])[0].seq == 4  # the last line with a seq was 3


def test_reading_one_experiment_skips_the_others(tmp_path: Path) -> None:
    store = ExperimentLog(tmp_path)
    names = ["a", "b", "a.b", "c"]
    store.append([a_decision(i, experiment=names[i % len(names)]) for i in range(20)])
    store.append([PlanChange(experiment="a", treatment="2.2", share=0.01), Registered(version="2.4")])
    only_a = store.read(experiments=["a"]).records
    assert len(only_a) == 6 and all(getattr(r, "experiment", None) == "a" for r in only_a)
    assert store.experiment_names() == names
    assert not store.read(experiments=["zzz"]).records


def _append_from_a_process(root: str, writer: int, count: int, batch: int) -> None:
    store = ExperimentLog(Path(root))
    for start in range(0, count, batch):
        store.append(
            [Note(text=f"{writer}:{i}", version=str(writer)) for i in range(start, min(start + batch, count))]
        )


@pytest.mark.parametrize(("writers", "count", "batch"), [(2, 40, 1), (4, 150, 7), (3, 300, 64)])
def test_concurrent_writers_append_every_record_exactly_once(
    tmp_path: Path, writers: int, count: int, batch: int
) -> None:
    ctx = multiprocessing.get_context("spawn")
    processes = [
        ctx.Process(target=_append_from_a_process, args=(str(tmp_path), w, count, batch))
        for w in range(writers)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = (tmp_path / RECORDS).read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line)["kind"] == "note" for line in lines[:-1])
    read = ExperimentLog(tmp_path).read()
    assert not read.problems
    texts = [r.text for r in read.records if isinstance(r, Note)]
    assert sorted(texts) == sorted(f"{w}:{i}" for w in range(writers) for i in range(count))
    assert [r.seq for r in read.records] == list(range(1, writers * count + 1))
    for w in range(writers):  # each writer's records keep its order
        own = [int(t.split(":")[1]) for t in texts if t.startswith(f"{w}:")]
        assert own == sorted(own)


# -- the legacy audit log ----------------------------------------------------------------------


def _legacy_decision(
    minutes: float,
    action: str,
    share: float,
    reasons: list[str],
    users: tuple[int, int],
    listen: tuple[float, float],
    *,
    health: bool = False,
    slices: bool = False,
    newer_fields: bool = False,
) -> tuple[dict[str, Any], Look]:
    """A decision as the former audit log held it, and the :class:`Look` it stands for."""
    arms = {
        arm: ArmMetrics(
            users=n,
            listen_s_per_user=mean,
            listen_s_variance=300.0**2,
            plays_per_user=4.0,
            love_rate=0.05,
            hate_rate=0.03 if action == "rollback" and arm == "treatment" else 0.01,
            skip_rate=0.2,
            **({"hate_rate_variance": 0.0025, "skip_rate_variance": 0.04} if newer_fields else {}),
        )
        for arm, n, mean in zip(("treatment", "control"), users, listen, strict=True)
    }
    listening = Difference(listen[0] - listen[1], listen[0] - listen[1] - 20, listen[0] - listen[1] + 20, 0.3)
    sequential = Difference(listening.estimate, listening.estimate - 45, listening.estimate + 45, 1.0)
    detail: dict[str, Any] = {"control_version": "2.1", "share": share, "reasons": "; ".join(reasons)}
    detail |= {f"listening_{k}": v for k, v in vars(listening).items()}
    detail |= {f"sequential_{k}": v for k, v in vars(sequential).items()}
    detail["srm_p_value"] = 0.61
    for arm, metrics in arms.items():
        detail |= {f"{arm}_{k}": v for k, v in vars(metrics).items() if v is not None}
    served = {}
    if health:
        served = {
            "treatment": {"p99_ms": 48.0, "error_rate": 0.002},
            "control": {"p99_ms": 39.5, "error_rate": 0.0},
        }
        for arm, numbers in served.items():
            detail |= {f"{arm}_requests": 1200, **{f"{arm}_{k}": v for k, v in numbers.items()}}
    by_slice = {}
    if slices:
        by_slice = {
            "platform=web": {"treatment_users": 40.0, "control_users": 41.0, "estimate": -90.0, "low": -150.0,
                             "high": -30.0, "p_value": 0.004},
            "country=DE": {"treatment_users": 1.0, "control_users": 3.0},
        }  # fmt: skip
        detail["slices"] = by_slice
    look = Look(
        at=at(minutes),
        action=action,
        share=share,
        reasons="; ".join(reasons),
        arms=arms,
        listening=listening,
        srm_p_value=0.61,
        health=served,
        sequential=sequential,
        slices=by_slice,
    )
    return detail, look


def _entry(minutes: float, action: str, version: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = {"at": at(minutes).isoformat(), "action": action, "version": version}
    return entry | ({"detail": detail} if detail is not None else {})


def legacy_registry() -> tuple[list[dict[str, Any]], dict[str, History]]:
    """A former audit log over three experiments (rolled back, promoted, stopped), and their histories."""
    hold, hold_look = _legacy_decision(66, "hold", 0.01, ["80 users in the smaller arm (need 200)"], (80, 79),
                                       (640.0, 600.0))  # fmt: skip
    advance, advance_look = _legacy_decision(
        126, "advance", 0.02, ["listening time per user +40.0s, not worse", "1% -> 2%"], (300, 310),
        (640.0, 600.0), health=True, newer_fields=True,
    )  # fmt: skip
    rollback, rollback_look = _legacy_decision(
        186, "rollback", 0.0, ["hate rate up +0.020 per play (limit +0.010)"], (650, 640), (590.0, 600.0),
        health=True, slices=True,
    )  # fmt: skip
    to_100, to_100_look = _legacy_decision(
        300, "advance", 1.0, ["listening time per user +9.0s, not worse", "50% -> 100%"], (5000, 5100),
        (609.0, 600.0),
    )  # fmt: skip
    done, done_look = _legacy_decision(
        400, "complete", 1.0, ["listening time per user +9.5s, not worse", "at 100%: promote"], (9000, 0),
        (609.5, 600.0), health=True,
    )  # fmt: skip
    log = [
        _entry(0, "registered", "2.1"),
        _entry(1, "promoted (forced)", "2.1"),
        _entry(5, "registered", "2.2"),
        _entry(6, "rollout v2.2: share 0.01", "2.2"),
        _entry(66, "rollout v2.2: hold", "2.2", hold),
        _entry(126, "rollout v2.2: share 0.02", "2.2"),
        _entry(126, "rollout v2.2: advance", "2.2", advance),
        _entry(130, "holdout: share 0.02", "-"),
        _entry(186, "rollout v2.2: stopped", "-"),
        _entry(186, "rollout v2.2: rollback", "2.2", rollback),
        _entry(200, "registered", "2.3"),
        _entry(201, "rollout v2.3: share 0.5", "2.3"),
        _entry(202, "rollout v2.4: share 0.01", "2.4"),
        _entry(250, "rollout v2.4: stopped", "-"),
        _entry(300, "rollout v2.3: share 1", "2.3"),
        _entry(300, "rollout v2.3: advance", "2.3", to_100),
        _entry(400, "promoted (forced)", "2.3"),
        _entry(400, "rollout v2.3: stopped", "-"),
        _entry(400, "rollout v2.3: complete", "2.3", done),
        _entry(410, "stage archived", "2.2"),
        _entry(420, "rolled back from 2.3", "2.1"),
        _entry(421, "a line no one wrote on purpose", "2.1"),
    ]
    histories = {
        "v2.2": History(
            "v2.2", "2.2", [hold_look, advance_look, rollback_look],
            [(at(6), 0.01), (at(126), 0.02), (at(186), 0.0)], "rolled back", ["ab"],
        ),
        "v2.3": History(
            "v2.3", "2.3", [to_100_look, done_look], [(at(201), 0.5), (at(300), 1.0)], "promoted", ["ab"]
        ),
        "v2.4": History("v2.4", "2.4", [], [(at(202), 0.01), (at(250), 0.0)], "stopped", ["ab"]),
    }  # fmt: skip
    return log, histories


def _write_legacy(root: Path) -> tuple[list[dict[str, Any]], dict[str, History]]:
    log, histories = legacy_registry()
    root.mkdir(parents=True, exist_ok=True)
    plan = RolloutPlan(holdout=0.02, revision=9).model_dump(mode="json")
    stages = {"2.1": "production", "2.2": "archived", "2.3": "archived"}
    state = {"stages": stages, "production_history": ["2.1"], "rollout": plan, "log": log}
    (root / "state.json").write_text(json.dumps(state, indent=2))
    return log, histories


def test_the_legacy_log_reads_as_records_without_writing(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "models")
    log, histories = _write_legacy(registry.root)
    before = (registry.root / "state.json").read_bytes()
    read = registry.records()
    assert not read.problems and len(read.records) == len(log)
    kinds = [r.kind for r in read.records]
    assert kinds[:4] == ["registered", "promoted", "registered", "plan"] and kinds[7] == "holdout"
    assert kinds[-4:] == ["decision", "stage", "rolled_back", "note"]
    assert registry.experiment_names() == ["v2.2", "v2.3", "v2.4"]
    for name, expected in histories.items():
        assert history(read.records, name) == expected
        assert history(registry.records(experiments=[name]).records, name) == expected
    assert "log" not in registry.state() and registry.production() == "2.1"
    assert (registry.root / "state.json").read_bytes() == before and not (registry.root / RECORDS).exists()


def test_the_first_write_migrates_the_legacy_log_once(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "models")
    log, histories = _write_legacy(registry.root)
    registry.set_holdout(0.05)
    state = json.loads((registry.root / "state.json").read_text())
    assert (
        "log" not in state and state["rollout"]["holdout"] == 0.05 and state["production_history"] == ["2.1"]
    )
    read = registry.records()
    assert not read.problems and [r.seq for r in read.records] == list(range(1, len(log) + 2))
    assert read.records[-1] == HoldoutChange(seq=len(log) + 1, at=read.records[-1].at, share=0.05)
    for name, expected in histories.items():
        assert history(read.records, name) == expected
    registry.set_holdout(0.0)
    assert len(registry.records().records) == len(log) + 2  # migrated once


def test_a_migration_cut_short_is_not_repeated(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "models")
    log, histories = _write_legacy(registry.root)
    with exclusive(registry.root):  # the records were written, then the process died
        ExperimentLog(registry.root).migrate_locked(log)
    assert "log" in json.loads((registry.root / "state.json").read_text())
    assert len(registry.records().records) == len(log)  # read once, not twice
    registry.set_holdout(0.01)
    read = registry.records()
    assert len(read.records) == len(log) + 1 and not read.problems
    assert history(read.records, "v2.2") == histories["v2.2"]


def test_unreadable_legacy_entries_are_reported_not_raised() -> None:
    log, _ = legacy_registry()
    damaged = [*log[:3], "not an entry", {"action": "registered", "version": "2.9"}, *log[3:5]]
    damaged[6] = {**damaged[6], "detail": {"share": "lots"}}  # the hold decision's numbers are damaged
    read = from_legacy(damaged)  # type: ignore[arg-type]
    assert [p.line for p in read.problems] == [4, 5, 7]
    assert isinstance(read.records[3], Registered) and read.records[3].at == read.records[2].at
    assert isinstance(read.records[-1], Note) and read.records[-1].text == "rollout v2.2: hold"


# -- state.json stays what replicas poll ----------------------------------------------------


@pytest.mark.parametrize("decisions", [30, 300])
def test_state_stays_small_and_replicas_never_read_the_records(
    tmp_path: Path, decisions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[ModelEvent] = []
    registry = FileRegistry(tmp_path / "models", announce=events.append)
    registry.root.mkdir(parents=True)
    plan = RolloutPlan().upsert(Experiment(name="v2.2", treatment="2.2", share=0.05))
    state = {
        "stages": {"2.1": "production"},
        "production_history": ["2.1"],
        "rollout": plan.model_dump(mode="json"),
    }
    (registry.root / "state.json").write_text(json.dumps(state))
    before = (registry.root / "state.json").read_bytes()
    for i in range(decisions):
        stored = registry.record_decision(a_decision(i, action="hold", share=0.05))
        assert stored.seq == i + 1
    assert (registry.root / "state.json").read_bytes() == before  # a decision never rewrites it
    assert len(registry.decisions("v2.2")) == decisions and len(events) == decisions
    assert events[-1].detail["action"] == "hold" and events[-1].detail["treatment_users"] == 320.0

    def no_records(*_: object, **__: object) -> None:
        raise AssertionError("the records file was read")

    monkeypatch.setattr(ExperimentLog, "read", no_records)
    monkeypatch.setattr(ExperimentLog, "tail", no_records)
    monkeypatch.setattr(ExperimentLog, "_lines", no_records)
    assert registry.production() == "2.1" and registry.rollout().experiments[0].share == 0.05
    assert registry.state().keys() == {"stages", "production_history", "rollout"}
