"""The HTTP API through FastAPI's TestClient, on a real registry with trained versions.

Clients present a key with the ``recommend`` and ``feedback`` scopes, as an application would;
admin calls present the admin token."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recsys.access.scopes import Scope
from recsys.experiments.serving_health import serving_health
from recsys.registry.artifacts import ITEM_FACTORS
from recsys.registry.store import FileRegistry
from serving.app import create_app
from serving.schemas import RecommendationResponse
from serving.settings import ServingSettings
from tests.keys import authorised, bearer, new_key
from training.pipeline import TrainResult

TOKEN = "s3cret-token"
ADMIN = bearer(TOKEN)


@pytest.fixture
def registry(trained: tuple[FileRegistry, TrainResult], tmp_path: Path) -> FileRegistry:
    """A private copy of the trained registry (2.1 in production), so tests may change it."""
    shutil.copytree(trained[0].root, tmp_path / "models")
    return FileRegistry(tmp_path / "models")


def client_for(registry: FileRegistry, **overrides: object) -> TestClient:
    """A client of the app presenting a key with the recommend and feedback scopes."""
    overrides.setdefault("feedback_sink", "memory://")
    settings = ServingSettings(registry=registry.root, admin_token=SecretStr(TOKEN), **overrides)  # type: ignore[arg-type]
    headers = authorised(registry.root, Scope.RECOMMEND, Scope.FEEDBACK)
    return TestClient(create_app(settings), headers=headers)


@pytest.fixture
def client(registry: FileRegistry) -> Iterator[TestClient]:
    with client_for(registry) as c:
        yield c


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "2.1"}


def test_recommendations_for_a_trained_playlist(client: TestClient, registry: FileRegistry) -> None:
    model = registry.load("production")
    pid = model.row_ids.external(2)
    own = set(model.item_ids.externals(model.row_items[2].indices))
    response = client.post("/v1/recommendations", json={"user_id": "u1", "playlist_id": pid, "k": 15})
    body = response.json()
    RecommendationResponse.model_validate(body, strict=True)  # the documented shape
    assert response.headers["content-type"] == "application/json"
    assert body["model_version"] == "2.1" and body["variant"] == "control" and body["request_id"]
    tracks = [item["track_id"] for item in body["items"]]
    assert len(tracks) == 15 and own.isdisjoint(tracks)
    assert [i["score"] for i in body["items"]] == sorted((i["score"] for i in body["items"]), reverse=True)


def test_new_playlist_is_folded_in_and_exclusions_hold(client: TestClient) -> None:
    seeds = ["tr1", "tr2", "tr3"]
    body = client.post(
        "/v1/recommendations",
        json={"user_id": "u2", "seed_tracks": seeds, "exclude_tracks": ["tr4"], "k": 30},
    ).json()
    tracks = {item["track_id"] for item in body["items"]}
    assert body["variant"] == "control" and len(tracks) == 30
    assert tracks.isdisjoint({*seeds, "tr4"})


def test_nothing_known_gets_popularity_labelled(client: TestClient) -> None:
    body = client.post("/v1/recommendations", json={"user_id": "stranger", "seed_tracks": ["nope"]}).json()
    assert body["variant"] == "fallback:popularity" and len(body["items"]) == 20


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "u", "k": 0},
        {"user_id": "u", "k": 501},
        {"user_id": ""},
        {"user_id": "u", "surprise": 1},
        {},
    ],
)
def test_bad_requests_are_422(client: TestClient, payload: dict[str, object]) -> None:
    assert client.post("/v1/recommendations", json=payload).status_code == 422


def test_oversized_body_is_refused(registry: FileRegistry) -> None:
    with client_for(registry, max_body_bytes=200) as c:
        response = c.post("/v1/recommendations", json={"user_id": "u", "seed_tracks": ["x" * 50] * 10})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_oversized_chunked_body_is_refused_and_small_ones_pass(registry: FileRegistry) -> None:
    """A body without Content-Length is counted as it arrives."""
    big = json.dumps({"user_id": "u", "seed_tracks": ["x" * 50] * 10}).encode()
    small = json.dumps({"user_id": "u", "k": 3}).encode()
    with client_for(registry, max_body_bytes=200) as c:
        refused = c.post("/v1/recommendations", content=iter([big[:100], big[100:]]))
        accepted = c.post(
            "/v1/recommendations", content=iter([small]), headers={"content-type": "application/json"}
        )
    assert refused.status_code == 413 and refused.json()["request_id"] == refused.headers["x-request-id"]
    assert accepted.status_code == 200 and len(accepted.json()["items"]) == 3


def test_similar_tracks(client: TestClient) -> None:
    body = client.get("/v1/tracks/tr1/similar", params={"k": 5}).json()
    assert body["track_id"] == "tr1" and len(body["items"]) == 5
    assert "tr1" not in {item["track_id"] for item in body["items"]}
    missing = client.get("/v1/tracks/not-a-track/similar")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_track"
    assert client.get("/v1/tracks/tr1/similar", params={"k": 0}).status_code == 422


def test_models_list_and_detail(client: TestClient) -> None:
    [summary] = client.get("/v1/models").json()
    assert summary["version"] == "2.1" and summary["serving"] and summary["stage"] == "production"
    assert summary["provider"] == "CPUExecutionProvider"
    detail = client.get("/v1/models/production").json()
    assert detail["manifest"]["version"] == "2.1" and detail["manifest"]["files"]
    assert client.get("/v1/models/9.9").status_code == 404


def test_admin_routes_need_the_admin_scope_or_the_admin_token(client: TestClient) -> None:
    assert client.post("/v1/rollback").status_code == 403  # the client's key has no admin scope
    assert client.post("/v1/rollback", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.post("/v1/rollback", headers=ADMIN)
    assert response.status_code == 409 and response.json()["error"] == "nothing_to_roll_back"


def test_an_admin_key_works_without_a_configured_token(registry: FileRegistry) -> None:
    admin = bearer(new_key(registry.root, Scope.ADMIN))
    with TestClient(create_app(ServingSettings(registry=registry.root, feedback_sink="memory://"))) as c:
        guessed = c.post("/v1/rollback", headers=ADMIN)
        response = c.post("/v1/rollback", headers=admin)
    assert guessed.status_code == 401 and response.status_code == 409


def test_no_model_means_503_with_retry_after(tmp_path: Path) -> None:
    with client_for(FileRegistry(tmp_path / "empty")) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        response = c.post("/v1/recommendations", json={"user_id": "u"})
        assert response.status_code == 503 and response.json()["error"] == "model_unavailable"
        assert c.get("/healthz").status_code == 200


def test_a_corrupt_model_is_not_served(registry: FileRegistry) -> None:
    target = registry.folder("production") / ITEM_FACTORS
    target.write_bytes(target.read_bytes()[:-8] + b"garbage!")
    with client_for(registry) as c:
        assert c.get("/readyz").status_code == 503


def test_metrics_are_exposed(client: TestClient) -> None:
    client.post("/v1/recommendations", json={"user_id": "u", "seed_tracks": ["tr1"]})
    text = client.get("/metrics").text
    assert "recsys_request_seconds_bucket" in text and 'model_version="2.1"' in text


def test_a_promoted_version_is_picked_up_without_restart(registry: FileRegistry) -> None:
    from tests.unit.test_registry import clone_version

    with client_for(registry, reload_interval_s=0) as c:
        holder = c.app.state.holder  # type: ignore[attr-defined]
        new = clone_version(registry, registry, ndcg=0.99)
        registry.promote(new, force=True)
        assert holder.refresh("production") and holder.current.version == new
        assert (
            c.post("/v1/recommendations", json={"user_id": "u", "seed_tracks": ["tr1"]}).json()[
                "model_version"
            ]
            == new
        )


def test_a_corrupt_promotion_keeps_the_old_version_serving(registry: FileRegistry) -> None:
    from tests.unit.test_registry import clone_version

    with client_for(registry, reload_interval_s=0) as c:
        holder = c.app.state.holder  # type: ignore[attr-defined]
        bad = clone_version(registry, registry, ndcg=0.99)
        registry.promote(bad, force=True)
        target = registry.folder(bad) / ITEM_FACTORS
        target.write_bytes(target.read_bytes()[:-8] + b"garbage!")
        assert not holder.refresh("production")
        assert holder.current.version == "2.1"
        assert c.get("/readyz").json()["model_version"] == "2.1"
        assert not holder.refresh("production")  # not retried while production stays on the bad version


def test_the_watcher_swaps_in_the_background(registry: FileRegistry) -> None:
    import time

    from tests.unit.test_registry import clone_version

    with client_for(registry, reload_interval_s=0.05) as c:
        new = clone_version(registry, registry, ndcg=0.99)
        registry.promote(new, force=True)
        deadline = time.monotonic() + 10
        while c.get("/readyz").json()["model_version"] != new and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json()["model_version"] == new


def test_holdout_users_get_popular_tracks_labelled_holdout(registry: FileRegistry) -> None:
    with client_for(registry) as c:
        assert c.put("/v1/rollout/holdout", json={"share": 0.5}).status_code == 403  # admin only
        admin = ADMIN
        assert c.put("/v1/rollout/holdout", json={"share": 0.9}, headers=admin).status_code == 422
        assert c.put("/v1/rollout/holdout", json={"share": 0.5}, headers=admin).json()["holdout"] == 0.5
        answers = [
            c.post("/v1/recommendations", json={"user_id": f"user{i}", "seed_tracks": ["tr1"], "k": 5}).json()
            for i in range(60)
        ]
    held = [a for a in answers if a["variant"] == "holdout"]
    assert 15 < len(held) < 45 and all(a["variant"] == "control" for a in answers if a not in held)
    popular = {tuple(item["track_id"] for item in a["items"]) for a in held}
    assert len(popular) == 1 and "tr1" not in next(iter(popular))  # the same chart, minus the seed
    assert all(a["model_version"] == "2.1" for a in answers)


def test_rollout_routes_users_to_the_treatment(registry: FileRegistry) -> None:
    from tests.unit.test_registry import clone_version

    treatment = clone_version(registry, registry, ndcg=0.5)
    admin = ADMIN
    with client_for(registry, reload_interval_s=0) as c:
        assert (
            c.put("/v1/rollout", json={"name": "exp", "treatment": treatment, "share": 0.5}).status_code
            == 403
        )
        plan = c.put(
            "/v1/rollout", json={"name": "exp", "treatment": treatment, "share": 0.5}, headers=admin
        ).json()
        assert plan["revision"] == 1 and plan["experiments"][0]["share"] == 0.5
        shares = {m["version"]: (m["rollout_share"], m["serving"]) for m in c.get("/v1/models").json()}
        assert shares[treatment] == (0.5, True) and shares["2.1"] == (0.0, True)
        answers = {}
        for i in range(200):
            body = c.post("/v1/recommendations", json={"user_id": f"user{i}", "seed_tracks": ["tr1"]}).json()
            answers[f"user{i}"] = (body["model_version"], body["variant"])
        treated = {u for u, (v, variant) in answers.items() if v == treatment}
        assert all(answers[u][1] == "exp:treatment" for u in treated)
        # at 50% the rest of the users are the experiment's control slice
        assert all(answers[u] == ("2.1", "exp:control") for u in set(answers) - treated)
        assert 60 < len(treated) < 140
        # latency is labelled with the version that answered: the rollout guardrails read it
        health = serving_health([c.get("/metrics").text])
        assert health[treatment].requests >= len(treated) and health[treatment].p99_ms > 0
        # sticky, and widening keeps every treated user in treatment
        c.put("/v1/rollout", json={"name": "exp", "treatment": treatment, "share": 0.9}, headers=admin)
        widened = {
            u
            for u in answers
            if c.post("/v1/recommendations", json={"user_id": u, "seed_tracks": ["tr1"]}).json()[
                "model_version"
            ]
            == treatment
        }
        assert treated <= widened and len(widened) > len(treated)
        assert c.delete("/v1/rollout/exp", headers=admin).json()["experiments"] == []
        body = c.post(
            "/v1/recommendations", json={"user_id": next(iter(treated)), "seed_tracks": ["tr1"]}
        ).json()
        assert body["model_version"] == "2.1"


def test_rollout_to_an_unknown_version_is_refused(client: TestClient) -> None:
    response = client.put(
        "/v1/rollout",
        json={"name": "exp", "treatment": "7.7", "share": 0.1},
        headers=ADMIN,
    )
    assert response.status_code == 404 and client.get("/v1/rollout").json()["experiments"] == []


def test_every_served_list_is_logged(registry: FileRegistry, tmp_path: Path) -> None:
    import json

    log_path = tmp_path / "impressions.jsonl"
    with client_for(registry, impression_log=f"file://{log_path}") as c:
        body = c.post(
            "/v1/recommendations", json={"user_id": "u7", "playlist_id": "p", "seed_tracks": ["tr1"], "k": 4}
        ).json()
    [line] = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert line["request_id"] == body["request_id"] and line["user_id"] == "u7"
    assert line["model_version"] == "2.1" and line["variant"] == "control"
    assert line["tracks"] == [item["track_id"] for item in body["items"]]


def test_memory_impression_log_and_bad_urls() -> None:
    from recsys.errors import ConfigurationError
    from recsys.events.impressions import Impression, MemoryImpressionLog, open_log

    log = open_log("memory://")
    assert isinstance(log, MemoryImpressionLog)
    log.emit(Impression(request_id="r", user_id="u", model_version="2.1", variant="control", tracks=["a"]))
    assert len(log.items) == 1
    with pytest.raises(ConfigurationError):
        open_log("kafka://nowhere")


def test_admin_promote_serves_the_new_version(registry: FileRegistry) -> None:
    from tests.unit.test_registry import clone_version

    new = clone_version(registry, registry, ndcg=0.2, baseline=0.5)
    admin = ADMIN
    with client_for(registry, reload_interval_s=0) as c:
        refused = c.post(f"/v1/models/{new}/promote", headers=admin)
        assert refused.status_code == 409 and refused.json()["error"] == "promotion_refused"
        promoted = c.post(f"/v1/models/{new}/promote", params={"force": True}, headers=admin).json()
        assert promoted["version"] == new and promoted["stage"] == "production" and promoted["serving"]
        assert c.get("/readyz").json()["model_version"] == new
        assert c.post("/v1/rollback", headers=admin).json()["version"] == "2.1"
        assert c.get("/readyz").json()["model_version"] == "2.1"


def test_feedback_is_accepted_one_or_many_and_validated(registry: FileRegistry) -> None:
    with client_for(registry) as c:
        one = c.post("/v1/feedback", json={"user_id": "u1", "track_id": "tr1", "type": "hate"})
        many = c.post(
            "/v1/feedback",
            json={
                "events": [
                    {"user_id": "u1", "track_id": f"tr{i}", "type": "play", "listen_ms": 1000}
                    for i in range(5)
                ]
            },
        )
        bad = c.post("/v1/feedback", json={"user_id": "u1", "track_id": "tr1", "type": "play"})
        empty = c.post("/v1/feedback", json={"events": []})
        stored = c.app.state.feedback.events  # type: ignore[attr-defined]
    assert one.status_code == 202 and one.json()["accepted"] == 1
    assert many.status_code == 202 and len(many.json()["event_ids"]) == 5
    assert bad.status_code == 422 and empty.status_code == 422
    assert [e.type.value for e in stored] == ["hate"] + ["play"] * 5
    assert str(stored[0].event_id) == one.json()["event_ids"][0]


def test_feedback_without_a_reachable_backbone_is_503_and_recommendations_still_serve(
    registry: FileRegistry,
) -> None:
    """Nothing listens on the port: the event is refused (never 202), the API keeps serving."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client_for(registry, feedback_sink=f"kafka://127.0.0.1:{port}", feedback_timeout_s=1.0) as c:
        refused = c.post("/v1/feedback", json={"user_id": "u1", "track_id": "tr1", "type": "love"})
        served = c.post("/v1/recommendations", json={"user_id": "u1", "seed_tracks": ["tr1"], "k": 3})
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"] == "event_backbone_unavailable"
    assert served.status_code == 200


