"""Load generation for msgctl: a Locust user that speaks the client protocol, YAML profiles.

Pure modules (importable without Locust or gevent, used by the CLI and the unit tests):
`profile` (load and validate profiles), `shape` (stage math), `model` (body timestamps,
conversation plan, order tracker), `config` (settings handed to the Locust processes),
`report` (summary and table), `run` (the Locust processes). Locust-side: `user` (the
User and the LoadTestShape) and `locustfile` (what `locust -f` loads). `msgctl load run`
drives it all.
"""

from __future__ import annotations

from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
