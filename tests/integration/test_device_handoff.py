"""One push token moving A → B → A, end to end, in both token ownership modes: late
revocations and registrations on both device topics, a restart in the middle (the look-back
restores the device memory), and the final devices checked against the oracle.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    Produced,
    StreamBuilder,
    Topics,
    all_committed,
    expected_state,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools
from consumer.translate import DeviceOwnership

TOKEN = "handoff-token"
A = {"userId": "u-a", "email": "a@example.com"}
B = {"userId": "u-b", "email": "b@example.com"}
HANDOFFS = "iterable_consumer_device_handoffs_total"


def _story() -> tuple[list[Produced], list[list[Produced]]]:
    """The token's events in event-time order, and the phases they are consumed in."""
    builder = StreamBuilder()

    def register(user: dict[str, str]) -> Produced:
        fields = {"n": builder.seq + 1}  # which registration a profile's device came from
        device = {
            "token": TOKEN,
            "platform": "APNS",
            "applicationName": "App",
            "dataFields": fields,
        }
        return builder.make("device.registered", TOKEN, {**user, "device": device})

    def revoke(**scope: str) -> Produced:
        return builder.make("push.permission.revoked", TOKEN, {"token": TOKEN, **scope})

    a1, everywhere, b3, revoke_a, b5, a6 = (
        register(A),
        revoke(),
        register(B),
        revoke(userId="u-a"),
        register(B),
        register(A),
    )
    phases = [
        [a1, b3],  # A, then B
        [everywhere],  # a global revocation older than B's registration
        [a6],  # back to A
        # -- a restart: what follows is judged by the memory the look-back restored --
        [revoke_a],  # A's revocation, older than A's last registration
        [b5],  # B's registration, older than A's last one
    ]
    return [a1, everywhere, b3, revoke_a, b5, a6], phases


def _enabled(emulator: EmulatorProcess, user_id: str) -> bool:
    devices = ((emulator.user_by_id(user_id) or {}).get("dataFields") or {}).get("devices", [])
    return any(d["token"] == TOKEN and d["endpointEnabled"] for d in devices)


def _metric(process: ConsumerProcess, name: str, labels: str) -> float:
    wanted = f"{name}{{{labels}}} "
    return sum(
        float(line.split()[-1])
        for line in process.metrics().splitlines()
        if line.startswith(wanted)
    )


@pytest.mark.parametrize("ownership", ["shared", "exclusive"])
def test_a_token_moving_a_to_b_to_a_ends_as_the_oracle_says_in_both_modes(
    kafka: KafkaTools,
    group_id: str,
    topics: Topics,
    emulator: EmulatorProcess,
    start: Callable[..., ConsumerProcess],
    ownership: DeviceOwnership,
) -> None:
    events, phases = _story()
    # Shared is the default: only exclusive needs the setting.
    env = {"ITERABLE_DEVICE_TOKEN_OWNERSHIP": "exclusive"} if ownership == "exclusive" else {}

    def consume(phase: list[Produced]) -> None:
        produce(kafka, topics, phase)
        wait_for(lambda: all_committed(kafka, group_id, topics), 60, "the phase committed")

    first = start(emulator, **env)
    for phase in phases[:3]:
        consume(phase)
    handoffs = (
        _metric(first, HANDOFFS, 'previous_owner="unknown"'),
        _metric(first, HANDOFFS, 'previous_owner="known"'),
    )
    assert first.terminate() == 0
    start(emulator, **env)
    for phase in phases[3:]:
        consume(phase)

    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid", ownership)
    final = {user: _enabled(emulator, user) for user in ("u-a", "u-b")}
    if ownership == "exclusive":
        assert final == {"u-a": True, "u-b": False}
        assert handoffs == (1, 2)  # A's first registration; then A → B and B → A
    else:
        assert final == {"u-a": True, "u-b": True}
        assert handoffs == (0, 0)
    if ownership == "exclusive":  # each registration right after a disableDevice of the token
        calls = [(c["path"].removeprefix("/api/users/"), c["body"]) for c in emulator.calls()]
        registrations = [i for i, (path, _) in enumerate(calls) if path == "registerDeviceToken"]
        assert len(registrations) == 3
        assert all(i and calls[i - 1] == ("disableDevice", {"token": TOKEN}) for i in registrations)
