"""Run the API: `python -m services.api [--host 127.0.0.1] [--port 8080]`."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from keel.logjson import configure_logging
from keel.settings import get_settings
from services.api.apikeys import ApiKeyConfigError
from services.api.app import create_app
from services.api.auth import Authenticator
from services.api.config import ApiSettings


def main() -> None:
    api = ApiSettings()
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument("--host", default=api.host, help=f"address to listen on (default {api.host})")
    parser.add_argument("--port", type=int, default=api.port, help=f"port to listen on (default {api.port})")
    args = parser.parse_args()
    configure_logging("api")  # text, or JSON lines under KEEL_LOG_FORMAT=json
    try:
        auth = Authenticator.from_env()
    except ApiKeyConfigError as exc:  # never fail-open: no API without credentials it can check
        sys.exit(f"keel api: refusing to start: {exc}")
    if auth.dev_keys:
        logging.warning("KEEL_ENV=dev, no keys configured: accepting the development keys (docs/tenancy.md)")
    app = create_app(get_settings(), api, auth=auth)
    # log_config=None: uvicorn's own lines go through the process's handler (text or JSON lines).
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
