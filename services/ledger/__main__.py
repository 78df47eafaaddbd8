"""Run the commit ledger: `python -m services.ledger [--instance N]`."""

from keel.service import run_service
from services.ledger.service import TOPICS, make_processor

if __name__ == "__main__":
    run_service("ledger", TOPICS, make_processor, __doc__ or "")
