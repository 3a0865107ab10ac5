"""The shop's LLM agents: spans per the gen_ai semantic conventions, and where their faults strike.

``assistant`` hosts two agents behind ``POST /v1/agents/<name>/chat``: the
``shopping-assistant`` (OpenAI) and ``order-support`` (Anthropic).  One chat
is ``invoke_agent <agent>`` over: ``embeddings <model>`` of the question,
``retrieval <data source>`` from a vector store (document scores on the
span), model turns ``chat <model>`` (each over the provider's HTTP calls,
429s retried), the tools the model chose (``execute_tool <tool>``, some in
parallel, each calling a shop service), then parsing the final output and
validating the answer against what the tools and the retrieval returned.

Healthy chats have their own detours: a tool returns nothing and the model
tries another; the provider answers 429 and the SDK retries.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass

from processor.demo.calls import Request
from processor.demo.shop import (
    PRODUCTS,
    answer,
    catalog_get_product,
    catalog_search,
    entry,
    frames,
    gc_pause,
    recommendation,
    shipping_quote,
    with_retries,
)
from processor.demo.simtrace import CLIENT, INTERNAL, Op, SimError


@dataclass(frozen=True)
class Agent:
    name: str
    provider: str
    host: str
    path: str
    model: str
    response_model: str
    temperature: float
    max_tokens: int
    tools: tuple[str, ...]
    data_source: str
    output_schema: str


AGENTS = (
    Agent("shopping-assistant", "openai", "api.openai.com", "/v1/chat/completions", "gpt-4o",
          "gpt-4o-2024-08-06", 0.2, 1024, ("search_products", "get_product_details", "check_inventory",
                                          "get_recommendations"), "product-kb", "ShoppingAnswer"),
    Agent("order-support", "anthropic", "api.anthropic.com", "/v1/messages", "claude-3-5-haiku-latest",
          "claude-3-5-haiku-20241022", 0.3, 800, ("get_order_status", "get_shipping_estimate", "search_products"),
          "support-kb", "SupportAnswer"),
)
EMBEDDING_MODEL = "text-embedding-3-small"
MADE_UP_TOOLS = ("lookup_coupon", "get_user_profile", "track_package", "compare_prices")
TOOL_TURN_MAX_TOKENS = 256


def agent_chat(req: Request) -> None:
    agent = _agent(req)
    with entry(req, "POST", "/api/assistant/chat", "/api/assistant/chat") as root:
        root.work(1.5)
        req.http(root, "assistant", "POST", "/v1/agents/:agent/chat", f"/v1/agents/{agent.name}/chat",
                 lambda op: Chat(req, op, agent).run(), timeout_ms=60000)
        root.work(1)


def _agent(req: Request) -> Agent:
    """The agent a chat goes to; a fault that strikes one agent's path gets its chats."""
    variant = req.fault.variant if req.fault.active else {}
    if "agent" in variant:
        return next(a for a in AGENTS if a.name == variant["agent"])
    if variant.get("target") in ("catalog", "assistant>catalog", "catalog.GetProduct"):
        return AGENTS[0]
    return AGENTS[0] if req.rng.random() < 0.65 else AGENTS[1]


