"""The shop's services: what each does for a request, the spans it leaves, and where faults strike.

Requests enter at ``frontend`` (browse a product, search, check out; the
assistant's chat is in ``agent``).  Behind it: ``catalog`` (gRPC; redis cache
in front of postgresql, elasticsearch for search), ``cart`` (gRPC, redis),
``checkout`` (HTTP; prices, a feature-flagged pricing engine, inventory and
shipping in parallel, payment, the order row), ``inventory`` (HTTP, Java,
postgresql through a connection pool), ``payment`` and ``shipping`` (gRPC,
each calling a third-party API that is not instrumented) and
``recommendation`` (HTTP).

Healthy traffic has its own failures, handled or normal: unknown products
answered 404, searches with no results, declined cards, cache misses, GC
pauses, latencies that vary (lognormal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from processor.demo.calls import Request, retry, scope
from processor.demo.simtrace import INTERNAL, SERVER, Op, SimError

PRODUCTS = ("SKU-10012", "SKU-10047", "SKU-20415", "SKU-20433", "SKU-33071", "SKU-44102", "SKU-51236",
            "SKU-60019", "SKU-60024", "SKU-71150", "SKU-80311", "SKU-90007")
QUERIES = ("running shoes", "rain jacket", "wireless earbuds", "espresso machine", "yoga mat", "desk lamp",
           "hiking backpack", "usb-c charger", "air fryer", "winter gloves")
T = TypeVar("T")
USER_AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
               "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
               "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")


def frames(service: str, path: str, line: int, func: str, source: str) -> tuple[tuple[str, int, str, str], ...]:
    ext = {"frontend": "js", "cart": "go", "payment": "go", "inventory": "java"}.get(service, "py")
    return ((f"/app/{service}/{path}.{ext}", line, func, source),)


def gc_pause(op: Op) -> None:
    """Now and then a stop-the-world collection: self time with no child to show for it."""
    if op.pod.runtime in ("java", "go", "nodejs", "python") and op.trace.rng.random() < 0.03:
        op.wait(op.trace.rng.uniform(40, 220))


def flag(op: Op, key: str, variant: str) -> None:
    """A feature-flag evaluation, recorded as the semantic conventions' event."""
    op.event("feature_flag.evaluation", feature_flag__key=key, feature_flag__result__variant=variant,
              feature_flag__provider__name="flagd", feature_flag__context__id=op.attributes.get("enduser.id"))


def entry(req: Request, method: str, route: str, path: str) -> Op:
    pod = req.pod("frontend")
    return req.trace.root(pod, scope(pod, "http"), f"{method} {route}", SERVER, http__request__method=method,
                          http__route=route, url__path=path.split("?")[0], url__query=path.partition("?")[2] or None,
                          url__scheme="https", server__address="shop.example.com", server__port=443,
                          client__address=f"198.51.100.{req.rng.randint(2, 254)}",
                          user_agent__original=req.rng.choice(USER_AGENTS), network__protocol__version="2",
                          enduser__id=req.user)


def answer(op: Op, status: int) -> None:
    op.set(http__response__status_code=status)


# --- frontend ---------------------------------------------------------------------------------------


def browse(req: Request) -> None:
    known = req.rng.random() > 0.07
    sku = req.rng.choice(PRODUCTS) if known else f"SKU-{req.rng.randint(91000, 99999)}"
    with entry(req, "GET", "/products/:id", f"/products/{sku}") as root:
        root.work(1.5)
        bad = req.fault.at("bad-flag-variant", "frontend.product-page")
        layout = bad["variant"] if bad else ("classic" if req.rng.random() < 0.8 else "gallery-v2")
        try:
            with root.parallel() as branch:
                branch()
                product = req.grpc(root, "catalog", "shop.CatalogService", "GetProduct",
                                   lambda op: catalog_get_product(req, op, sku, known))
                branch()
                timeout = req.fault.at("short-timeout", "frontend>recommendation")
                recs = req.http(root, "recommendation", "GET", "/recommendations", f"/recommendations?sku={sku}",
                                lambda op: recommendation(req, op, sku),
                                timeout_ms=timeout["timeout_ms"] if timeout else 1000)
        except SimError as err:
            if err.grpc_code == 5 and err.http_status == 404:
                answer(root, 404)  # an unknown product: the page says so
                root.work(2)
                return
            raise
        with root.child(None, "frontend.render", "render product-page", INTERNAL,
                        code__function__name="renderProductPage") as render:
            flag(render, "product-page.layout", layout)
            render.work(6)
            gc_pause(render)
            if bad:
                raise SimError("TypeError", "Cannot read properties of undefined (reading 'images')", cause=True,
                               frames=frames("frontend", "views/gallery-v3", 214, "renderGallery",
                                             "const hero = product.media.images[0];"))
            if recs is None:
                raise SimError("TypeError", "Cannot read properties of null (reading 'map')", fault=True,
                               frames=frames("frontend", "views/product", 88, "renderProductPage",
                                             "recommendations.map((r) => card(r))"))
            render.set(app__recommendations__count=len(recs), app__product__sku=product)
        root.work(1)