def test_a_hated_track_is_never_recommended_and_a_fresh_vector_is_used(registry: FileRegistry) -> None:
    """The speed layer's update for a listener, applied in this replica."""
    from recsys.events.schemas import UserUpdate

    body = {"user_id": "u7", "seed_tracks": ["tr1", "tr2", "tr3"], "k": 5}
    with client_for(registry) as c:
        before = [i["track_id"] for i in c.post("/v1/recommendations", json=body).json()["items"]]
        model = registry.load("production")
        vector = [float(v) for v in model.row_factors[2]]
        c.app.state.overlay.apply(  # type: ignore[attr-defined]
            UserUpdate(user_id="u7", model_version="2.1", hated=before[:2], vector=vector)
        )
        after = [i["track_id"] for i in c.post("/v1/recommendations", json=body).json()["items"]]
        fresh = c.post("/v1/recommendations", json={"user_id": "u7", "k": 5}).json()
        other = c.post("/v1/recommendations", json={"user_id": "u8", "k": 5}).json()
    assert set(before[:2]).isdisjoint(after) and after[:3] == before[2:5]
    assert fresh["variant"] == "control" and set(before[:2]).isdisjoint(i["track_id"] for i in fresh["items"])
    assert other["variant"] == "fallback:popularity"


def test_interleaved_users_get_one_list_merged_from_both_versions(
    registry: FileRegistry, trained_blend: tuple[FileRegistry, TrainResult], tmp_path: Path
) -> None:
    """A user in an interleaving experiment's share: the treatment's and production's lists merged
    by team draft, each item naming its version; every other user is answered as before."""
    from recsys.experiments.interleaving import SECOND, team_draft
    from recsys.registry.manifest import MANIFEST_FILE, Manifest
    from recsys.scoring.recommender import Query, VersionRecommender

    def write(staging: Path, version: str) -> Manifest:  # the blend model: other rankings than 2.1's
        shutil.copytree(trained_blend[0].folder("latest"), staging)
        manifest = Manifest.model_validate_json((staging / MANIFEST_FILE).read_text())
        manifest.version = version
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json())
        return manifest

    treatment = registry.register(write).version
    seeds, k = ["tr1", "tr2", "tr3"], 10
    lists = {
        v: VersionRecommender(registry.load(v)).recommend([Query(tracks=seeds, k=k)])[0]
        for v in ("2.1", treatment)
    }
    log_path = tmp_path / "impressions.jsonl"
    admin = ADMIN
    experiment = {"name": "il", "treatment": treatment, "share": 0.5, "mode": "interleave"}
    with client_for(registry, reload_interval_s=0, impression_log=f"file://{log_path}") as c:
        bogus = c.put("/v1/rollout", json=experiment | {"mode": "mixed"}, headers=admin)
        plan = c.put("/v1/rollout", json=experiment, headers=admin).json()
        assert bogus.status_code == 422 and plan["experiments"][0]["mode"] == "interleave"
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        assert schemas["ExperimentMode"]["enum"] == ["ab", "interleave"]  # documented
        answers = {
            f"user{i}": c.post(
                "/v1/recommendations", json={"user_id": f"user{i}", "seed_tracks": seeds, "k": k}
            ).json()
            for i in range(80)
        }
        merged = {u: a for u, a in answers.items() if a["variant"] == "il:interleave"}
        first = next(iter(merged.values()))
        feedback = [
            {"user_id": "user", "track_id": item["track_id"], "type": "play", "listen_ms": 1000,
             "model_version": item["model_version"], "variant": first["variant"]}
            for item in first["items"]
        ]  # fmt: skip
        assert c.post("/v1/feedback", json={"events": feedback}).status_code == 202
        unknown = c.post("/v1/recommendations", json={"user_id": next(iter(merged)), "k": 5}).json()
    assert 20 < len(merged) < 60
    # nothing known of the listener: production's popular tracks, as for anyone
    assert unknown["variant"] == "fallback:popularity" and unknown["model_version"] == "2.1"
    assert all("model_version" not in item for item in unknown["items"])
    versions_seen = set()
    for user, answer in merged.items():
        RecommendationResponse.model_validate(answer, strict=True)
        assert answer["model_version"] == "2.1"
        expected = team_draft(
            lists[treatment].tracks, lists["2.1"].tracks, seed=f"{user}\x00{answer['request_id']}", k=k
        )
        assert [i["track_id"] for i in answer["items"]] == expected.tracks
        versions = ["2.1" if team == SECOND else treatment for team in expected.teams]
        assert [i["model_version"] for i in answer["items"]] == versions
        for item in answer["items"]:
            side = lists[item["model_version"]]
            assert item["score"] == pytest.approx(side.scores[side.tracks.index(item["track_id"])])
        versions_seen |= set(versions)
    assert versions_seen == {treatment, "2.1"} and lists[treatment].tracks != lists["2.1"].tracks
    others = [a for u, a in answers.items() if u not in merged]
    assert all(a["variant"] == "control" and a["model_version"] == "2.1" for a in others)
    assert all([i["track_id"] for i in a["items"]] == lists["2.1"].tracks for a in others)
    assert all("model_version" not in item for a in others for item in a["items"])
    logged = {line["request_id"]: line for line in map(json.loads, log_path.read_text().splitlines())}
    for answer in answers.values():
        line = logged[answer["request_id"]]
        assert line["tracks"] == [i["track_id"] for i in answer["items"]]
        expected_versions = (
            [i["model_version"] for i in answer["items"]] if answer in merged.values() else None
        )
        assert line["track_versions"] == expected_versions and line["variant"] == answer["variant"]
