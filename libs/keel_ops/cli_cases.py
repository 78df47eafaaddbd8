"""`keel quarantine`, `keel approvals`, `keel cancel|pause|resume`: cases and run control through the
HTTP API (docs/quarantine.md). Quarantine decisions need an operator's key (KEEL_API_KEY); approvals,
cancel, pause and resume the run's tenant's key or an operator's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from keel.settings import Settings
from keel_ops.cli_runs import api

QUARANTINE_HELP = "quarantine cases: list, show CASE, decide CASE --retry|--edit FILE|--skip-with FILE|--fail"
APPROVALS_HELP = "approvals waiting for a human: list, approve CASE --reason, deny CASE --reason"
CONTROL_HELP = {
    "cancel": "cancel a run: no new step starts, a call in flight settles, then the run ends canceled",
    "pause": "pause a run: no new attempt starts until it is resumed",
    "resume": "resume a paused run",
}
FIELDS = ("tenant_id", "run_id", "workflow", "step", "call", "attempt", "reason", "failure_class", "error",
          "idempotency_key", "input_ref", "output_ref", "opened_by", "opened_at", "deadline")  # fmt: skip
PENDING = 3  # exit status: the decision was sent, its outcome is not known yet


def _reason(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why (required: it is kept in the run's audit trail)")


def quarantine_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="cases, oldest first (open ones unless --status)")
    ls.add_argument("--status", choices=["open", "decided", "all"], default="open")
    ls.add_argument("--kind", choices=["quarantine", "approval"])
    ls.add_argument("--run", help="only this run's cases")
    ls.add_argument("--tenant", help="operators: only this tenant's cases")
    show = sub.add_parser("show", help="a case: reason, evidence, attempts, decision")
    show.add_argument("case", help="the case id (RUN:STEP[:CALL]:ATTEMPT)")
    decide = sub.add_parser(
        "decide",
        help="decide a quarantine case (operator key)",
        description="Decide a quarantine case: one of --retry, --edit FILE, --skip-with FILE, --fail.",
    )
    decide.add_argument("case", help="the case id")
    how = decide.add_mutually_exclusive_group(required=True)
    how.add_argument("--retry", action="store_true", help="the same input under the same key")
    how.add_argument("--edit", metavar="FILE", help="a new input (JSON object) for the tool: a new key")
    how.add_argument("--skip-with", metavar="FILE", help="commit the step with this output (JSON)")
    how.add_argument("--fail", action="store_true", help="end the run failed")
    _reason(decide)
    decide.add_argument(
        "--new-effect",
        action="store_true",
        help="with --edit: acknowledge that the edited input, under a new key, may make a second effect "
        "(required when the case's effect may already exist)",
    )


def approvals_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="approvals waiting, oldest first, with what each would send")
    ls.add_argument("--tenant", help="operators: only this tenant's approvals")
    for name, what in (("approve", "send exactly the payload the case shows"), ("deny", "do not send it")):
        one = sub.add_parser(name, help=f"{name} an approval: {what}")
        one.add_argument("case", help="the approval's case id (RUN:STEP:approval-N)")
        _reason(one)


def control_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", help="the run (your own run id or Keel's)")
    _reason(p)


def _path(case: str) -> str:
    return quote(case, safe=":")


def _json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} file {path} is not valid JSON: {exc}") from None


def print_cases(cases: list[dict[str, Any]]) -> None:
    if not cases:
        print("no cases")
        return
    for c in cases:
        where = ":".join(p for p in (c.get("step"), c.get("call")) if p) or "(run)"
        what = c.get("decision") and f"{c['decision']} by {c['decided_by']}" or c.get("failure_class") or ""
        print(
            f"{c['case_id']:<60} {c['kind']:<10} {c['status']:<8} {c['tenant_id']:<10} {where:<18} "
            f"{what:<20} {(c.get('reason') or '')[:60]}".rstrip()
        )


def format_case(c: dict[str, Any]) -> str:
    lines = [f"case {c['case_id']} ({c['kind']}, {c['status']})"]
    for name in FIELDS:
        if c.get(name) is not None:
            lines.append(f"  {name:<16} {c[name]}")
    for name in ("input", "output"):
        if c.get(name) is not None:
            lines.append(f"  {name:<16} {json.dumps(c[name], sort_keys=True)}")
    if c.get("attempts"):
        lines.append("  attempts:")
        for a in c["attempts"]:
            why = f"  {a['failure_class']}: {a.get('error') or ''}" if a.get("failure_class") else ""
            lines.append(f"    #{a['attempt']} {a['status']:<10} {a.get('started_at') or ''}{why}".rstrip())
    if c["status"] == "decided":
        lines.append(f"  decided          {c['decision']} by {c['decided_by']} at {c['decided_at']}")
        lines.append(f"  because          {c.get('decision_reason') or ''}")
        if c.get("decision_key"):
            lines.append(f"  goes on with key {c['decision_key']}")
    return "\n".join(lines)


def _outcome(reply: Any) -> int:
    if isinstance(reply, dict) and reply.get("status") == "pending":
        case = reply["case_id"]
        print(f"sent (command {reply['command_id']}); not decided yet: `keel quarantine show {case}`")
        return PENDING
    print(format_case(reply))
    return 0


def run_quarantine(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        params = {"status": args.status, "kind": args.kind, "run_id": args.run, "tenant": args.tenant}
        found = api(settings, "GET", "/v1/quarantine", params={k: v for k, v in params.items() if v})
        print_cases(found["cases"])
        return 0
    if args.action == "show":
        print(format_case(api(settings, "GET", f"/v1/quarantine/{_path(args.case)}")))
        return 0
    body: dict[str, Any] = {"reason": args.reason}
    if args.retry:
        body["decision"] = "retry"
    elif args.fail:
        body["decision"] = "fail"
    elif args.edit:
        body.update(decision="edit", input=_json_file(args.edit, "the edited input"))
        if not isinstance(body["input"], dict):
            raise ValueError(f"the edited input in {args.edit} must be a JSON object")
    else:
        body.update(decision="skip", output=_json_file(args.skip_with, "the output"))
    if args.new_effect:
        if body["decision"] != "edit":
            raise ValueError("--new-effect goes with --edit only (a retry keeps its key)")
        body["new_effect"] = True
    return _outcome(api(settings, "POST", f"/v1/quarantine/{_path(args.case)}/decide", json=body))


def run_approvals(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        params = {"tenant": args.tenant} if args.tenant else {}
        print_cases(api(settings, "GET", "/v1/approvals", params=params)["cases"])
        return 0
    path = f"/v1/approvals/{_path(args.case)}"
    if args.action == "deny":
        return _outcome(api(settings, "POST", f"{path}/deny", json={"reason": args.reason}))
    case = api(settings, "GET", f"/v1/quarantine/{_path(args.case)}")
    if case["kind"] != "approval" or case["status"] != "open":
        raise ValueError(f"{args.case} is not an open approval ({case['kind']}, {case['status']})")
    # Approve what was shown, and show what is approved: the API refuses it if the case changed since.
    print(f"approving {case['step']} of run {case['run_id']}: {case.get('reason') or ''}")
    print(f"  payload          {json.dumps(case.get('input'), sort_keys=True)}")
    print(f"  input_ref        {case['input_ref']}\n  idempotency_key  {case['idempotency_key']}")
    body = {"reason": args.reason, "input_ref": case["input_ref"], "idempotency_key": case["idempotency_key"]}
    return _outcome(api(settings, "POST", f"{path}/approve", json=body))


def run_control(action: str, settings: Settings, args: argparse.Namespace) -> int:
    reply = api(
        settings, "POST", f"/v1/runs/{quote(args.run_id, safe='')}/{action}", json={"reason": args.reason}
    )
    print(f"{action} of run {reply['run_id']} sent (command {reply['command_id']})")
    return 0
