"""The fault kinds the demo shop can suffer, by layer, and the fault active in one trace.

A kind has a layer (code, data, infrastructure, semantic, config), says
whether its cause is *silent* (the span where it originates raises nothing;
a later or enclosing span fails) and lists variants: where it strikes and
with which parameters.  Each case of a dataset takes one variant.  The
services' code asks ``Fault.at(kind, target)`` at the places a fault can
strike; the answer is the variant's parameters when that fault is active in
this trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LAYERS = ("code", "data", "infrastructure", "semantic", "config")


@dataclass(frozen=True)
class FaultKind:
    name: str
    layer: str
    silent: bool
    summary: str
    variants: tuple[dict[str, Any], ...]   # each: "target", "requests" (request types that reach it), params


def _v(target: str, requests: str, **params: Any) -> dict[str, Any]:
    return {"target": target, "requests": tuple(requests.split()), **params}


KINDS: tuple[FaultKind, ...] = (
    # --- code -----------------------------------------------------------------------------------------
    FaultKind("exception", "code", False, "a handler raises (a bug in the service's own code)", (
        _v("catalog.GetProduct", "browse", exc=("KeyError", "'currency'")),
        _v("checkout.total", "checkout", exc=("decimal.InvalidOperation", "[<class 'decimal.ConversionSyntax'>]")),
        _v("recommendation.get", "browse", exc=("ZeroDivisionError", "float division by zero")),
    )),
    FaultKind("null-return", "code", True, "a callee answers null or empty; the caller dereferences it and throws", (
        _v("recommendation.get", "browse"),
        _v("shipping.GetQuote", "checkout"),
        _v("catalog.GetProduct", "agent", tool="get_product_details"),
    )),
    # --- data -----------------------------------------------------------------------------------------
    FaultKind("zero-rows", "data", True,
              "a query returns no rows for data that exists; the caller answers 404 or 500", (
        _v("catalog.products", "checkout"),
        _v("inventory.stock", "checkout"),
        _v("catalog.product", "browse"),
    )),
    FaultKind("empty-cache-entry", "data", True,
              "a cache hit returns an empty entry (a bad write); the caller fails on it", (
                  _v("cart.redis", "checkout"),
                  _v("catalog.redis", "browse"),
              )),
    FaultKind("slow-query", "data", False, "a query runs 10-50x slower (lock wait, missing index)", (
        _v("inventory.update", "checkout", ms=(900, 2600)),
        _v("catalog.search", "search", ms=(700, 1800)),
        _v("checkout.insert", "checkout", ms=(600, 1500)),
    )),
    # --- infrastructure -------------------------------------------------------------------------------
    FaultKind("dns-failure", "infrastructure", False, "a host name does not resolve; the client cannot connect", (
        _v("api.cardgateway.example", "checkout"),
        _v("api.carrier.example", "checkout"),
        _v("api.openai.com", "agent"),
    )),
    FaultKind("pool-exhaustion", "infrastructure", False,
              "the database connection pool is exhausted; acquiring a connection times out", (
                  _v("inventory", "checkout"),
                  _v("checkout", "checkout"),
                  _v("catalog", "browse search"),
              )),
    FaultKind("cpu-throttling", "infrastructure", False,
              "a container hits its CPU quota (CFS throttling): its process does its work 3-6x slower", (
                  _v("inventory", "checkout"),
                  _v("catalog", "agent"),
                  _v("frontend", "browse search"),
              )),
    FaultKind("retry-storm", "infrastructure", False,
              "a pod restarts: connections are refused and the caller retries with backoff", (
                  _v("inventory", "checkout"),
                  _v("catalog", "agent"),
                  _v("checkout", "checkout"),
              )),
    FaultKind("network-latency", "infrastructure", False, "packet loss between two services: calls take 0.2-1 s more", (
        _v("checkout>payment", "checkout"),
        _v("frontend>catalog", "browse search"),
        _v("assistant>catalog", "agent"),
    )),
    FaultKind("llm-rate-limit", "infrastructure", False,
              "the model provider answers 429 to every retry; the model call gives up", (
                  _v("chat", "agent", agent="shopping-assistant"),
                  _v("chat", "agent", agent="order-support"),
              )),
    # --- semantic -------------------------------------------------------------------------------------
    FaultKind("token-limit", "semantic", True,
              "a model turn stops at its token limit (finish_reasons length); parsing its output fails", (
                  _v("answer", "agent", agent="shopping-assistant"),
                  _v("tool-call", "agent", agent="shopping-assistant"),
                  _v("answer", "agent", agent="order-support"),
              )),
    FaultKind("irrelevant-retrieval", "semantic", True,
              "retrieval returns documents unrelated to the question (low scores); the answer fails validation", (
                  _v("retrieval", "agent", agent="shopping-assistant"),
                  _v("retrieval", "agent", agent="order-support"),
              )),
    FaultKind("ignored-empty-tool", "semantic", True,
              "a tool returns nothing and the agent answers anyway; the answer fails validation", (
                  _v("search_products", "agent", agent="shopping-assistant"),
                  _v("get_order_status", "agent", agent="order-support"),
              )),
    FaultKind("unknown-tool", "semantic", True,
              "the model calls a tool the agent does not have; the tool call fails", (
                  _v("chat", "agent", agent="shopping-assistant", tool="apply_discount_code"),
                  _v("chat", "agent", agent="order-support", tool="cancel_order"),
              )),
    # --- config ---------------------------------------------------------------------------------------
    FaultKind("bad-temperature", "config", True,
              "a rollout sets an out-of-range sampling temperature; the model's tool arguments break a tool", (
                  _v("assistant", "agent", agent="shopping-assistant", temperature=1.9, version="0.32.0"),
                  _v("assistant", "agent", agent="order-support", temperature=1.6, version="0.32.0"),
              )),
    FaultKind("short-timeout", "config", True,
              "a rollout sets a client timeout below what the callee needs; the caller gives up and fails", (
                  _v("checkout>shipping", "checkout", timeout_ms=200, version="3.8.0"),
                  _v("assistant>catalog", "agent", timeout_ms=100, version="0.32.0"),
                  _v("frontend>recommendation", "browse", timeout_ms=25, version="2.15.0"),
              )),
    FaultKind("bad-flag-variant", "config", False,
              "a feature flag serves a broken variant; the code path behind it raises", (
                  _v("checkout.pricing-engine", "checkout", variant="v2-beta"),
                  _v("frontend.product-page", "browse", variant="gallery-v3"),
              )),
)


def kind(name: str) -> FaultKind:
    return next(k for k in KINDS if k.name == name)


def kinds_named(names: Sequence[str]) -> list[FaultKind]:
    """The fault kinds ``names`` (every kind when empty); ValueError naming an unknown one."""
    known = {k.name: k for k in KINDS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown fault kind {', '.join(unknown)}; one of: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)] if names else list(KINDS)


@dataclass
class Fault:
    """The fault of a case, as the services' code sees it in one trace (``active``)."""

    kind: FaultKind
    variant: dict[str, Any]
    active: bool = False
    seen: dict[str, Any] = field(default_factory=dict)   # per-trace notes of the code that applied it

    @classmethod
    def none(cls) -> Fault:
        """No fault: healthy traffic."""
        return cls(FaultKind("none", "", False, "healthy traffic", ({"target": "", "requests": ()},)),
                   {"target": "", "requests": ()})

    def at(self, kind: str, target: str | None = None) -> dict[str, Any] | None:
        """The variant's parameters if ``kind`` is active in this trace at ``target``."""
        if not self.active or self.kind.name != kind:
            return None
        if target is not None and self.variant["target"] != target:
            return None
        return self.variant
