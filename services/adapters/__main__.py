"""Run the tool adapters: `python -m services.adapters [--instance N]`."""

from keel.service import run_service
from services.adapters.service import TOPICS, make_processor

if __name__ == "__main__":
    run_service("adapters", TOPICS, make_processor, __doc__ or "")
