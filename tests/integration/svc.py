"""A service run exactly as `python -m services.NAME` runs one (keel.service), on per-test topics:
python tests/integration/svc.py NAME TOPIC OUT --instance N
"""

from __future__ import annotations

import sys
from pathlib import Path

from keel.service import run_service

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from echo import Echo

    name, topic, out = sys.argv[1:4]
    run_service(name, [topic], lambda _settings, _serde: Echo(out), "echo as a service", sys.argv[4:])
