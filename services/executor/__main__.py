"""Run the step executor: `python -m services.executor [--instance N]`."""

from keel.service import run_service
from services.executor.service import TOPICS, make_processor

if __name__ == "__main__":
    run_service("executor", TOPICS, make_processor, __doc__ or "")
