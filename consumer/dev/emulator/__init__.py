"""The Iterable emulator: Iterable's users endpoints with documented semantics, plus faults."""