def search(req: Request) -> None:
    query = req.rng.choice(QUERIES) if req.rng.random() > 0.06 else "xq " + str(req.rng.randint(100, 999))
    with entry(req, "GET", "/search", f"/search?q={query.replace(' ', '+')}") as root:
        root.work(1.2)
        hits = req.grpc(root, "catalog", "shop.CatalogService", "SearchProducts",
                        lambda op: catalog_search(req, op, query))
        with root.child(None, "frontend.render", "render search-results", INTERNAL,
                        code__function__name="renderSearchResults", app__search__results=hits) as render:
            render.work(3 + hits * 0.4)
            gc_pause(render)
        root.work(0.8)


def checkout_request(req: Request) -> None:
    with entry(req, "POST", "/api/checkout", "/api/checkout") as root:
        root.work(2)
        refused = req.fault.at("retry-storm", "checkout")
        try:
            with_retries(req, root, refused, "checkout", "POST", "/checkout",
                          lambda attempt: req.http(root, "checkout", "POST", "/checkout", "/checkout",
                                                   lambda op: checkout(req, op), attempt=attempt))
        except SimError as err:
            if err.http_status == 402:
                answer(root, 402)  # the card was declined: the page asks for another
                return
            raise
        root.work(1)


def with_retries(req: Request, caller: Op, refused: dict | None, service: str, method: str, path: str,
                 call: Callable[[int], T]) -> T:
    """A call behind a retrying client; while the callee's pod restarts its first attempts are refused."""
    failing = req.rng.randint(3, 6) if refused else 0
    attempts = failing + (1 if req.rng.random() < 0.75 else 0) if refused else 1

    def attempt(n: int) -> T:
        if n < failing:
            req.connect(caller, service, method, path, attempt=n)
        return call(n)

    return retry(max(attempts, 1), attempt, lambda n, err: caller.wait(min(50 * 2 ** n, 800)))


# --- catalog ----------------------------------------------------------------------------------------


def catalog_get_product(req: Request, op: Op, sku: str, known: bool = True) -> str | None:
    op.work(0.6)
    gc_pause(op)
    empty = req.fault.at("empty-cache-entry", "catalog.redis")
    zero = req.fault.at("zero-rows", "catalog.product")
    # an exhausted pool comes with a cold cache: evictions send every read to the database
    cold = req.fault.at("pool-exhaustion", "catalog") is not None
    hit = not zero and not cold and (empty or (known and req.rng.random() < 0.75))
    with req.db(op, "redis", "GET", None, f"GET product:{sku}", db__namespace="0") as cache:
        cache.work(0.35)
        cache.set(db__response__returned_rows=1 if hit else 0)
        if hit:
            cache.set(app__cache__value_size=0 if empty else req.rng.randint(1800, 2600))
    if empty:
        req.trace.cause(cache)
        raise SimError("json.decoder.JSONDecodeError", "Expecting value: line 1 column 1 (char 0)", fault=True,
                       frames=frames("catalog", "cache", 61, "get_product", "return Product(**json.loads(raw))"))
    if not hit:
        with _pooled(req, op, "catalog", "SELECT", "products",
                     "SELECT sku, name, price_cents, currency, attributes FROM products WHERE sku = $1") as q:
            q.work(2.5)
            rows = 0 if (zero or not known) else 1
            q.set(db__response__returned_rows=rows)
        if zero:
            req.trace.cause(q)
        if rows == 0:
            op.set(rpc__grpc__status_code=5)
            raise SimError("NotFound", f"product {sku} not found", grpc_code=5, http_status=404, fault=bool(zero))
        with req.db(op, "redis", "SET", None, f"SET product:{sku} ? EX 300", db__namespace="0") as cache:
            cache.work(0.3)
    bug = req.fault.at("exception", "catalog.GetProduct")
    if bug:
        raise SimError(*bug["exc"], cause=True, frames=frames("catalog", "pricing", 47, "format_price",
                                                               "symbol = CURRENCIES[product.attributes['currency']]"))
    op.work(0.4)
    null = req.fault.at("null-return", "catalog.GetProduct")
    op.event("message", rpc__message__type="SENT", rpc__message__id=1,
             rpc__message__uncompressed_size=0 if null else req.rng.randint(700, 1400))
    if null:
        req.trace.cause(op)
        return None
    return sku


