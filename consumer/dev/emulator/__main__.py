"""`python -m consumer.dev.emulator` is the `iterable-emulator` script."""

from __future__ import annotations

from consumer.dev.emulator.server import main

raise SystemExit(main())
