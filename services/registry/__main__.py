"""Run the schema registry: `python -m services.registry [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from keel.settings import get_settings
from services.registry.app import create_app
from services.registry.store import KafkaStore


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.registry", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s registry %(levelname)s %(message)s")
    store = KafkaStore(get_settings())
    logging.info("replayed %d schemas in %d subjects", len(store.state.schemas), len(store.state.subjects))
    uvicorn.run(create_app(store), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
