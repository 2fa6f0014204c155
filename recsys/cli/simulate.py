"""``recsys simulate``: simulated listeners call the real API and send their feedback."""

from __future__ import annotations

import http.client
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import numpy as np
import typer
from rich.progress import Progress

from recsys.access.tokens import authorization
from recsys.cli.common import console
from recsys.data.listeners import Listener, TasteModel
from recsys.data.synth import SynthSpec, generate
from recsys.errors import BackboneUnavailable

SEED_TRACKS = 5


class Api:
    """A keep-alive HTTP/1.1 connection to the service, presenting an API key when given one."""

    def __init__(self, base: str, key: str | None = None) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=30
        )
        self.headers = {"content-type": "application/json"} | (authorization(key) if key else {})

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            self.connection.request("POST", path, json.dumps(body), self.headers)
            response = self.connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            raise BackboneUnavailable(f"the API did not answer {path}: {exc}") from exc


def simulate(
    api: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RECSYS_API_KEY",
            show_envvar=True,
            help="API key with the recommend and feedback scopes (prefer the variable: a command "
            "line is visible to other users of the machine).",
        ),
    ] = None,
    users: Annotated[int, typer.Option(min=1, help="Simulated listeners.")] = 200,
    sessions: Annotated[int, typer.Option(min=1, help="Recommendation requests per listener.")] = 1,
    k: Annotated[int, typer.Option(min=1, max=500, help="Tracks per request.")] = 10,
    scale: Annotated[
        float, typer.Option(help="The synthetic data set's --scale (as in `data synth`).")
    ] = 0.001,
    playlists: Annotated[int | None, typer.Option(help="Its --playlists.")] = None,
    tracks: Annotated[int | None, typer.Option(help="Its --tracks.")] = None,
    data_seed: Annotated[int, typer.Option(help="Its --seed.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the listeners and their choices.")] = 0,
    output: Annotated[Path | None, typer.Option(help="Write the summary as JSON here.")] = None,
) -> None:
    """Simulated listeners with hidden tastes ask the API for recommendations, "listen" to them
    according to their affinity, and post plays, skips, loves and hates to /v1/feedback."""
    spec = SynthSpec.at_scale(scale, seed=data_seed)
    spec.playlists, spec.tracks = playlists or spec.playlists, tracks or spec.tracks
    with console.status("rebuilding the catalogue's hidden styles"):
        model = TasteModel(generate(spec))
    client, rng = Api(api, api_key), np.random.default_rng(seed)
    per_variant: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    refused = 0
    with Progress(console=console, transient=not sys.stdout.isatty()) as progress:
        task = progress.add_task("listening", total=users * sessions)
        for listener in model.listeners(users, seed=seed):
            for _ in range(sessions):
                refused += _session(client, model, listener, k, rng, per_variant)
                progress.advance(task)
    summary = _summary(per_variant, refused)
    console.print_json(json.dumps(summary))
    if output:
        output.write_text(json.dumps(summary, indent=2))


def _session(
    client: Api,
    model: TasteModel,
    listener: Listener,
    k: int,
    rng: np.random.Generator,
    per_variant: dict[str, dict[str, float]],
) -> int:
    """One request and the listener's feedback on it; returns events refused by the API."""
    body = {"user_id": listener.user_id, "seed_tracks": model.seed_tracks(listener, SEED_TRACKS, rng), "k": k}
    status, answer = client.post("/v1/recommendations", body)
    if status != 200:
        raise BackboneUnavailable(f"recommendations answered {status}: {answer}")
    served = {
        "request_id": answer["request_id"],
        "model_version": answer["model_version"],
        "variant": answer["variant"],
        "platform": listener.platform,
        "country": listener.country,
    }
    events, listened = [], 0
    for item in answer["items"]:
        heard = model.listen(listener, item["track_id"], rng)
        listened += heard.listen_ms
        credit = {"model_version": item["model_version"]} if "model_version" in item else {}  # interleaved
        for kind, ms in heard.events:
            events.append(
                {"user_id": listener.user_id, "track_id": heard.track_id, "type": kind.value, "listen_ms": ms}
                | served
                | credit
            )
    status, _ = client.post("/v1/feedback", {"events": events})
    arm = per_variant[f"{served['model_version']}|{served['variant']}"]
    arm["requests"] += 1
    arm["listen_s"] += listened / 1000
    arm["events"] += len(events)
    return 0 if status == 202 else len(events)


def _summary(per_variant: dict[str, dict[str, float]], refused: int) -> dict[str, Any]:
    arms = {
        arm: {
            "requests": int(v["requests"]),
            "events": int(v["events"]),
            "listen_s_per_request": round(v["listen_s"] / v["requests"], 1),
        }
        for arm, v in sorted(per_variant.items())
    }
    return {"arms": arms, "feedback_refused": refused}
