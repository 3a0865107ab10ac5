"""What OpenTelemetry's conventions say about the layer of a root cause: one table, no system's names.

The localizer's evidence says *how* a span is abnormal (it raised, it was
slow, a value was improbable); the span's conventions say *what* it is.
``layer`` combines them, the first that applies:

0. **infrastructure** — the error says the network or the platform failed
   (connection refused or reset, DNS, a pool exhausted, a restart, a rate
   limit): whatever else differs, the platform failed first;
1. **config** — an improbable value of a setting, on the cause or on an
   enclosing span of its service (a flag is evaluated in the handler that
   runs the code path behind it): a version, a feature-flag variant, a model
   request parameter (temperature, top_p, max_tokens, the model), a timeout,
   a sampling rate; or a version or flag value the anomalous spans share
   (attribution);
2. **infrastructure** — what the candidates share is where they run (a node,
   a host: co-located pods slowed together); an HTTP status a proxy or a
   provider gives under load (429, 502, 503, 504);
3. **data** — a database client span (``db.*`` attributes);
4. **semantic** — a generative-AI span (``gen_ai.*``: a model turn, a tool
   call, a retrieval, embeddings, an agent);
5. **code** — an exception raised in the span's own code, or an improbable
   value it returned (a null, an empty answer) that explains a failure;
6. **infrastructure** — slowness nothing else accounts for (resources: CPU,
   network, queueing).

Each rule returns its reason, which goes into the evidence message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DATA_PREFIXES = ("db.",)
SEMANTIC_PREFIXES = ("gen_ai.",)
# settings: a value of one of these that the baseline does not know is a configuration change
CONFIG_KEY = re.compile(
    r"(^|(?<!protocol)\.)(version|feature_flag\..*|flag\..*|timeout.*|.*_timeout|.*\.timeout|sampl(e|ing).*|"
    r"request\.(temperature|top_p|top_k|max_tokens|model|frequency_penalty|presence_penalty|seed|stop_sequences))$"
    r"|^feature_flag\.|^gen_ai\.request\.")
# where a span runs: a value shared by anomalous spans is a place
PLACE_KEYS = ("k8s.node.name", "host.name", "host.id", "k8s.pod.name", "container.id", "cloud.availability_zone",
              "service.instance.id")
INFRA_ERROR = re.compile(
    r"connection ?refused|econnrefused|connection ?reset|econnreset|no route to host|name or service not known|"
    r"nxdomain|getaddrinfo|dns|name resolution|unknown host|pool[^.]{0,40}(limit|timeout|timed out|exhausted|reached)|"
    r"connection is not available|connect ?error|could not connect|failed to connect|unreachable|"
    r"timed out (waiting for|acquiring) (a )?connection|too many connections|restart|oomkilled|out of memory|"
    r"rate limit|too many requests|\b429\b|\b503\b|service unavailable|bad gateway|\b502\b|broken pipe",
    re.IGNORECASE)
INFRA_STATUS = {429, 502, 503, 504}
STATUS_KEYS = ("http.response.status_code", "http.status_code", "rpc.grpc.status_code")


# how a span reports its outcome: an improbable one is an error propagating, not a silent cause
ERROR_REPORT_KEYS = ("error.type", "status", *STATUS_KEYS)
ERROR_EVENT = "exception:"


def is_error_report(key: str) -> bool:
    return key in ERROR_REPORT_KEYS or key.startswith(ERROR_EVENT)


def is_setting(key: str) -> bool:
    return CONFIG_KEY.search(key) is not None


def layer(keys: Iterable[str], *, error: bool, exception: bool, slow: bool, silent: bool = False, detail: str = "",
          abnormal_keys: Iterable[str] = (), shared: Iterable[str] = (),
          numbers: dict[str, float] | None = None) -> tuple[str, str]:
    """(layer, reason) of a candidate: ``keys`` its span attribute keys, ``abnormal_keys`` the
    keys of its (or its explanation's) improbable values, ``shared`` the attribute keys the
    anomalous spans share beyond the usual (attribution), ``detail`` its error's text,
    ``numbers`` its numeric attribute values."""
    keys = set(keys)
    if error and detail and INFRA_ERROR.search(detail):
        return "infrastructure", f"the error is the platform's ({INFRA_ERROR.search(detail).group(0)})"  # type: ignore[union-attr]
    settings = [k for k in abnormal_keys if is_setting(k)]
    if settings:
        return "config", f"{settings[0]} differs from its baseline (a setting)"
    shared_settings = [k for k in shared if is_setting(k)]
    if shared_settings:
        return "config", f"the anomalous spans share a {shared_settings[0]} value (a setting)"
    places = [k for k in shared if k in PLACE_KEYS]
    if places:
        return "infrastructure", f"the anomalous spans share a {places[0]} (co-located)"
    status = next((int(numbers[k]) for k in STATUS_KEYS if numbers and k in numbers), None)
    if error and status in INFRA_STATUS:
        return "infrastructure", f"status {status} (overload or unavailable)"
    if any(k.startswith(DATA_PREFIXES) for k in keys):
        return "data", "a database client span (db.* attributes)"
    if any(k.startswith(SEMANTIC_PREFIXES) for k in keys | set(abnormal_keys)):
        return "semantic", "a generative-AI span (gen_ai.* attributes)"
    if error and exception:
        return "code", "an exception raised in the span's own code"
    if silent:
        return "code", "an improbable value from the span's own code"
    if slow:
        return "infrastructure", "slower than its baseline with nothing in its code or data to account for it"
    if error:
        return "code", "an error in the span's own handling"
    return "", ""
