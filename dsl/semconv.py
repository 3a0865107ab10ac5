"""The OpenTelemetry semantic-convention keys the checker knows: their type,
where they live (span, resource, or an event) and their deprecated names.

Used to type attribute references without annotations, to warn about
misspelled or deprecated keys (with "did you mean"), and to make a rule keyed
on a current name also match spans from instrumentation that still emits the
deprecated one (the compiler COALESCEs both columns).  Not exhaustive: it
covers the namespaces rules are written against; other namespaces (``app.*``,
``myco.*``) are the author's own and are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.projection import AttrType

# short names keep the table below readable
S, INT, D, B, SA = AttrType.STRING, AttrType.INT, AttrType.DOUBLE, AttrType.BOOL, AttrType.STRING_ARRAY


@dataclass(frozen=True, slots=True)
class SemKey:
    key: str
    type: AttrType
    where: str = "span"  # "span" | "resource" | "event:<event name>" | "any"
    deprecated: tuple[str, ...] = ()  # older names of this key, newest first


# (key, type, where, deprecated names)
_TABLE: tuple[tuple[str, AttrType, str, tuple[str, ...]], ...] = (
    # http / url / network
    ("http.request.method", S, "span", ("http.method",)),
    ("http.request.method_original", S, "span", ()),
    ("http.response.status_code", INT, "span", ("http.status_code",)),
    ("http.route", S, "span", ()),
    ("http.request.resend_count", INT, "span", ("http.resend_count",)),
    ("http.request.body.size", INT, "span", ("http.request_content_length",)),
    ("http.response.body.size", INT, "span", ("http.response_content_length",)),
    ("url.full", S, "span", ("http.url",)),
    ("url.path", S, "span", ("http.target",)),
    ("url.query", S, "span", ()),
    ("url.scheme", S, "span", ("http.scheme",)),
    ("server.address", S, "span", ("net.peer.name",)),
    ("server.port", INT, "span", ("net.peer.port",)),
    ("client.address", S, "span", ("http.client_ip",)),
    ("client.port", INT, "span", ()),
    ("network.peer.address", S, "span", ("net.sock.peer.addr",)),
    ("network.peer.port", INT, "span", ("net.sock.peer.port",)),
    ("network.protocol.name", S, "span", ()),
    ("network.protocol.version", S, "span", ("http.flavor",)),
    ("network.transport", S, "span", ("net.transport",)),
    ("user_agent.original", S, "span", ("http.user_agent",)),
    ("error.type", S, "span", ()),
    # database
    ("db.system.name", S, "span", ("db.system",)),
    ("db.query.text", S, "span", ("db.statement",)),
    ("db.query.summary", S, "span", ()),
    ("db.operation.name", S, "span", ("db.operation",)),
    ("db.collection.name", S, "span", ("db.sql.table",)),
    ("db.namespace", S, "span", ("db.name",)),
    ("db.response.status_code", S, "span", ()),
    ("db.response.returned_rows", INT, "span", ()),
    ("db.operation.batch.size", INT, "span", ()),
    ("db.client.connection.pool.name", S, "span", ("db.client.connections.pool.name",)),
    ("db.client.connection.state", S, "span", ()),
    # rpc
    ("rpc.system", S, "span", ()),
    ("rpc.service", S, "span", ()),
    ("rpc.method", S, "span", ()),
    ("rpc.grpc.status_code", INT, "span", ()),
    ("rpc.jsonrpc.error_code", INT, "span", ()),
    # the `message` event of an RPC span: one per message sent or received
    ("rpc.message.type", S, "event:message", ()),
    ("rpc.message.id", INT, "event:message", ()),
    ("rpc.message.uncompressed_size", INT, "event:message", ()),
    ("rpc.message.compressed_size", INT, "event:message", ()),
    # messaging
    ("messaging.system", S, "span", ()),
    ("messaging.destination.name", S, "span", ("messaging.destination",)),
    ("messaging.operation.type", S, "span", ("messaging.operation",)),
    ("messaging.operation.name", S, "span", ()),
    ("messaging.message.id", S, "span", ()),
    ("messaging.batch.message_count", INT, "span", ()),
    ("messaging.consumer.group.name", S, "span", ("messaging.kafka.consumer.group",)),
    # code
    ("code.function.name", S, "span", ("code.function",)),
    ("code.file.path", S, "span", ("code.filepath",)),
    ("code.line.number", INT, "span", ("code.lineno",)),
    ("code.stacktrace", S, "span", ()),
    # exceptions (attributes of the `exception` event)
    ("exception.type", S, "event:exception", ()),
    ("exception.message", S, "event:exception", ()),
    ("exception.stacktrace", S, "event:exception", ()),
    ("exception.escaped", B, "event:exception", ()),
    # generative AI / agents
    ("gen_ai.operation.name", S, "span", ()),
    ("gen_ai.provider.name", S, "span", ("gen_ai.system",)),
    ("gen_ai.request.model", S, "span", ()),
    ("gen_ai.response.model", S, "span", ()),
    ("gen_ai.request.temperature", D, "span", ()),
    ("gen_ai.request.top_p", D, "span", ()),
    ("gen_ai.request.top_k", D, "span", ()),
    ("gen_ai.request.max_tokens", INT, "span", ()),
    ("gen_ai.request.frequency_penalty", D, "span", ()),
    ("gen_ai.request.presence_penalty", D, "span", ()),
    ("gen_ai.request.seed", INT, "span", ()),
    ("gen_ai.request.stop_sequences", SA, "span", ()),
    ("gen_ai.response.id", S, "span", ()),
    ("gen_ai.response.finish_reasons", SA, "span", ()),
    ("gen_ai.usage.input_tokens", INT, "span", ("gen_ai.usage.prompt_tokens",)),
    ("gen_ai.usage.output_tokens", INT, "span", ("gen_ai.usage.completion_tokens",)),
    ("gen_ai.tool.name", S, "span", ()),
    ("gen_ai.tool.type", S, "span", ()),
    ("gen_ai.tool.description", S, "span", ()),
    ("gen_ai.tool.call.id", S, "span", ()),
    ("gen_ai.tool.call.arguments", S, "span", ()),
    ("gen_ai.tool.call.result", S, "span", ()),
    ("gen_ai.agent.id", S, "span", ()),
    ("gen_ai.agent.name", S, "span", ()),
    ("gen_ai.conversation.id", S, "span", ()),
    ("gen_ai.output.type", S, "span", ()),
    # feature flags
    # feature flags: on the `feature_flag.evaluation` event (current) or the span
    ("feature_flag.key", S, "any", ()),
    ("feature_flag.result.variant", S, "any", ("feature_flag.variant",)),
    ("feature_flag.result.reason", S, "any", ("feature_flag.evaluation.reason",)),
    ("feature_flag.provider.name", S, "any", ("feature_flag.provider_name",)),
    ("feature_flag.context.id", S, "any", ()),
    ("feature_flag.set.id", S, "any", ()),
    ("feature_flag.version", S, "any", ()),
    # peer / misc span attributes
    ("peer.service", S, "span", ()),
    ("thread.name", S, "span", ()),
    ("enduser.id", S, "span", ()),
    # resource
    ("service.name", S, "resource", ()),
    ("service.namespace", S, "resource", ()),
    ("service.version", S, "resource", ()),
    ("service.instance.id", S, "resource", ()),
    ("deployment.environment.name", S, "resource", ("deployment.environment",)),
    ("telemetry.sdk.name", S, "resource", ()),
    ("telemetry.sdk.language", S, "resource", ()),
    ("telemetry.sdk.version", S, "resource", ()),
    ("host.name", S, "resource", ()),
    ("host.id", S, "resource", ()),
    ("host.arch", S, "resource", ()),
    ("os.type", S, "resource", ()),
    ("process.pid", INT, "resource", ()),
    ("process.runtime.name", S, "resource", ()),
    ("process.runtime.version", S, "resource", ()),
    ("container.id", S, "resource", ()),
    ("container.name", S, "resource", ()),
    ("container.image.name", S, "resource", ()),
    ("k8s.namespace.name", S, "resource", ()),
    ("k8s.pod.name", S, "resource", ()),
    ("k8s.pod.uid", S, "resource", ()),
    ("k8s.node.name", S, "resource", ()),
    ("k8s.deployment.name", S, "resource", ()),
    ("k8s.container.name", S, "resource", ()),
    ("k8s.container.restart_count", INT, "resource", ()),
    ("k8s.cluster.name", S, "resource", ()),
    ("cloud.provider", S, "resource", ()),
    ("cloud.region", S, "resource", ()),
    ("cloud.availability_zone", S, "resource", ()),
    ("cloud.platform", S, "resource", ()),
    ("faas.name", S, "resource", ()),
)


class SemconvTable:
    """Lookup over the table; built on demand (nothing is built at import)."""

    def __init__(self) -> None:
        self.by_key: dict[str, SemKey] = {}
        self.current_of: dict[str, str] = {}  # deprecated name -> current key
        for key, typ, where, old in _TABLE:
            self.by_key[key] = SemKey(key, typ, where, old)
            for name in old:
                self.current_of[name] = key
        self.namespaces = {k.split(".")[0] for k in (*self.by_key, *self.current_of)}

    def lookup(self, key: str) -> SemKey | None:
        """The entry for a current key, or for the current key a deprecated
        name was replaced by."""
        return self.by_key.get(key) or self.by_key.get(self.current_of.get(key, ""))

    def is_deprecated(self, key: str) -> bool:
        return key in self.current_of

    def aliases(self, key: str) -> tuple[str, ...]:
        """All names one value may be found under: current first, then older."""
        entry = self.lookup(key)
        if entry is None:
            return (key,)
        return (entry.key, *entry.deprecated)

    def in_known_namespace(self, key: str) -> bool:
        return key.split(".")[0] in self.namespaces

    def known_keys(self) -> list[str]:
        return list(self.by_key)
