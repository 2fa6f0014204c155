"""A local Apache Kafka 4.1 broker in KRaft mode, from the project's own launcher.

No Docker needed: the broker's jars come from Maven Central through ``deploy/kafka/pom.xml``
(``mvn dependency:copy-dependencies``) into a cache outside the repository, and the broker
runs as one JVM that is both broker and controller on 127.0.0.1. ``recsys kafka
start|stop|status`` and the integration tests use this class; ``docker-compose.yml`` runs
the same topology from the official image.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import BackboneUnavailable, ConfigurationError
from recsys.events.topics import ALL, Topic

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
CACHE = Path(os.environ.get("RECSYS_KAFKA_CACHE", Path.home() / ".cache" / "recsys" / "kafka"))
DEFAULT_HOME = CACHE / "local"
HEAP = "-Xmx768m"


@dataclass
class LocalKafka:
    """One single-node broker whose data, logs and pid live under ``home``.

    Parameters
    ----------
    home : Path
        Data (``data/``), logs (``logs/``) and the pid file.
    port, controller_port : int
        Client and controller listeners on 127.0.0.1.
    """

    home: Path = DEFAULT_HOME
    port: int = 9092
    controller_port: int = 9093
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    """The broker when this object started it (a broker started elsewhere is found by pid file)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def start(self, *, timeout_s: float = 90.0, topics: tuple[Topic, ...] = ALL) -> None:
        """Fetch the jars if needed, format storage on first start, start the broker, wait until
        it answers, and create the topics. Raises :class:`BackboneUnavailable` with the log's tail."""
        if self.running():
            log.info("broker already running at %s", self.bootstrap)
        else:
            libs = fetch_jars()
            config = self._write_config()
            if not (self.home / "data" / "meta.properties").exists():
                self._format(libs, config)
            self._launch(libs, config)
        self.wait_ready(timeout_s)
        from streams.admin import create_topics

        create_topics(self.bootstrap, topics)

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); ``False`` if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._reap()
        (self.home / "kafka.pid").unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self._reap()
            (self.home / "kafka.pid").unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait(timeout=10)
            self._process = None

    def pid(self) -> int | None:
        path = self.home / "kafka.pid"
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def status(self) -> dict[str, str | int | bool | None]:
        return {
            "running": self.running(),
            "pid": self.pid(),
            "bootstrap": self.bootstrap,
            "home": str(self.home),
            "answers": self.running() and _port_open(self.port),
        }

    def wait_ready(self, timeout_s: float) -> None:
        """Until the broker answers a metadata request (or fail with the log's tail)."""
        from streams.admin import broker_answers

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise BackboneUnavailable(f"the broker exited during start-up\n{self.log_tail()}")
            if _port_open(self.port) and broker_answers(self.bootstrap):
                return
            time.sleep(0.3)
        raise BackboneUnavailable(f"the broker did not answer within {timeout_s:.0f}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.home / "logs" / "stdout.log", self.log_file):
            if path.exists():
                text += (
                    f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
                )
        return text or "(no broker log)"

    def _write_config(self) -> Path:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        template = (KAFKA_DIR / "server.properties").read_text()
        values = {"PORT": self.port, "CONTROLLER_PORT": self.controller_port, "DATA_DIR": self.home / "data"}
        for name, value in values.items():
            template = template.replace("${" + name + "}", str(value))
        path = self.home / "server.properties"
        path.write_text(template)
        return path

    def _java(self, libs: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BackboneUnavailable("java is not on PATH (Kafka needs Java 17+)")
        return [
            java,
            HEAP,
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            *args,
        ]

    def _format(self, libs: Path, config: Path) -> None:
        cluster = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        done = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackboneUnavailable(f"formatting the broker's storage failed: {done.stderr or done.stdout}")

    def _launch(self, libs: Path, config: Path) -> None:
        if _port_open(self.port):
            raise BackboneUnavailable(f"port {self.port} is taken by another process")
        with (self.home / "logs" / "stdout.log").open("ab") as out:  # the child keeps its own handle
            process = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._process = process
        (self.home / "kafka.pid").write_text(str(process.pid))
        log.info("broker starting (pid %d) at %s", process.pid, self.bootstrap)


def fetch_jars() -> Path:
    """The broker's jars, fetched once with Maven into the cache and reused afterwards."""
    version = _pom_property("kafka.version")
    libs = CACHE / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BackboneUnavailable("mvn is not on PATH: it fetches the Kafka jars from Maven Central")
    libs.mkdir(parents=True, exist_ok=True)
    log.info("fetching Kafka %s jars into %s", version, libs)
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_DIR / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BackboneUnavailable(
            f"mvn could not fetch the Kafka jars:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    marker.touch()
    return libs


def _pom_property(name: str) -> str:
    text = (KAFKA_DIR / "pom.xml").read_text()
    start = text.find(f"<{name}>")
    if start < 0:
        raise ConfigurationError(f"{KAFKA_DIR / 'pom.xml'} has no <{name}>")
    return text[start + len(name) + 2 : text.index(f"</{name}>")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished == 0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