class Chat:
    """One agent run: the steps of the loop, in program order."""

    def __init__(self, req: Request, server: Op, agent: Agent) -> None:
        self.req, self.server, self.agent = req, server, agent
        self.rng = req.rng
        rollout = req.fault.at("bad-temperature")
        creative = agent.name == "shopping-assistant" and self.rng.random() < 0.15  # gift ideas: more varied
        self.temperature = rollout["temperature"] if rollout else (0.7 if creative else agent.temperature)
        self.chats: list[Op] = []
        self.call_ids: dict[Op, list[str]] = {}   # per model turn, the ids of the tool calls it made
        self.input_tokens = self.rng.randint(900, 1600)

    def run(self) -> None:
        a = self.agent
        self.server.work(0.8)
        conversation = f"conv_{self.rng.getrandbits(48):012x}"
        with self.server.child(None, "openinference.agents", f"invoke_agent {a.name}", INTERNAL,
                               gen_ai__operation__name="invoke_agent", gen_ai__agent__name=a.name,
                               gen_ai__agent__id=f"agt_{zlib.crc32(a.name.encode()):08x}",
                               gen_ai__provider__name=a.provider, gen_ai__request__model=a.model,
                               gen_ai__conversation__id=conversation) as inv:
            inv.work(1.2)
            self.embeddings(inv)
            grounded = self.retrieval(inv)
            results = self.loop(inv)
            text = self.final_turn(inv, results)
            self.parse(inv, text)
            self.validate(inv, grounded, results)
            inv.work(0.5)
        self.server.set(http__response__body__size=self.rng.randint(700, 2400))

    # --- steps ---------------------------------------------------------------------------------------
    def embeddings(self, inv: Op) -> None:
        with inv.child(None, "opentelemetry.instrumentation.openai", f"embeddings {EMBEDDING_MODEL}", CLIENT,
                       gen_ai__operation__name="embeddings", gen_ai__provider__name="openai",
                       gen_ai__request__model=EMBEDDING_MODEL, gen_ai__embeddings__dimension__count=1536,
                       gen_ai__usage__input_tokens=self.rng.randint(12, 60), server__address="api.openai.com",
                       server__port=443) as emb:
            with self.req.external(emb, "api.openai.com", "POST", "/v1/embeddings", 90) as http:
                http.set(http__response__status_code=200)

    def retrieval(self, inv: Op) -> bool:
        """Documents for the question; whether they are about it (their scores say so)."""
        a = self.agent
        bad = self.req.fault.at("irrelevant-retrieval")
        with inv.child(None, "openinference.retrieval", f"retrieval {a.data_source}", INTERNAL,
                       gen_ai__operation__name="retrieval", gen_ai__data_source__id=a.data_source,
                       gen_ai__retrieval__top_k=5) as ret:
            with self.req.db(ret, "qdrant", "query", a.data_source.replace("-", "_"),
                             "POST /collections/{collection}/points/query") as q:
                q.work(14, sigma=0.4)
                q.set(db__response__returned_rows=5)
            if bad:
                scores = sorted((round(self.rng.uniform(0.08, 0.31), 3) for _ in range(5)), reverse=True)
            else:  # an off-topic question now and then finds only loosely related documents
                top = self.rng.uniform(0.58, 0.93) if self.rng.random() > 0.04 else self.rng.uniform(0.22, 0.5)
                scores = sorted((round(top - self.rng.uniform(0, 0.25) * (i > 0), 3) for i in range(5)), reverse=True)
            ret.set(app__retrieval__documents=5, app__retrieval__scores=scores, app__retrieval__top_score=scores[0],
                    app__retrieval__document_ids=[f"{a.data_source}:{self.rng.randint(1000, 9999)}" for _ in scores])
            ret.work(1.5)
        if bad:
            self.bad_retrieval = ret
        return not bad

    def loop(self, inv: Op) -> list[tuple[str, int]]:
        """Tool turns: the model picks tools, they run; (tool, result count) of each call."""
        a, req = self.agent, self.req
        results: list[tuple[str, int]] = []
        unknown = req.fault.at("unknown-tool")
        first = list(self.rng.sample(a.tools[:2], 2) if self.rng.random() < 0.25 else [a.tools[0]])
        if self.rng.random() < 0.015:  # the model makes up a tool now and then; told so, it picks a real one
            first = [self.rng.choice(MADE_UP_TOOLS)]
        if unknown:
            first = [unknown["tool"]]
        elif req.fault.at("ignored-empty-tool"):
            first = [req.fault.variant["target"]]
        elif req.fault.active and req.fault.variant.get("tool") in a.tools:
            first = [req.fault.variant["tool"]]
        for turn in range(3):
            calls = first if turn == 0 else self._next_tools(results)
            if not calls:
                break
            chat = self.chat(inv, finish="tool_calls", tools=calls, max_tokens=TOOL_TURN_MAX_TOKENS,
                             truncate=turn == 0 and req.fault.at("token-limit", "tool-call") is not None)
            if chat.attributes["gen_ai.response.finish_reasons"] == ["length"]:
                self.run_tools(inv, calls, chat, truncated=True)
            results += self.run_tools(inv, calls, chat)
        return results

    def _next_tools(self, results: list[tuple[str, int]]) -> list[str]:
        if self.req.fault.at("ignored-empty-tool"):
            return []  # the model answers from an empty result
        if results and results[-1][1] == 0:
            return [next(t for t in self.agent.tools if t != results[-1][0])]  # try another tool
        return [self.rng.choice(self.agent.tools[1:])] if self.rng.random() < 0.3 else []

    def final_turn(self, inv: Op, results: list[tuple[str, int]]) -> str:
        cut = self.req.fault.at("token-limit", "answer") is not None
        if not cut and self.rng.random() < 0.02:
            # a long answer hits the limit; the agent asks the model to continue and joins the parts
            self.chat(inv, finish="stop", tools=[], max_tokens=self.agent.max_tokens, truncate=True)
        chat = self.chat(inv, finish="stop", tools=[], max_tokens=self.agent.max_tokens, truncate=cut)
        if cut:
            self.req.trace.cause(chat)
        return "length" if cut else "stop"

    def parse(self, inv: Op, finish: str) -> None:
        with inv.child(None, "assistant.output", "parse_output", INTERNAL,
                       code__function__name="assistant.output.parse_structured",
                       app__output__schema=self.agent.output_schema) as p:
            p.work(0.9)
            if finish == "length":
                raise SimError("json.decoder.JSONDecodeError",
                               f"Unterminated string starting at: line 1 column {self.rng.randint(700, 3900)}",
                               fault=True, frames=frames("assistant", "output", 52, "parse_structured",
                                                         "data = json.loads(completion.content)"))

    def validate(self, inv: Op, grounded: bool, results: list[tuple[str, int]]) -> None:
        ignored = [t for t, n in results if n == 0] if self.req.fault.at("ignored-empty-tool") else []
        with inv.child(None, "assistant.guardrails", "validate_answer", INTERNAL,
                       code__function__name="assistant.guardrails.validate_answer",
                       app__validation__checks=["grounding", "product_ids", "policy"]) as v:
            v.work(2.5)
            if not grounded:
                self.req.trace.cause(self.bad_retrieval)
                raise SimError("assistant.guardrails.GroundingError",
                               "answer is not supported by the retrieved documents (max overlap 0.04)", fault=True,
                               frames=frames("assistant", "guardrails", 88, "check_grounding",
                                             "raise GroundingError(overlap)"))
            if ignored:
                raise SimError("assistant.guardrails.AnswerValidationError",
                               f"answer cites {self.rng.choice(PRODUCTS)} which no tool returned", fault=True,
                               frames=frames("assistant", "guardrails", 121, "check_product_ids",
                                             "raise AnswerValidationError(unknown_ids)"))
            v.set(app__validation__passed=True)

    # --- a model turn ----------------------------------------------------------------------------------
    def chat(self, inv: Op, finish: str, tools: list[str], max_tokens: int, truncate: bool) -> Op:
        a = self.agent
        if truncate:
            out_tokens, finish = max_tokens, "length"
        elif finish == "tool_calls":
            out_tokens = self.rng.randint(18, 90) * len(tools)
        else:
            out_tokens = min(max_tokens - 1, int(self.rng.lognormvariate(5.3, 0.4)))
        calls = [{"type": "tool_call", "id": f"call_{self.rng.getrandbits(64):016x}", "name": t} for t in tools]
        with inv.child(None, f"opentelemetry.instrumentation.{a.provider}", f"chat {a.model}", CLIENT,
                       gen_ai__operation__name="chat", gen_ai__provider__name=a.provider,
                       gen_ai__request__model=a.model, gen_ai__request__temperature=self.temperature,
                       gen_ai__request__max_tokens=max_tokens, gen_ai__request__top_p=1.0,
                       server__address=a.host, server__port=443) as chat:
            chat.work(0.6)
            ms = self.rng.uniform(250, 700) + out_tokens * self.rng.uniform(9, 18)
            self._provider_call(chat, ms)
            chat.work(0.4)
            chat.set(gen_ai__response__model=a.response_model,
                     gen_ai__response__id=f"resp_{self.rng.getrandbits(64):x}",
                     gen_ai__response__finish_reasons=[finish], gen_ai__usage__input_tokens=self.input_tokens,
                     gen_ai__usage__output_tokens=out_tokens, gen_ai__output__type="json",
                     gen_ai__output__messages=json.dumps([{"role": "assistant", "parts": calls or [
                         {"type": "text", "content": "(redacted)"}], "finish_reason": finish}]))
        self.input_tokens += out_tokens + self.rng.randint(150, 900)
        self.call_ids[chat] = [c["id"] for c in calls]
        self.chats.append(chat)
        return chat

    def _provider_call(self, chat: Op, ms: float) -> None:
        """The provider's HTTP calls under one model turn: 429s and connection errors are retried."""
        a, req = self.agent, self.req
        limited = req.fault.at("llm-rate-limit")
        for attempt in range(4):
            try:
                throttled = limited is not None or self.rng.random() < 0.04
                with req.external(chat, a.host, "POST", a.path, 60 if throttled else ms, attempt=attempt) as http:
                    if throttled:
                        http.set(http__response__status_code=429)
                        http.error("429")
                        if limited:
                            req.trace.cause(http)
                    else:
                        http.set(http__response__status_code=200)
                        return
            except SimError as err:
                if attempt == 3:
                    raise SimError(f"{a.provider}.APIConnectionError", "Connection error.", fault=True,
                                   frames=frames("assistant", "llm", 33, "complete",
                                                 "return await self.client.create(**params)")) from err
            chat.wait(min(500 * 2 ** attempt, 8000) * self.rng.uniform(0.8, 1.2))
        raise SimError(f"{a.provider}.RateLimitError", "Error code: 429 - rate limit reached for requests",
                       fault=limited is not None,
                       frames=frames("assistant", "llm", 33, "complete", "return await self.client.create(**params)"))

    # --- tools ---------------------------------------------------------------------------------------
    def run_tools(self, inv: Op, tools: list[str], chat: Op, truncated: bool = False) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        with inv.parallel() as branch:
            for tool, call_id in zip(tools, self.call_ids[chat]):
                branch()
                out.append((tool, self.tool(inv, tool, call_id, chat, truncated)))
        return out

    def tool(self, inv: Op, tool: str, call_id: str, chat: Op, truncated: bool) -> int:
        a, req = self.agent, self.req
        with inv.child(None, "openinference.tools", f"execute_tool {tool}", INTERNAL,
                       gen_ai__operation__name="execute_tool", gen_ai__tool__name=tool, gen_ai__tool__type="function",
                       gen_ai__tool__call__id=call_id) as t:
            t.work(0.4)
            if truncated:
                req.trace.cause(chat)
                raise SimError("json.decoder.JSONDecodeError", "Unterminated string starting at: line 1 column 212",
                               fault=True, frames=frames("assistant", "tools", 40, "invoke",
                                                         "args = json.loads(call.function.arguments)"))
            if tool not in a.tools and not req.fault.at("unknown-tool"):
                t.error("ToolNotFoundError", f"tool '{tool}' is not registered")
                t.set(gen_ai__tool__call__result=json.dumps({"error": f"tool '{tool}' is not registered"}),
                      app__tool__result__count=0)
                return 0
            if tool not in a.tools:
                req.trace.cause(chat)
                raise SimError("assistant.tools.ToolNotFoundError",
                               f"tool '{tool}' is not registered for agent {a.name}", fault=True,
                               frames=frames("assistant", "tools", 31, "resolve", "raise ToolNotFoundError(name)"))
            if req.fault.at("bad-temperature") and self.rng.random() < 0.85 and len(self.chats) == 1:
                for c in self.chats:
                    req.trace.cause(c)
                raise SimError("pydantic_core._pydantic_core.ValidationError",
                               f"1 validation error for {_camel(tool)}Args\nsku\n  String should match pattern "
                               f"'^SKU-\\d{{5}}$' [type=string_pattern_mismatch, input_value='SKU-1OO4?7']",
                               fault=True, frames=frames("assistant", "tools", 44, "invoke",
                                                         "args = self.schema.model_validate_json(arguments)"))
            n = self._tool_backend(t, tool)
            t.set(gen_ai__tool__call__result=_result_text(tool, n, self.rng), app__tool__result__count=n)
            t.work(0.3)
        return n

    def _tool_backend(self, t: Op, tool: str) -> int:
        req = self.req
        if tool == "search_products":
            refused = req.fault.at("retry-storm", "catalog")
            timeout = req.fault.at("short-timeout", "assistant>catalog")
            n = with_retries(req, t, refused, "catalog", "GET", "/v1/products/search", lambda attempt: req.http(
                t, "catalog", "GET", "/v1/products/search", "/v1/products/search?q=...",
                lambda s: _catalog_semantic_search(req, s), timeout_ms=timeout["timeout_ms"] if timeout else 2000,
                attempt=attempt))
            empty = req.fault.at("ignored-empty-tool", "search_products")
            if empty:
                req.trace.cause(t)
                return 0
            return 0 if self.rng.random() < 0.12 else n
        if tool == "get_product_details":
            sku = self.rng.choice(PRODUCTS)
            product = req.grpc(t, "catalog", "shop.CatalogService", "GetProduct",
                               lambda s: catalog_get_product(req, s, sku))
            if product is None:
                raise SimError("TypeError", "'NoneType' object is not subscriptable", fault=True,
                               frames=frames("assistant", "tools/catalog", 27, "get_product_details",
                                             "return {'sku': p['sku'], 'price': p['price_cents']}"))
            return 1
        if tool == "check_inventory":
            return req.http(t, "inventory", "GET", "/inventory/:sku", f"/inventory/{self.rng.choice(PRODUCTS)}",
                            lambda s: _inventory_lookup(req, s))
        if tool == "get_recommendations":
            return len(req.http(t, "recommendation", "GET", "/recommendations", "/recommendations?sku=...",
                                lambda s: _recs(req, s)) or [])
        if tool == "get_order_status":
            found = not req.fault.at("ignored-empty-tool", "get_order_status") and self.rng.random() > 0.1
            with req.db(t, "postgresql", "SELECT", "orders", "SELECT id, status, updated_at FROM orders "
                        "WHERE user_id = $1 ORDER BY created_at DESC LIMIT 5", db__namespace="shop") as q:
                q.work(4)
                q.set(db__response__returned_rows=self.rng.randint(1, 5) if found else 0)
            if not found and req.fault.at("ignored-empty-tool"):
                req.trace.cause(t)
            return q.attributes["db.response.returned_rows"]
        if tool == "get_shipping_estimate":
            quote = req.grpc(t, "shipping", "shop.ShippingService", "GetQuote", lambda s: shipping_quote(req, s),
                             timeout="5S")
            return 1 if quote else 0
        raise AssertionError(tool)


