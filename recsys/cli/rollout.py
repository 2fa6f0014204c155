"""``recsys rollout``: start, widen, pause and stop A/B experiments of model versions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, arms_table, console, err_console, open_registry
from recsys.errors import BackboneUnavailable, InvalidRequest
from recsys.experiments.analysis import ArmMetrics
from recsys.experiments.arms import (
    apply_decision,
    arm_metrics,
    read_serving_health,
    read_stats,
    slice_differences,
)
from recsys.experiments.controller import Action, Decision, Guardrails, decide, step_age
from recsys.experiments.interleaving import InterleavingRules, credited_arms, decide_interleaving
from recsys.experiments.serving_health import ServingHealth
from recsys.registry.plan import Experiment, ExperimentMode, RolloutPlan
from recsys.registry.store import FileRegistry
from recsys.settings import DEFAULT_REGISTRY

app = typer.Typer(help="A/B rollout of model versions to shares of users.", no_args_is_help=True)

StatsOption = Annotated[
    str, typer.Option(help="Arm counters: the stream worker's /stats/ URL, or a JSON file of the same shape.")
]
MinUsersOption = Annotated[int, typer.Option(help="Users in each arm before a step can end.")]
MinStepOption = Annotated[float, typer.Option(help="Seconds a step runs at least.")]
MaxHateOption = Annotated[
    float,
    typer.Option(
        help="Non-inferiority margin: hates per play the treatment may add; rolled back when the "
        "increase is above it with confidence."
    ),
]
MaxSkipOption = Annotated[float, typer.Option(help="The same margin for skips per play.")]
AlphaOption = Annotated[
    float,
    typer.Option(
        min=0.0001,
        max=0.5,
        help="Chance per experiment, over all its looks, of rolling back a treatment no worse than "
        "control (split between the rules).",
    ),
]
MetricsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metrics",
        help="A serving replica's /metrics URL (repeat per replica): judge the treatment's p99 and errors.",
    ),
]
MaxP99Option = Annotated[
    float, typer.Option(help="p99 latency (ms) of the treatment version that rolls it back.")
]
MaxErrorOption = Annotated[
    float, typer.Option(help="Share of 5xx answers of the treatment that rolls it back.")
]
DEFAULT_STATS = "http://127.0.0.1:6066/stats/"


@app.command("set")
def set_(
    treatment: Annotated[str, typer.Option(help="Version to try (e.g. 2.2).")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of users, 0..1 (0.01 = 1%).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment name (default: the treatment version).")
    ] = None,
    salt: Annotated[str, typer.Option(help="Hash salt (default: the name).")] = "",
    paused: Annotated[
        bool, typer.Option("--paused/--running", help="Keep everyone on production for now.")
    ] = False,
    mode: Annotated[
        ExperimentMode,
        typer.Option(
            help="ab: an A/B test. interleave: each user gets one list merged from the treatment's and "
            "production's (a first rung: a preferred treatment goes on to A/B at 1%)."
        ),
    ] = ExperimentMode.AB,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Start an experiment or change its share; every replica follows within seconds."""
    experiment = Experiment(
        name=name or f"v{treatment}", treatment=treatment, share=share, salt=salt, paused=paused, mode=mode
    )
    _print(open_registry(registry).set_experiment(experiment))


