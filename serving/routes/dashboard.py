"""``/dashboard``: a read-only page of the registry, the rollout plan and the experiments (scope
``recommend`` or ``admin``; a browser may log in with the key as an HTTP Basic password)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from recsys.access.scopes import Scope
from recsys.errors import RecsysError
from recsys.experiments.arms import live_look, read_stats
from recsys.experiments.report.history import History, Look, history
from recsys.experiments.report.render import render_dashboard
from recsys.registry.experiment_log import Problem
from serving import auth, deps
from serving.errors import documented
from serving.settings import ServingSettings
from serving.state import ModelHolder

router = APIRouter(tags=["dashboard"])
ENDED_SHOWN = 5
"""Finished experiments shown below the running ones."""
LOG_SHOWN = 25
"""Latest records shown in the audit table."""
REFRESH_S = 15


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    dependencies=[Depends(auth.DASHBOARD)],
    responses=documented(scopes=[Scope.RECOMMEND, Scope.ADMIN], html=True),
)
def dashboard(
    holder: Annotated[ModelHolder, Depends(deps.holder)],
    settings: Annotated[ServingSettings, Depends(deps.settings)],
) -> HTMLResponse:
    """The registry's versions, the rollout plan, and each experiment's numbers and charts
    (live when ``RECSYS_STATS_URL`` points at the stream worker). It refreshes itself."""
    registry = holder.registry
    plan = registry.rollout()
    names = registry.experiment_names()
    running_names = [name for name in names if any(e.name == name for e in plan.experiments)]
    ended_names = [name for name in names if name not in running_names][-ENDED_SHOWN:][::-1]
    found = registry.records(experiments=[*running_names, *ended_names])
    recent = registry.latest_records(LOG_SHOWN)
    live, live_error = _live(settings.stats_url, plan.experiments)
    page = render_dashboard(
        now=datetime.now(UTC),
        refresh_s=REFRESH_S,
        production=registry.production(),
        serving=holder.current.version if holder.current else None,
        provider=holder.provider_of(holder.current.version) if holder.current else None,
        versions=registry.list()[::-1],
        plan=plan,
        experiments=[_panel(history(found.records, name), live.get(name)) for name in running_names],
        ended=[_panel(history(found.records, name), None) for name in ended_names],
        live_error=live_error,
        log=recent.records[::-1],
        problems=sorted({p.line: p for p in [*found.problems, *recent.problems]}.values(), key=_line),
    )
    return HTMLResponse(page)


def _live(stats_url: str, experiments: list[Any]) -> tuple[dict[str, Look], str | None]:
    if not stats_url:
        return {}, None
    try:
        stats = read_stats(stats_url)
    except RecsysError as exc:
        return {}, exc.message
    now = datetime.now(UTC)
    return {e.name: live_look(stats, e, now) for e in experiments}, None


def _panel(h: History, live: Look | None) -> dict[str, Any]:
    looks = [*h.looks, *([live] if live else [])]
    return {"h": h, "looks": looks, "latest": looks[-1] if looks else None, "live": live is not None}


def _line(problem: Problem) -> int:
    return problem.line
