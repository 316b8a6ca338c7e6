"""Write helm/iterable-consumer/README.md from the `# --` comments in values.yaml.

.venv/bin/python scripts/chart_readme.py          # rewrite
.venv/bin/python scripts/chart_readme.py --check  # exit 1 when out of date (CI)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "iterable-consumer"

HEADER = """# iterable-consumer chart

Runs iterable-consumer: Kafka events in, idempotent Iterable calls out. Hardened by default
(non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, no
service-account token), probes on `/livez`, `/readyz` and a startup probe, a
PodDisruptionBudget, optional PodMonitor/ServiceMonitor and PrometheusRule, the Grafana
dashboard as a sidecar ConfigMap, and autoscaling by HPA or KEDA (lag on each topic).

```sh
helm install sync ./helm/iterable-consumer \\
  --set kafka.bootstrapServers=kafka:9092 \\
  --set iterable.apiKey.existingSecret=iterable-api-key
helm test sync    # calls /readyz
```

Alerts live in `files/rules/iterable-consumer.rules.yaml` (runbook: `docs/runbook.md`),
the dashboard in `files/dashboards/iterable-consumer.json`; CI tests both. Generated from
values.yaml by `scripts/chart_readme.py`.

## Values

| key | default | description |
| --- | --- | --- |
"""


def rows() -> list[str]:
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    out: list[str] = []
    stack: list[tuple[int, str]] = []
    comment = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = stripped.removeprefix("# --").strip()
            continue
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if comment:
            value = values
            for part in path.split("."):
                value = value[part]
            out.append(f"| `{path}` | `{json.dumps(value)}` | {comment} |")
            comment = ""
    return out


def main() -> int:
    text = HEADER + "\n".join(rows()) + "\n"
    target = CHART / "README.md"
    if "--check" in sys.argv:
        if target.read_text() != text:
            print("helm/iterable-consumer/README.md is out of date: run scripts/chart_readme.py")
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