@app.command()
def holdout(
    share: Annotated[float, typer.Argument(min=0.0, max=0.5, help="Share of users, 0..0.5 (0 ends it).")],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Hold a share of users out of personalisation: they get popular tracks (variant
    ``holdout``), which measures what the recommendations are worth against no model."""
    _print(open_registry(registry).set_holdout(share))


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """End an experiment: its users go back to production."""
    _print(open_registry(registry).stop_experiment(name))


@app.command()
def advance(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    stats: StatsOption = DEFAULT_STATS,
    min_users: MinUsersOption = Guardrails.min_users,
    min_step_s: MinStepOption = Guardrails.min_step.total_seconds(),
    max_hate_increase: MaxHateOption = Guardrails.max_hate_rate_increase,
    max_skip_increase: MaxSkipOption = Guardrails.max_skip_rate_increase,
    alpha: AlphaOption = Guardrails.alpha,
    metrics: MetricsOption = None,
    max_p99_ms: MaxP99Option = Guardrails.max_p99_ms,
    max_error_rate: MaxErrorOption = Guardrails.max_error_rate,
    apply: Annotated[
        bool, typer.Option("--apply/--dry-run", help="Act on the decision, or only show it.")
    ] = True,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Advance, hold, roll back or complete an experiment from its arms' numbers; every
    decision is recorded in the registry with its numbers."""
    guardrails = _guardrails(
        min_users=min_users,
        min_step_s=min_step_s,
        alpha=alpha,
        max_hate_increase=max_hate_increase,
        max_skip_increase=max_skip_increase,
        max_p99_ms=max_p99_ms,
        max_error_rate=max_error_rate,
    )
    reg = open_registry(registry)
    experiment = next((e for e in reg.rollout().experiments if e.name == name), None)
    if experiment is None:
        raise InvalidRequest(f"no experiment named {name!r}")
    sources = _read_sources(stats, metrics or [])
    _decide_one(reg, experiment, sources, guardrails, apply=apply)


@app.command()
def auto(
    name: Annotated[
        str | None, typer.Argument(help="Experiment name (default: every experiment in the plan).")
    ] = None,
    stats: StatsOption = DEFAULT_STATS,
    every_s: Annotated[float, typer.Option(min=0.1, help="Seconds between decisions.")] = 60.0,
    min_users: MinUsersOption = Guardrails.min_users,
    min_step_s: MinStepOption = Guardrails.min_step.total_seconds(),
    max_hate_increase: MaxHateOption = Guardrails.max_hate_rate_increase,
    max_skip_increase: MaxSkipOption = Guardrails.max_skip_rate_increase,
    alpha: AlphaOption = Guardrails.alpha,
    metrics: MetricsOption = None,
    max_p99_ms: MaxP99Option = Guardrails.max_p99_ms,
    max_error_rate: MaxErrorOption = Guardrails.max_error_rate,
    once: Annotated[bool, typer.Option("--once", help="Decide once for each experiment, then exit.")] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Decide every --every-s seconds (Ctrl-C stops). With a NAME, until that experiment
    completes or is rolled back; without, for every experiment in the plan, as a long-running
    job (an unreachable stream worker or replica is reported and tried again next time)."""
    guardrails = _guardrails(
        min_users=min_users,
        min_step_s=min_step_s,
        alpha=alpha,
        max_hate_increase=max_hate_increase,
        max_skip_increase=max_skip_increase,
        max_p99_ms=max_p99_ms,
        max_error_rate=max_error_rate,
    )
    reg = open_registry(registry)
    while True:
        if _one_pass(reg, name, stats, metrics or [], guardrails) or once:
            return
        time.sleep(every_s)


def _guardrails(
    *,
    min_users: int,
    min_step_s: float,
    alpha: float,
    max_hate_increase: float,
    max_skip_increase: float,
    max_p99_ms: float,
    max_error_rate: float,
) -> Guardrails:
    return Guardrails(
        min_users=min_users,
        min_step=timedelta(seconds=min_step_s),
        alpha=alpha,
        max_hate_rate_increase=max_hate_increase,
        max_skip_rate_increase=max_skip_increase,
        max_p99_ms=max_p99_ms,
        max_error_rate=max_error_rate,
    )


Sources = tuple[dict[str, dict[str, float]], dict[str, ServingHealth]]
"""The stream worker's arm counters and, per version, the replicas' serving health."""


def _read_sources(stats: str, metrics: list[str]) -> Sources:
    return read_stats(stats), read_serving_health(metrics) if metrics else {}


def _one_pass(
    reg: FileRegistry, name: str | None, stats: str, metrics: list[str], guardrails: Guardrails
) -> bool:
    """One decision for ``name`` or for every experiment in the plan, from one read of the
    counters and the metrics; whether the named experiment has ended."""
    plan = reg.rollout().experiments
    experiments = [e for e in plan if e.name == name] if name else plan
    if name and not experiments:
        raise InvalidRequest(f"no experiment named {name!r}")
    try:
        sources = _read_sources(stats, metrics)
    except BackboneUnavailable as exc:
        if name:
            raise
        err_console.print(f"[yellow]no decisions this time[/yellow]: {exc.message}")
        return False
    for experiment in experiments:
        decision = _decide_one(reg, experiment, sources, guardrails, apply=True)
        if name and decision.action in (Action.COMPLETE, Action.ROLLBACK):
            return True
    return False


def _decide_one(
    reg: FileRegistry, experiment: Experiment, sources: Sources, guardrails: Guardrails, *, apply: bool
) -> Decision:
    counters, health = sources
    if experiment.mode == ExperimentMode.INTERLEAVE:
        return _interleave_once(reg, experiment, counters, guardrails, apply=apply)
    name = experiment.name
    arms, slices = arm_metrics(counters, name), slice_differences(counters, name)
    versions = {"treatment": experiment.treatment, "control": reg.production()}
    serving = {arm: health[v] for arm, v in versions.items() if v in health}
    decision = decide(
        experiment=experiment,
        treatment=arms["treatment"],
        control=arms["control"],
        step_age=step_age(experiment, datetime.now(UTC)),
        guardrails=guardrails,
        serving=serving.get("treatment"),
    )
    _print_decision(name, arms, decision)
    for slice_, row in slices.items():
        if row.get("high", 0.0) < 0:
            console.print(
                f"  [red]listening down on {slice_}[/red]: {row['estimate']:+.1f}s per user "
                f"(95% CI {row['low']:+.1f}..{row['high']:+.1f}, not corrected for the number of slices)"
            )
    if apply:
        apply_decision(reg, experiment, decision, arms, serving, slices)
    return decision


def _interleave_once(
    reg: FileRegistry,
    experiment: Experiment,
    counters: dict[str, dict[str, float]],
    guardrails: Guardrails,
    *,
    apply: bool,
) -> Decision:
    """An interleaving experiment: ``--min-users`` counts its users with credited listening."""
    rules = InterleavingRules(
        min_users=guardrails.min_users, max_hate_rate_increase=guardrails.max_hate_rate_increase
    )
    decision = decide_interleaving(experiment, counters, rules=rules)
    arms = credited_arms(counters, experiment)
    _print_decision(experiment.name, arms, decision)
    if apply:
        apply_decision(reg, experiment, decision, arms)
    return decision


@app.command()
def status(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """The plan every replica serves."""
    _print(open_registry(registry).rollout())


def _print_decision(name: str, arms: dict[str, ArmMetrics], decision: Decision) -> None:
    title = f"experiment {name}: {decision.action.value} (share {decision.share:.0%})"
    console.print(arms_table(title, arms))
    for reason in decision.reasons:
        console.print(f"  {reason}")


def _print(plan: RolloutPlan) -> None:
    table = Table(title=f"rollout plan, revision {plan.revision}")
    for column in ("experiment", "treatment", "mode", "share", "salt", "state"):
        table.add_column(column)
    for e in plan.experiments:
        state = "paused" if e.paused else "running"
        table.add_row(e.name, e.treatment, e.mode.value, f"{e.share:.1%}", e.effective_salt, state)
    console.print(table if plan.experiments else "no experiments: everyone gets production")
    if plan.holdout:
        console.print(f"holdout: {plan.holdout:.1%} of users get popular tracks (variant holdout)")
