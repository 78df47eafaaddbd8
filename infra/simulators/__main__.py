"""Command line entry point: `python -m infra.simulators NAME --port N` runs one simulator."""

from __future__ import annotations

import argparse
import sys

from infra.simulators.runner import SIMULATORS, bind, make_server

_EPILOG = """\
Tokens: KEEL_SIM_EMAIL_TOKENS, KEEL_SIM_CRM_TOKENS, KEEL_SIM_MODEL_TOKENS, KEEL_SIM_PAYMENTS_TOKENS,
KEEL_SIM_HELPDESK_TOKENS (comma separated; defaults sim-email-token, sim-crm-token, sim-model-token,
sim-payments-token, sim-helpdesk-token). Dedup mode at start: KEEL_SIM_EMAIL_DEDUP, KEEL_SIM_CRM_DEDUP,
KEEL_SIM_PAYMENTS_DEDUP (key, stripe or none; default key); the helpdesk has no key support: its only
mode is none. Control API (no auth): GET /_stats (deliveries in total, by_key and by_effect), POST
/_reset, GET|POST /_mode {"dedup": ...}, GET|POST|DELETE /_faults. The model also takes the faults loop,
unknown_tool, bad_args, malformed_args and bad_answer. The receiver (a tenant's webhook endpoint) takes
no token: it records every POST /hook[/NAME] (GET /_stats, GET /_deliveries?event_id=ID) and takes the
faults error, rate_limit, latency, accept_then_timeout and accept_then_error.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.simulators",
        description="Run one simulated external system (real HTTP on loopback, with fault injection).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=SIMULATORS, help="which simulator to run")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0, the default, picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback)")
    args = parser.parse_args(argv)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"keel-sim {args.name}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    banner = f"keel-sim {args.name} listening on {url}"
    server = make_server(args.name, on_ready=lambda: print(banner, flush=True))
    server.run(sockets=[sock])  # in the main thread, so uvicorn handles SIGINT/SIGTERM and shuts down cleanly
    return 0


if __name__ == "__main__":
    sys.exit(main())
