"""`python -m keel.worker MODULE` is `keel-worker MODULE`."""

from keel.worker.cli import main

raise SystemExit(main())