def catalog_get_products(req: Request, op: Op, skus: list[str]) -> dict[str, int]:
    op.work(0.5)
    zero = req.fault.at("zero-rows", "catalog.products")
    hit = not zero and req.rng.random() < 0.7
    with req.db(op, "redis", "MGET", None, "MGET " + " ".join(f"price:{s}" for s in skus),
                db__namespace="0") as cache:
        cache.work(0.4)
        cache.set(db__response__returned_rows=len(skus) if hit else 0)
    if not hit:
        with _pooled(req, op, "catalog", "SELECT", "products",
                     "SELECT sku, price_cents FROM products WHERE sku = ANY($1) AND active") as q:
            q.work(3)
            q.set(db__response__returned_rows=0 if zero else len(skus))
        if zero:
            req.trace.cause(q)
            op.set(rpc__grpc__status_code=5)
            raise SimError("NotFound", f"no active product among {len(skus)} skus", grpc_code=5, http_status=404)
    op.work(0.3)
    return {s: req.rng.randint(500, 25000) for s in skus}


def catalog_search(req: Request, op: Op, query: str, limit: int = 20) -> int:
    op.work(0.8)
    gc_pause(op)
    slow = req.fault.at("slow-query", "catalog.search")
    with req.db(op, "elasticsearch", "search", "products", f'{{"query":{{"multi_match":{{"query":"{query}",'
                '"fields":["name^3","description"]}}}},"size":' + str(limit) + "}") as es:
        es.work(18, sigma=0.4)
        if slow:
            es.wait(req.rng.uniform(*slow["ms"]))
            req.trace.cause(es)
        hits = 0 if query.startswith("xq ") else req.rng.randint(3, limit)
        es.set(db__response__returned_rows=hits)
    if hits:
        with req.db(op, "redis", "MGET", None, f"MGET price:* ({hits} keys)", db__namespace="0") as cache:
            cache.work(0.5)
            cache.set(db__response__returned_rows=hits)
    op.work(0.2 + 0.05 * hits)
    return hits


def _pooled(req: Request, op: Op, service: str, operation: str, table: str, query: str) -> Op:
    """A postgresql query through the service's connection pool; an exhausted pool fails it after the
    pool's acquire timeout (raised when the span is entered)."""
    q = req.db(op, "postgresql", operation, table, query, db__namespace="shop",
               db__client__connection__pool__name=f"{service}-pool")
    if req.fault.at("pool-exhaustion", service):
        timeout_ms, (type_name, message) = _POOL_ERRORS[service]
        q.wait(timeout_ms * req.rng.uniform(1.0, 1.05))
        with q:
            raise SimError(type_name, message, cause=True, http_status=503, grpc_code=14,
                           frames=frames(service, "db", 112, "acquire", "conn = pool.get_connection(timeout)"))
    return q


_POOL_ERRORS = {
    "inventory": (250, ("java.sql.SQLTransientConnectionException",
                        "inventory-pool - Connection is not available, request timed out after 250ms.")),
    "checkout": (3000, ("sqlalchemy.exc.TimeoutError",
                        "QueuePool limit of size 10 overflow 5 reached, connection timed out, timeout 3.00")),
    "catalog": (1000, ("psycopg_pool.PoolTimeout", "couldn't get a connection after 1.00 sec")),
}


# --- checkout and what it calls -----------------------------------------------------------------------


