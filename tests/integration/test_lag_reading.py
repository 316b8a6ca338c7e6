"""The pace's lag reader against a broker whose group coordinator is not ready yet.

A new broker answers NOT_COORDINATOR while `__consumer_offsets` is being created; with the
admin client's `list_consumer_group_offsets` that answer killed the consumer with SIGSEGV
(librdkafka #5040; CI saw it in the demo). It needs its own fresh broker: the session's one
is long past that moment. The reading runs in a child process so that a crash fails this
test, not the whole session.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from consumer.dev.kafka import LocalKafka
from consumer.dev.topics import KafkaTools

_READ_WHILE_A_MEMBER_JOINS = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from consumer.pacing import committed_reader, read_lags

    bootstrap, topic = sys.argv[1], sys.argv[2]
    group = "lag-reading"
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    member.subscribe([topic])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    offsets = committed_reader({"bootstrap.servers": bootstrap}, group)
    readings, failures = 0, 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        member.poll(0.01)
        try:
            read_lags(admin, offsets, group, [topic])
            readings += 1
        except Exception:  # NOT_COORDINATOR while the coordinator loads: a failed reading
            failures += 1
    offsets.close()
    member.close()
    print(readings, failures)
    """
)


def test_reading_the_lag_of_a_new_group_on_a_new_broker_does_not_crash() -> None:
    with LocalKafka() as broker:
        KafkaTools(broker.bootstrap_servers).create_topic("users", partitions=3)
        done = subprocess.run(
            [sys.executable, "-c", _READ_WHILE_A_MEMBER_JOINS, broker.bootstrap_servers, "users"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    readings, _ = (int(n) for n in done.stdout.split())
    assert readings > 0  # once the coordinator is ready, readings succeed
