"""Run the scheduler: `python -m services.scheduler [--instance N]`."""

from keel.service import run_service
from services.scheduler.service import TOPICS, make_processor

if __name__ == "__main__":
    run_service("scheduler", TOPICS, make_processor, __doc__ or "")
