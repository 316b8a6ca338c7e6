"""TLS to Iterable: verified by default, a custom CA bundle works, an untrusted one is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import create_topics
from consumer.dev.topics import KafkaTools
from consumer.endpoints import Endpoint
from consumer.errors import UntrustedCertificate
from consumer.iterable import ClientSettings, IterableClient
from tests.integration.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_emulator(pki: Pki) -> Iterator[EmulatorProcess]:
    args = ("--quiet", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    with EmulatorProcess(*args, ca_bundle=pki.ca) as emulator:
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


def test_a_custom_ca_bundle_is_trusted(https_emulator: EmulatorProcess, pki: Pki) -> None:
    https_emulator.reset()
    _post(https_emulator, str(pki.ca))
    assert https_emulator.user_by_email("tls@example.com") is not None


def test_an_untrusted_certificate_is_refused_with_a_clear_error(
    https_emulator: EmulatorProcess,
) -> None:
    with pytest.raises(UntrustedCertificate, match="ITERABLE_CA_BUNDLE"):
        _post(https_emulator, True)


def test_check_names_the_missing_ca_bundle(
    kafka: KafkaTools, https_emulator: EmulatorProcess, pki: Pki
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
    env["ITERABLE_CA_BUNDLE"] = str(pki.ca)
    trusted = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert trusted.returncode == 0, trusted.stdout
