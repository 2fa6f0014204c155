"""``/dashboard``: a read-only page of the registry, the rollout plan and the experiments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from recsys.errors import RecsysError
from recsys.experiments import live_look, read_stats
from recsys.report.history import History, Look, experiment_names, history
from recsys.report.render import render_dashboard
from serving import deps
from serving.settings import ServingSettings
from serving.state import ModelHolder

router = APIRouter(tags=["dashboard"])
ENDED_SHOWN = 5
"""Finished experiments shown below the running ones."""
LOG_SHOWN = 25
REFRESH_S = 15


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    holder: Annotated[ModelHolder, Depends(deps.holder)],
    settings: Annotated[ServingSettings, Depends(deps.settings)],
) -> HTMLResponse:
    """The registry's versions, the rollout plan, and each experiment's numbers and charts
    (live when ``RECSYS_STATS_URL`` points at the stream worker). It refreshes itself."""
    registry = holder.registry
    state, plan = registry.state(), registry.rollout()
    histories = [history(state["log"], name) for name in experiment_names(state["log"])]
    running = [h for h in histories if any(e.name == h.name for e in plan.experiments)]
    ended = [h for h in histories if h not in running][-ENDED_SHOWN:][::-1]
    live, live_error = _live(settings.stats_url, plan.experiments)
    page = render_dashboard(
        now=datetime.now(UTC),
        refresh_s=REFRESH_S,
        production=registry.production(),
        serving=holder.current.version if holder.current else None,
        provider=holder.provider_of(holder.current.version) if holder.current else None,
        versions=registry.list()[::-1],
        plan=plan,
        experiments=[_panel(h, live.get(h.name)) for h in running],
        ended=[_panel(h, None) for h in ended],
        live_error=live_error,
        log=state["log"][-LOG_SHOWN:][::-1],
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