def checkout(req: Request, op: Op) -> None:
    op.work(1)
    gc_pause(op)
    items = req.grpc(op, "cart", "shop.CartService", "GetCart", lambda s: cart_get(req, s))
    try:
        prices = req.grpc(op, "catalog", "shop.CatalogService", "GetProducts",
                          lambda s: catalog_get_products(req, s, items))
    except SimError as err:
        if err.grpc_code != 5:
            raise
        raise SimError("checkout.errors.ProductUnavailableError", f"cart items not in catalog: {', '.join(items)}",
                       fault=True, frames=frames("checkout", "orders", 133, "price_items",
                                                 "raise ProductUnavailableError(missing)")) from None
    bad = req.fault.at("bad-flag-variant", "checkout.pricing-engine")
    with op.child(None, "checkout.pricing", "calculate order total", INTERNAL,
                  code__function__name="checkout.pricing.calculate_total") as calc:
        engine = bad["variant"] if bad else ("v1" if req.rng.random() < 0.85 else "v2")
        flag(calc, "checkout.pricing-engine", engine)
        calc.work(2.5)
        gc_pause(calc)
        if bad:
            raise SimError("KeyError", "'tax_region'", cause=True,
                           frames=frames("checkout", "pricing/engine_v2beta", 58, "apply_tax",
                                         "rate = TAX_TABLE[order.address['tax_region']]"))
        bug = req.fault.at("exception", "checkout.total")
        if bug:
            raise SimError(*bug["exc"], cause=True, frames=frames("checkout", "pricing/total", 91, "calculate_total",
                                                                  "return sum(Decimal(p) for p in prices) * rate"))
        calc.set(app__order__items=len(items), app__order__total_cents=sum(prices.values()))
    refused = req.fault.at("retry-storm", "inventory")
    timeout = req.fault.at("short-timeout", "checkout>shipping")
    with op.parallel() as branch:
        branch()
        try:
            with_retries(req, op, refused, "inventory", "POST", "/inventory/reserve",
                          lambda attempt: req.http(op, "inventory", "POST", "/inventory/reserve",
                                                   "/inventory/reserve", lambda s: inventory_reserve(req, s, items),
                                                   attempt=attempt))
        except SimError as err:
            if err.http_status != 404:
                raise
            raise SimError("checkout.errors.ReservationError", f"inventory has no stock rows for {', '.join(items)}",
                           fault=True, frames=frames("checkout", "orders", 171, "reserve",
                                                     "raise ReservationError(resp.json()['detail'])")) from None
        branch()
        quote = req.grpc(op, "shipping", "shop.ShippingService", "GetQuote", lambda s: shipping_quote(req, s),
                         timeout=f"{timeout['timeout_ms']}m" if timeout else "5S")
    op.work(0.5)
    if quote is None:
        raise SimError("AttributeError", "'NoneType' object has no attribute 'amount'", fault=True,
                       frames=frames("checkout", "orders", 158, "place_order",
                                     "total = order.subtotal + quote.amount"))
    req.grpc(op, "payment", "shop.PaymentService", "Charge", lambda s: payment_charge(req, s))
    with _pooled(req, op, "checkout", "INSERT", "orders",
                 "INSERT INTO orders (user_id, items, total_cents, shipping_cents) VALUES ($1, $2, $3, $4)") as q:
        q.work(3.5)
        slow = req.fault.at("slow-query", "checkout.insert")
        if slow:
            q.wait(req.rng.uniform(*slow["ms"]))
            req.trace.cause(q)
        q.set(db__response__returned_rows=1)
    op.work(0.8)


def cart_get(req: Request, op: Op) -> list[str]:
    op.work(0.3)
    empty = req.fault.at("empty-cache-entry", "cart.redis")
    with req.db(op, "redis", "GET", None, f"GET cart:{req.user}", db__namespace="1") as cache:
        cache.work(0.3)
        cache.set(db__response__returned_rows=1, app__cache__value_size=0 if empty else req.rng.randint(90, 600))
    if empty:
        req.trace.cause(cache)
        raise SimError("*json.SyntaxError", "unexpected end of JSON input", fault=True,
                       frames=frames("cart", "store/redis", 77, "(*Store).GetCart",
                                     "if err := json.Unmarshal(raw, &cart); err != nil {"))
    op.work(0.3)
    return req.rng.sample(PRODUCTS, req.rng.randint(1, 4))


