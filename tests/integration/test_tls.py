"""TLS to Iterable: verified by default, a custom CA bundle works, an untrusted one is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.topics import KafkaTools
from consumer.endpoints import Endpoint
from consumer.errors import UntrustedCertificate
from consumer.iterable import ClientSettings, IterableClient
from tests.integration.pipeline import create_topics


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a server certificate for 127.0.0.1 signed by it."""
    home = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=iterable-consumer test CA",
        cwd=home,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=home,
    )
    (home / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=home,
    )
    return home


@pytest.fixture(scope="module")
def https_emulator(pki: Path) -> Iterator[EmulatorProcess]:
    args = ("--quiet", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    with EmulatorProcess(*args, ca_bundle=pki / "ca.pem") as emulator:
        yield emulator


def _post(emulator: EmulatorProcess, verify: str | bool) -> object:
    async def call() -> object:
        client = IterableClient(
            ClientSettings(base_url=emulator.url, api_key=emulator.api_key, verify=verify)
        )
        try:
            return await client.post(Endpoint.UPDATE, {"email": "tls@example.com"})
        finally:
            await client.aclose()

    return asyncio.run(call())


def test_the_emulator_serves_https(https_emulator: EmulatorProcess) -> None:
    assert https_emulator.url.startswith("https://127.0.0.1:")


def test_a_custom_ca_bundle_is_trusted(https_emulator: EmulatorProcess, pki: Path) -> None:
    https_emulator.reset()
    _post(https_emulator, str(pki / "ca.pem"))
    assert https_emulator.user_by_email("tls@example.com") is not None


def test_an_untrusted_certificate_is_refused_with_a_clear_error(
    https_emulator: EmulatorProcess,
) -> None:
    with pytest.raises(UntrustedCertificate, match="ITERABLE_CA_BUNDLE"):
        _post(https_emulator, True)


def test_check_names_the_missing_ca_bundle(
    kafka: KafkaTools, https_emulator: EmulatorProcess, pki: Path
) -> None:
    topics = create_topics(kafka).names
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ITERABLE_API_KEY": https_emulator.api_key,
        "ITERABLE_BASE_URL": https_emulator.url,
        "TOPIC_USER_CHANGED": topics["user.changed"],
        "TOPIC_DEVICE_REGISTERED": topics["device.registered"],
        "TOPIC_PUSH_REVOKED": topics["push.permission.revoked"],
    }
    command = [sys.executable, "-m", "consumer", "check"]
    refused = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1
    failures = [line for line in refused.stdout.splitlines() if line.startswith("FAIL")]
    assert failures == [
        f"FAIL iterable: {https_emulator.url}: users/getByEmail:"
        " TLS certificate verification failed; set ITERABLE_CA_BUNDLE to the CA that signs it"
    ]
    env["ITERABLE_CA_BUNDLE"] = str(pki / "ca.pem")
    trusted = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert trusted.returncode == 0, trusted.stdout
