"""Which models a call may go to, in order, and why: by the step's route class, the model's fallbacks
and the tenant's allow-list. The executor's router walks the plan, falling back by failure class; the
scheduler reserves the worst case of the plan's dearest model (a fallback may answer), from the same
configuration (KEEL_MODEL_ROUTES, KEEL_MODEL_ROUTE_CLASSES, KEEL_TENANT_MODELS)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keel.pricing import worst_case_micros


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The models to try, in order (the first usable answer wins), and why this route: said on the
    call's facts and in its errors, so an operator can tell a routing choice from a failure."""

    models: list[str]
    reason: str

    def why(self, model: str) -> str:
        """Why `model` answered: the plan's reason, and its place in the order if it was not the first."""
        place = self.models.index(model) if model in self.models else 0
        return self.reason if place == 0 else f"{self.reason}; fallback #{place} after {self.models[:place]}"


class NoAllowedModel(LookupError):
    """The tenant may use none of the route's models: an `auth` failure, nothing is called."""


def plan(
    model: str,
    route_class: str | None,
    fallbacks: Mapping[str, Sequence[str]],
    classes: Mapping[str, Sequence[str]],
    tenant: str | None,
    tenant_models: Mapping[str, Sequence[str]],
) -> RoutePlan:
    """The route of one call.

    - A step with a route class the deployment configures (KEEL_MODEL_ROUTE_CLASSES) goes to that
      class's models, in order; the step's own model is not used (the class is the deployment's choice
      for that kind of work). An unconfigured class, or none, uses the step's model and its fallbacks.
    - A tenant with an allow-list (KEEL_TENANT_MODELS) never reaches a model outside it: those are
      dropped from the order; none left is NoAllowedModel. A tenant without a list may use any model.
    """
    if route_class and route_class in classes and classes[route_class]:
        chain = list(dict.fromkeys(classes[route_class]))
        reason = f"route class {route_class!r}: {chain}"
    else:
        chain = list(dict.fromkeys([model, *fallbacks.get(model, ())]))
        unconfigured = f"route class {route_class!r} is not configured; " if route_class else ""
        reason = f"{unconfigured}the step's model {model!r}" + (f" then {chain[1:]}" if chain[1:] else "")
    allowed = tenant_models.get(tenant) if tenant is not None else None
    if allowed is not None:
        kept = [m for m in chain if m in allowed]
        if not kept:
            raise NoAllowedModel(
                f"tenant {tenant!r} may use none of {chain} (its models: {sorted(allowed)}); nothing called"
            )
        if kept != chain:
            reason += f"; tenant {tenant!r} allows only {kept}"
        chain = kept
    return RoutePlan(chain, reason)


@dataclass(frozen=True)
class RouteConfig:
    """The deployment's routes, as plain data: model -> its fallbacks, route class -> its models,
    tenant -> the models it may use."""

    fallbacks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    classes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    tenant_models: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouteConfig:
        """KEEL_MODEL_ROUTES (only each route's `fallbacks`), KEEL_MODEL_ROUTE_CLASSES, KEEL_TENANT_MODELS:
        the JSON the executor's router reads."""
        env = os.environ if env is None else env
        routes = json.loads(env.get("KEEL_MODEL_ROUTES") or "{}")
        return cls(
            {m: list(r.get("fallbacks") or []) for m, r in routes.items()},
            json.loads(env.get("KEEL_MODEL_ROUTE_CLASSES") or "{}"),
            json.loads(env.get("KEEL_TENANT_MODELS") or "{}"),
        )

    def plan(self, model: str, route_class: str | None, tenant: str | None) -> RoutePlan:
        return plan(model, route_class, self.fallbacks, self.classes, tenant, self.tenant_models)


def route_worst_case_micros(route: RoutePlan, prompt_bytes: int, max_tokens: int) -> int:
    """The most one call on this route can cost: any of its models may be the one that answers."""
    return max(worst_case_micros(m, prompt_bytes, max_tokens) for m in route.models)