def inventory_reserve(req: Request, op: Op, items: list[str]) -> None:
    op.work(0.8)
    gc_pause(op)
    zero = req.fault.at("zero-rows", "inventory.stock")
    with _pooled(req, op, "inventory", "SELECT", "stock",
                 "SELECT sku, quantity FROM stock WHERE sku = ANY(?) FOR UPDATE") as q:
        q.work(2.5)
        q.set(db__response__returned_rows=0 if zero else len(items))
    if zero:
        req.trace.cause(q)
        answer(op, 404)
        raise SimError("StockNotFound", "no stock rows", http_status=404)
    slow = req.fault.at("slow-query", "inventory.update")
    with _pooled(req, op, "inventory", "UPDATE", "stock",
                 "UPDATE stock SET quantity = quantity - ? WHERE sku = ? AND quantity >= ?") as q:
        q.work(1.8)
        if slow:
            q.wait(req.rng.uniform(*slow["ms"]))
            req.trace.cause(q)
        q.set(db__response__returned_rows=len(items))
    op.work(0.4)


def shipping_quote(req: Request, op: Op) -> dict | None:
    op.work(0.5)
    gc_pause(op)
    with req.external(op, "api.carrier.example", "POST", "/v1/rates", req.rng.uniform(120, 420),
                      peer__service="carrier-api") as carrier:
        carrier.set(http__response__status_code=200)
    op.work(0.6)
    null = req.fault.at("null-return", "shipping.GetQuote")
    remote = not null and req.rng.random() < 0.03  # no carrier serves the address: no quote, a flat rate
    op.event("message", rpc__message__type="SENT", rpc__message__id=1,
             rpc__message__uncompressed_size=0 if null or remote else req.rng.randint(60, 140))
    if null:
        req.trace.cause(op)
        return None
    return {"amount": None if remote else req.rng.randint(0, 1500), "flat_rate": remote}


def payment_charge(req: Request, op: Op) -> None:
    op.work(1.2)
    gc_pause(op)
    retried = req.rng.random() < 0.02
    if retried:  # the gateway's load balancer drops one now and then; the client retries it
        with req.external(op, "api.cardgateway.example", "POST", "/v1/charges", req.rng.uniform(20, 60),
                          peer__service="card-gateway") as gateway:
            gateway.set(http__response__status_code=502)
            gateway.error("502")
        op.wait(req.rng.uniform(80, 120))
    with req.external(op, "api.cardgateway.example", "POST", "/v1/charges", req.rng.uniform(80, 260),
                      peer__service="card-gateway", attempt=int(retried)) as gateway:
        if req.rng.random() < 0.03:
            gateway.set(http__response__status_code=402)
            gateway.error("402")
            declined = True
        else:
            gateway.set(http__response__status_code=200)
            declined = False
    if declined:
        op.set(rpc__grpc__status_code=9)
        raise SimError("CardDeclined", "card declined", grpc_code=9, http_status=402)
    op.work(0.8)


def recommendation(req: Request, op: Op, sku: str) -> list[str] | None:
    op.work(1.0)
    gc_pause(op)
    with req.db(op, "postgresql", "SELECT", "co_purchases",
                "SELECT other_sku, score FROM co_purchases WHERE sku = $1 ORDER BY score DESC LIMIT 8",
                db__namespace="recs") as q:
        q.work(28, sigma=0.5)
        q.set(db__response__returned_rows=8)
    op.work(4, sigma=0.5)
    bug = req.fault.at("exception", "recommendation.get")
    if bug:
        raise SimError(*bug["exc"], cause=True, frames=frames("recommendation", "ranking", 64, "normalise",
                                                               "return [s / total for s in scores]"))
    if req.fault.at("null-return", "recommendation.get"):
        op.set(http__response__body__size=4)  # "null"
        req.trace.cause(op)
        return None
    if req.rng.random() < 0.05:  # a new product: nobody bought it with anything yet
        op.set(http__response__body__size=2)  # "[]"
        return []
    op.set(http__response__body__size=req.rng.randint(900, 1600))
    return req.rng.sample(PRODUCTS, 6)
