"""The example events under `schemas/examples/`, as Kafka key, value and headers."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "schemas" / "examples"


@dataclass(frozen=True, slots=True)
class Example:
    """One example message; `field` is what an invalid example's error must name."""

    path: Path
    event_type: str
    description: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    field: str | None

    @property
    def name(self) -> str:
        return f"{self.event_type}/{self.path.stem}"

    def structured(self) -> Any:
        """The event in structured form (binary headers lifted into the envelope)."""
        value = json.loads(self.value)
        if not self.headers:
            return value
        attributes = {
            name.removeprefix("ce_"): raw.decode()
            for name, raw in self.headers
            if name.startswith("ce_")
        }
        return {**attributes, "data": value}


def load(kind: str, root: Path = EXAMPLES_DIR) -> list[Example]:
    """Every example of `kind` ("valid" or "invalid"), in a stable order."""
    return [_read(path) for path in sorted((root / kind).glob("*/*.json"))]


def _read(path: Path) -> Example:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if "value_base64" in doc:
        value = base64.b64decode(doc["value_base64"])
    elif "value_text" in doc:
        value = doc["value_text"].encode()
    else:
        value = json.dumps(doc["value"], ensure_ascii=False).encode()
    headers = tuple((name, str(text).encode()) for name, text in doc.get("headers", {}).items())
    return Example(
        path=path,
        event_type=path.parent.name,
        description=doc["description"],
        key=str(doc["key"]).encode(),
        value=value,
        headers=headers,
        field=doc.get("field"),
    )
