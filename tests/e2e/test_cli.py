"""The ``recsys`` command end to end, each call in its own process as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.registry.artifacts import SCORING
from recsys.registry.manifest import MANIFEST_FILE
from recsys.registry.plan import Experiment
from recsys.registry.store import FileRegistry

pytestmark = pytest.mark.slow
FAST = ["--factors", "16", "--iterations", "4"]


def recsys(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RECSYS_REGISTRY", None)
    done = subprocess.run(
        [sys.executable, "-m", "recsys", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"recsys {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    recsys(
        "data",
        "synth",
        "--playlists",
        "400",
        "--tracks",
        "3000",
        "--seed",
        "1",
        "--output",
        "data.csv",
        cwd=cwd,
    )
    return cwd


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = recsys("--help", cwd=tmp_path).stdout
    for command in ("train", "evaluate", "models", "recommend", "data", "demo", "report", "simulate", "keys"):
        assert command in out
    assert "promote" in recsys("models", "--help", cwd=tmp_path).stdout
    assert "revoke" in recsys("keys", "--help", cwd=tmp_path).stdout


def test_a_usage_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    for args in (("report", "v2.2", "extra"), ("rollout", "set", "--treatment", "2.2", "--share", "2")):
        done = recsys(*args, cwd=tmp_path, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "Error:" in done.stderr


def test_train_list_show_promote_diff_rollback(workdir: Path) -> None:
    first = recsys("train", "--data", "data.csv", *FAST, cwd=workdir)
    assert (
        "registered model 2.1" in first.stdout and "item_knn" in first.stdout and "timings:" in first.stdout
    )
    assert (workdir / "models" / "versions" / "2.1" / SCORING).exists()
    recsys("models", "promote", "2.1", "--force", cwd=workdir)
    second = recsys("train", "--data", "data.csv", *FAST, "--regularization", "0.1", "--json", cwd=workdir)
    manifest = json.loads(second.stdout)
    assert manifest["version"] == "2.2" and manifest["parent_version"] == "2.1"
    listing = recsys("models", "list", cwd=workdir).stdout
    assert "2.1" in listing and "production" in listing and "2.2" in listing and "candidate" in listing
    shown = json.loads(recsys("models", "show", "2.2", cwd=workdir).stdout)
    assert shown["lineage"]["format"] == "csv" and "sha256" not in shown["files"]
    assert "regularization" in recsys("models", "diff", "2.1", "2.2", cwd=workdir).stdout
    recsys("models", "promote", "2.2", "--force", cwd=workdir)
    assert "2.1 is production" in recsys("models", "rollback", cwd=workdir).stdout
    assert "2.2" in recsys("models", "list", cwd=workdir).stdout


def test_registry_from_environment(workdir: Path, tmp_path: Path) -> None:
    env_registry = tmp_path / "elsewhere"
    env = {**os.environ, "RECSYS_REGISTRY": str(env_registry), "COLUMNS": "200"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys",
            "train",
            "--data",
            str(workdir / "data.csv"),
            *FAST,
            "--no-evaluate",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert (env_registry / "versions" / "2.1" / MANIFEST_FILE).exists()


def test_batch_recommend(workdir: Path) -> None:
    recsys("train", "--data", "data.csv", *FAST, "--registry", "rec-models", cwd=workdir)
    seeds = workdir / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"playlist_id": "new", "tracks": ["tr1", "tr2", "tr3"]})
        + "\n"
        + json.dumps({"playlist_id": "pl0", "tracks": []})
        + "\n"
    )
    recsys(
        "recommend",
        "--model",
        "latest",
        "--input",
        "seeds.jsonl",
        "--output",
        "out.jsonl",
        "--k",
        "25",
        "--registry",
        "rec-models",
        cwd=workdir,
    )
    lines = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert [line["playlist_id"] for line in lines] == ["new", "pl0"]
    assert all(len(line["tracks"]) == 25 and line["model_version"] == "2.1" for line in lines)
    assert {"tr1", "tr2", "tr3"}.isdisjoint(lines[0]["tracks"])
    assert lines[0]["scores"] == sorted(lines[0]["scores"], reverse=True)


def test_evaluate_reports_model_and_baselines(workdir: Path) -> None:
    out = recsys("evaluate", "--data", "data.csv", "--output", "report.json", cwd=workdir).stdout
    assert "most_popular" in out
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["methods"]) == {"most_popular", "item_knn", "als_knn"}


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_bytes(b"playlist_id,track_id\np1,a\np1,b,c\n")
    done = recsys("train", "--data", "bad.csv", cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "bad.csv:3: expected 2 fields, found 3" in done.stderr and "Traceback" not in done.stderr


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    done = recsys("models", "show", "production", cwd=tmp_path, check=False)
    assert done.returncode == 1 and "no model 'production'" in done.stderr and "Traceback" not in done.stderr


def test_mpd_synth_and_train(tmp_path: Path) -> None:
    recsys(
        "data",
        "synth",
        "--playlists",
        "300",
        "--tracks",
        "2000",
        "--format",
        "mpd",
        "--output",
        "mpd",
        cwd=tmp_path,
    )
    assert "300 playlists" in recsys("data", "inspect", "mpd", cwd=tmp_path).stdout
    recsys("train", "--data", "mpd", *FAST, "--no-evaluate", cwd=tmp_path)


def test_demo(tmp_path: Path) -> None:
    out = recsys("demo", "--workdir", "d", "--scale", "0.001", cwd=tmp_path).stdout
    assert "demo done" in out and "registered model 2.1" in out
    assert (tmp_path / "d" / "recommendations.jsonl").exists()
    again = recsys("demo", "--workdir", "d", "--scale", "0.001", cwd=tmp_path).stdout
    assert "starting clean" in again and "reusing" in again and "registered model 2.1" in again
    more = recsys("demo", "--workdir", "d", "--scale", "0.001", "--continue", cwd=tmp_path).stdout
    assert "continuing" in more and "registered model 2.2" in more


def test_rollout_commands(workdir: Path) -> None:
    recsys("train", "--data", "data.csv", *FAST, "--no-evaluate", "--registry", "ab-models", cwd=workdir)
    recsys("train", "--data", "data.csv", *FAST, "--no-evaluate", "--registry", "ab-models", cwd=workdir)
    out = recsys(
        "rollout", "set", "--treatment", "2.2", "--share", "0.01", "--registry", "ab-models", cwd=workdir
    ).stdout
    assert "v2.2" in out and "1.0%" in out
    out = recsys(
        "rollout", "set", "--treatment", "2.2", "--share", "0.05", "--registry", "ab-models", cwd=workdir
    ).stdout
    assert "5.0%" in out and "revision 2" in out
    assert "5.0%" in recsys("rollout", "status", "--registry", "ab-models", cwd=workdir).stdout
    bad = recsys(
        "rollout",
        "set",
        "--treatment",
        "9.9",
        "--share",
        "0.1",
        "--registry",
        "ab-models",
        cwd=workdir,
        check=False,
    )
    assert bad.returncode == 1 and "no model '9.9'" in bad.stderr
    assert (
        "everyone gets production"
        in recsys("rollout", "stop", "v2.2", "--registry", "ab-models", cwd=workdir).stdout
    )


def test_rollout_advance_acts_on_the_arms_numbers_and_records_why(workdir: Path) -> None:
    for _ in range(2):
        recsys("train", "--data", "data.csv", *FAST, "--no-evaluate", "--registry", "ctl-models", cwd=workdir)
    recsys("models", "promote", "2.1", "--force", "--registry", "ctl-models", cwd=workdir)
    recsys("rollout", "set", "--treatment", "2.2", "--share", "0.01", "--registry", "ctl-models", cwd=workdir)

    def arm(users: int, listen_s: float, hates: int) -> dict[str, float]:
        # every user listened listen_s +- 60 s in 4 plays, and `hates` of them hated one track:
        # the sums a stream worker keeps
        per_user = [listen_s - 60, listen_s + 60] * (users // 2)
        return {
            "users": users,
            "plays": 4 * users,
            "hates": hates,
            "listen_ms": sum(per_user) * 1000,
            "listen_s_sq": sum(x * x for x in per_user),
            "plays_sq": 16 * users,
            "hates_sq": hates,
            "hates_plays": 4 * hates,
            "skips_sq": 0,
            "skips_plays": 0,
        }

    same = {"2.2|v2.2:treatment": arm(400, 600, 4), "2.1|v2.2:control": arm(400, 600, 4)}
    same |= {
        "2.2|v2.2:treatment@platform=web": arm(200, 500, 2),
        "2.1|v2.2:control@platform=web": arm(200, 600, 2),
    }
    (workdir / "same.json").write_text(json.dumps(same))
    out = recsys(
        "rollout",
        "advance",
        "v2.2",
        "--stats",
        "same.json",
        "--min-step-s",
        "0",
        "--registry",
        "ctl-models",
        cwd=workdir,
    ).stdout
    assert "advance (share 2%)" in out and "not worse" in out
    assert "listening down on platform=web: -100.0s per user" in out  # visible, not a verdict
    assert "2.0%" in recsys("rollout", "status", "--registry", "ctl-models", cwd=workdir).stdout

    hated = {**same, "2.2|v2.2:treatment": arm(400, 600, 200)}
    (workdir / "hated.json").write_text(json.dumps(hated))
    out = recsys(
        "rollout",
        "advance",
        "v2.2",
        "--stats",
        "hated.json",
        "--min-step-s",
        "0",
        "--registry",
        "ctl-models",
        cwd=workdir,
    ).stdout
    assert "rollback" in out and "hate rate up" in out
    assert (
        "everyone gets production"
        in recsys("rollout", "status", "--registry", "ctl-models", cwd=workdir).stdout
    )
    decisions = FileRegistry(workdir / "ctl-models").decisions("v2.2")
    assert [d.action for d in decisions] == ["advance", "rollback"]
    assert decisions[1].arms["treatment"]["hate_rate"] == pytest.approx(200 / 1600)
    assert decisions[0].listening is not None and decisions[0].listening.estimate == pytest.approx(0.0)
    assert decisions[0].slices["platform=web"]["estimate"] == pytest.approx(-100.0)
    report = recsys("report", "v2.2", "--registry", "ctl-models", "--out", "ctl.html", cwd=workdir).stdout
    assert "rolled back, 2 decisions" in report and (workdir / "ctl.html").stat().st_size > 10_000


def test_rollout_auto_ramps_to_100_percent_and_promotes(workdir: Path) -> None:
    for _ in range(2):
        recsys(
            "train", "--data", "data.csv", *FAST, "--no-evaluate", "--registry", "auto-models", cwd=workdir
        )
    recsys("models", "promote", "2.1", "--force", "--registry", "auto-models", cwd=workdir)
    recsys(
        "rollout", "set", "--treatment", "2.2", "--share", "0.01", "--registry", "auto-models", cwd=workdir
    )
    arm = {
        "users": 400,
        "plays": 1600,
        "hates": 4,
        "listen_ms": 400 * 600_000,
        "listen_s_sq": 400 * (600**2 + 60**2),
    }
    (workdir / "even.json").write_text(json.dumps({"2.2|v2.2:treatment": arm, "2.1|v2.2:control": arm}))
    listed = recsys("experiments", "list", "--registry", "auto-models", cwd=workdir).stdout
    assert "v2.2" in listed and "1.0%" in listed and "running" in listed
    out = recsys(
        "rollout", "auto", "v2.2", "--stats", "even.json", "--every-s", "0.1", "--min-step-s", "0",
        "--registry", "auto-models", cwd=workdir,
    ).stdout  # fmt: skip
    shares = [line for line in out.splitlines() if "->" in line]
    assert [s.strip() for s in shares] == ["1% -> 2%", "2% -> 5%", "5% -> 10%", "10% -> 50%", "50% -> 100%"]
    assert "complete" in out
    models = recsys("models", "list", "--registry", "auto-models", cwd=workdir).stdout
    assert "2.2" in models and "production" in models
    state = json.loads((workdir / "auto-models" / "state.json").read_text())
    assert state["production_history"][-1] == "2.2" and state["rollout"]["experiments"] == []

    assert (
        "no experiments running"
        in recsys("experiments", "list", "--registry", "auto-models", cwd=workdir).stdout
    )

    # as a job: one pass over every experiment in the plan
    for experiment in ("a", "b"):
        recsys("rollout", "set", "--treatment", "2.1", "--share", "0.05", "--name", experiment,
               "--registry", "auto-models", cwd=workdir)  # fmt: skip
    both = {
        f"{version}|{e}:{side}": arm
        for e in "ab"
        for version, side in (("2.1", "treatment"), ("2.2", "control"))
    }
    (workdir / "both.json").write_text(json.dumps(both))
    out = recsys("rollout", "auto", "--once", "--stats", "both.json", "--min-step-s", "0",
                 "--registry", "auto-models", cwd=workdir).stdout  # fmt: skip
    assert out.count("5% -> 10%") == 2
    plan = json.loads((workdir / "auto-models" / "state.json").read_text())["rollout"]
    assert [(e["name"], e["share"]) for e in plan["experiments"]] == [("a", 0.1), ("b", 0.1)]

    # ten experiments at once: listed, and one pass of the job decides for each
    registry = FileRegistry(workdir / "auto-models")
    names = [f"e{i}" for i in range(8)]
    for name in names:
        registry.set_experiment(Experiment(name=name, treatment="2.1", share=0.01))
    ten = {
        f"{v}|{e}:{side}": arm
        for e in ["a", "b", *names]
        for v, side in (("2.1", "treatment"), ("2.2", "control"))
    }
    (workdir / "ten.json").write_text(json.dumps(ten))
    listed = recsys("experiments", "list", "--registry", "auto-models", cwd=workdir).stdout
    assert all(f"│ {name} " in listed for name in ["a", "b", *names])
    out = recsys("rollout", "auto", "--once", "--stats", "ten.json", "--min-step-s", "0",
                 "--registry", "auto-models", cwd=workdir).stdout  # fmt: skip
    assert out.count("1% -> 2%") == 8 and out.count("10% -> 50%") == 2
