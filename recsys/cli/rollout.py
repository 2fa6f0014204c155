"""``recsys rollout``: start, widen, pause and stop A/B experiments of model versions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from recsys.analysis import ArmMetrics
from recsys.cli.common import RegistryOption, arms_table, console, err_console, open_registry
from recsys.controller import Action, Decision, Guardrails, decide, step_age
from recsys.errors import BackboneUnavailable, InvalidRequest
from recsys.experiments import (
    apply_decision,
    arm_metrics,
    read_serving_health,
    read_stats,
    slice_differences,
)
from recsys.registry import DEFAULT_REGISTRY, FileRegistry
from recsys.rollout import Experiment, RolloutPlan

app = typer.Typer(help="A/B rollout of model versions to shares of users.", no_args_is_help=True)

StatsOption = Annotated[
    str, typer.Option(help="Arm counters: the stream worker's /stats/ URL, or a JSON file of the same shape.")
]
MinUsersOption = Annotated[int, typer.Option(help="Users in each arm before a step can end.")]
MinStepOption = Annotated[float, typer.Option(help="Seconds a step runs at least.")]
MaxHateOption = Annotated[
    float, typer.Option(help="Hates per play the treatment may add before it is rolled back.")
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
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Start an experiment or change its share; every replica follows within seconds."""
    experiment = Experiment(
        name=name or f"v{treatment}", treatment=treatment, share=share, salt=salt, paused=paused
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
    metrics: MetricsOption = None,
    max_p99_ms: MaxP99Option = Guardrails.max_p99_ms,
    max_error_rate: MaxErrorOption = Guardrails.max_error_rate,
    apply: Annotated[
        bool, typer.Option("--apply/--dry-run", help="Act on the decision, or only show it.")
    ] = True,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Advance, hold, roll back or complete an experiment from its arms' numbers; every
    decision goes to the registry's audit log with its numbers."""
    guardrails = _guardrails(min_users, min_step_s, max_hate_increase, max_p99_ms, max_error_rate)
    _advance_once(open_registry(registry), name, stats, metrics or [], guardrails, apply=apply)


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
    metrics: MetricsOption = None,
    max_p99_ms: MaxP99Option = Guardrails.max_p99_ms,
    max_error_rate: MaxErrorOption = Guardrails.max_error_rate,
    once: Annotated[bool, typer.Option("--once", help="Decide once for each experiment, then exit.")] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Decide every --every-s seconds (Ctrl-C stops). With a NAME, until that experiment
    completes or is rolled back; without, for every experiment in the plan, as a long-running
    job (an unreachable stream worker or replica is reported and tried again next time)."""
    guardrails = _guardrails(min_users, min_step_s, max_hate_increase, max_p99_ms, max_error_rate)
    reg = open_registry(registry)
    while True:
        for experiment in [name] if name else [e.name for e in reg.rollout().experiments]:
            try:
                decision = _advance_once(reg, experiment, stats, metrics or [], guardrails, apply=True)
            except BackboneUnavailable as exc:
                if name:
                    raise
                err_console.print(f"[yellow]{experiment}: no decision[/yellow]: {exc.message}")
                continue
            if name and decision.action in (Action.COMPLETE, Action.ROLLBACK):
                return
        if once:
            return
        time.sleep(every_s)


def _guardrails(
    min_users: int, min_step_s: float, max_hate_increase: float, max_p99_ms: float, max_error_rate: float
) -> Guardrails:
    return Guardrails(
        min_users=min_users,
        min_step=timedelta(seconds=min_step_s),
        max_hate_rate_increase=max_hate_increase,
        max_p99_ms=max_p99_ms,
        max_error_rate=max_error_rate,
    )


def _advance_once(
    reg: FileRegistry, name: str, stats: str, metrics: list[str], guardrails: Guardrails, *, apply: bool
) -> Decision:
    experiment = next((e for e in reg.rollout().experiments if e.name == name), None)
    if experiment is None:
        raise InvalidRequest(f"no experiment named {name!r}")
    counters = read_stats(stats)
    arms, slices = arm_metrics(counters, name), slice_differences(counters, name)
    health = read_serving_health(metrics) if metrics else {}
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
    for column in ("experiment", "treatment", "share", "salt", "state"):
        table.add_column(column)
    for e in plan.experiments:
        table.add_row(
            e.name, e.treatment, f"{e.share:.1%}", e.effective_salt, "paused" if e.paused else "running"
        )
    console.print(table if plan.experiments else "no experiments: everyone gets production")
    if plan.holdout:
        console.print(f"holdout: {plan.holdout:.1%} of users get popular tracks (variant holdout)")
