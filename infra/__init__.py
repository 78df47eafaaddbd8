"""Local infrastructure: scripts for the broker and database, and the simulated outside world."""