def _result_text(tool: str, n: int, rng: random.Random) -> str:
    """What the tool returned, as the instrumentation records it (JSON, cut at 256 characters)."""
    key = {"get_order_status": "orders", "get_shipping_estimate": "quotes", "check_inventory": "stock"}.get(
        tool, "products")
    items = [{"sku": rng.choice(PRODUCTS), "score": round(rng.uniform(0.4, 0.99), 2)} for _ in range(min(n, 6))]
    return json.dumps({key: items, "total": n})[:256]


def _camel(tool: str) -> str:
    return "".join(p.capitalize() for p in tool.split("_"))


def _catalog_semantic_search(req: Request, op: Op) -> int:
    hits = catalog_search(req, op, req.rng.choice(("gift ideas", "waterproof", "under 50")), limit=10)
    with op.child(None, "catalog.rerank", "rerank results", INTERNAL, code__function__name="catalog.search.rerank",
                  app__rerank__model="bge-reranker-base", app__rerank__candidates=hits) as r:
        r.work(110, sigma=0.45)
        gc_pause(r)
    op.set(http__response__body__size=120 + 180 * hits)
    return hits


def _inventory_lookup(req: Request, op: Op) -> int:
    stocked = req.rng.random() > 0.08  # a discontinued product has no stock row: the tool says so
    with req.db(op, "postgresql", "SELECT", "stock", "SELECT quantity FROM stock WHERE sku = ?",
                db__namespace="shop", db__client__connection__pool__name="inventory-pool") as q:
        q.work(2)
        q.set(db__response__returned_rows=int(stocked))
    if not stocked:
        answer(op, 404)
    op.work(0.3)
    return int(stocked)


def _recs(req: Request, op: Op) -> list[str] | None:
    return recommendation(req, op, req.rng.choice(PRODUCTS))

