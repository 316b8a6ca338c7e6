"""`python -m consumer` does what the `iterable-consumer` script does."""

from __future__ import annotations

from consumer.cli import main

raise SystemExit(main())
