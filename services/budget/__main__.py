"""Run the budget enforcer: `python -m services.budget [--instance N]`."""

from keel.service import run_service
from services.budget.service import TOPICS, make_processor

if __name__ == "__main__":
    run_service("budget", TOPICS, make_processor, __doc__ or "")
