"""A real Apache Kafka (KRaft) on loopback, from jars Maven resolves: no Docker needed.

    python -m consumer.dev.kafka fetch              # resolve the jars into the cache
    python -m consumer.dev.kafka start [--nodes 3]  # run until Ctrl-C, print the bootstrap list

Each node is a combined broker and controller. The JVMs die with the process that
started them (PR_SET_PDEATHSIG), so a killed test run leaves no broker behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

KAFKA_VERSION = "4.4.0"
# slf4j 2 + log4j2 so the broker logs through one backend we configure below.
_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.iterable-consumer</groupId><artifactId>kafka-runtime</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>2.25.5</version></dependency>
  </dependencies>
</project>
"""
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""
_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def cache_dir() -> Path:
    """Where the jars live: outside the repository, shared by every checkout."""
    explicit = os.environ.get("ITERABLE_CONSUMER_CACHE")
    base = (
        Path(explicit)
        if explicit
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iterable-consumer"
    )
    return base / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Resolve Kafka and its dependencies through Maven once; return the jar folder."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("mvn is not on PATH; install Maven to fetch the Kafka jars")
    with tempfile.TemporaryDirectory() as build:
        (Path(build) / "pom.xml").write_text(_POM)
        staging = Path(build) / "libs"
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(Path(build) / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"mvn could not resolve Kafka {KAFKA_VERSION}:\n{result.stdout}")
        shutil.rmtree(libs, ignore_errors=True)
        libs.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), libs)
    marker.touch()
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Node:
    """One combined broker+controller process."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class SaslSsl:
    """A SASL_SSL (SCRAM-SHA-512) listener beside PLAINTEXT: a PKCS12 keystore and users."""

    keystore: Path
    keystore_password: str = field(repr=False)
    users: Mapping[str, str] = field(repr=False)


class LocalKafka:
    """A KRaft cluster of `nodes` JVM processes on free loopback ports."""

    def __init__(
        self,
        nodes: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        sasl_ssl: SaslSsl | None = None,
    ) -> None:
        self._config = dict(config or {})
        self._sasl_ssl = sasl_ssl
        self._sasl_ports = {i: free_port() for i in range(1, nodes + 1)} if sasl_ssl else {}
        self._owned_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="local-kafka-"))
        self.nodes = [
            Node(i, free_port(), free_port(), self.workdir / f"node-{i}")
            for i in range(1, nodes + 1)
        ]
        self._killed: set[int] = set()
        self._cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self._sasl_ports.values())

    def start(self, timeout: float = 90.0) -> LocalKafka:
        libs = ensure_jars()
        for node in self.nodes:
            self._format(node, libs)
        for node in self.nodes:
            self.start_node(node.node_id)
        self.wait_ready(timeout)
        return self

    def start_node(self, node_id: int) -> None:
        """Start (or restart after a kill) one node on its original ports and storage."""
        node = self._node(node_id)
        if node.alive:
            return
        self._killed.discard(node_id)
        log = (node.directory / "server.log").open("ab")
        node.process = subprocess.Popen(
            [
                "java",
                *_JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                "-cp",
                f"{ensure_jars()}/*",
                "kafka.Kafka",
                str(node.directory / "server.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl, which is fork-safe
        )
        log.close()

    def kill(self, node_id: int) -> None:
        """`kill -9` one node, as a crash would."""
        node = self._node(node_id)
        self._killed.add(node_id)
        if node.process is not None and node.alive:
            node.process.kill()
            node.process.wait()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until every live node answers a metadata request."""
        expected = sum(node.alive for node in self.nodes)
        # log_level 0: refused connections while the JVM boots are expected, not news.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_exited()
            with contextlib.suppress(KafkaException):
                metadata = admin.list_topics(timeout=2)
                if len(metadata.brokers) >= expected and metadata.controller_id >= 0:
                    return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Kafka did not answer within {timeout:.0f} s; see {self.workdir}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every node, SIGKILL what is left after `timeout`, remove the data."""
        self._killed.update(node.node_id for node in self.nodes)
        for node in self.nodes:
            if node.process is not None and node.alive:
                node.process.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def _raise_if_exited(self) -> None:
        # A node we killed on purpose is not an error; one that died by itself is.
        for node in self.nodes:
            if node.process is not None and not node.alive and node.node_id not in self._killed:
                tail = (node.directory / "server.log").read_text(errors="replace")[-2000:]
                raise BrokerError(f"Kafka node {node.node_id} exited:\n{tail}")

    def _format(self, node: Node, libs: Path) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.yaml").write_text(_LOG4J2)
        properties = node.directory / "server.properties"
        properties.write_text(_properties(self._server_config(node)))
        result = subprocess.run(
            [
                "java",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                # One argument: a base64url id may start with "-", which argparse would
                # take for an option (one run in 64 failed to format).
                f"--cluster-id={self._cluster_id}",
                "-c",
                str(properties),
                "--ignore-formatted",
                *self._scram_users(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def _scram_users(self) -> list[str]:
        if self._sasl_ssl is None:
            return []
        return [
            arg
            for name, password in self._sasl_ssl.users.items()
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

    def _sasl_ssl_config(self, node: Node) -> dict[str, str]:
        tls = self._sasl_ssl
        if tls is None:
            return {}
        plain = f"PLAINTEXT://127.0.0.1:{node.port}"
        secure = f"SASL_SSL://127.0.0.1:{self._sasl_ports[node.node_id]}"
        return {
            "listeners": f"{plain},CONTROLLER://127.0.0.1:{node.controller_port},{secure}",
            "advertised.listeners": f"{plain},{secure}",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
            ),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": tls.keystore_password,
            "ssl.key.password": tls.keystore_password,
        }

    def _server_config(self, node: Node) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = str(min(3, len(self.nodes)))
        min_isr = "2" if len(self.nodes) >= 3 else "1"
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            # Notice a killed node in ~3 s instead of 9 s, so failover tests stay quick.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # The next-generation group protocol keeps consumer timeouts here (KIP-848): a
            # killed consumer leaves its group in ~6 s, not 45 s, so such tests stay quick.
            "group.consumer.min.session.timeout.ms": "3000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "500",
            **self._sasl_ssl_config(node),
            **self._config,
        }


def _properties(config: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in config.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.dev.kafka", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="resolve the Kafka jars through Maven into the cache")
    start = commands.add_parser("start", help="run a local cluster until interrupted")
    start.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(ensure_jars())
        return 0
    stop = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    with LocalKafka(args.nodes) as kafka:
        print(
            f"Kafka {KAFKA_VERSION} ready in {time.monotonic() - began:.1f} s:"
            f" KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}",
            flush=True,
        )
        while not stop:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
