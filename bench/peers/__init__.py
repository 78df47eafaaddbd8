"""The same workflow on other stacks, each run from its own virtual environment by a driver."""
