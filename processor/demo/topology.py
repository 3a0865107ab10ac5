"""The demo shop's services, their pods and nodes, and the OTLP resource of each pod.

Every service runs as one to three pods of a Kubernetes deployment spread over
four nodes; each pod is its own resource (service.name, service.version,
k8s.pod.name, k8s.node.name, host.name, ...), as separate processes would
report.  A rollout adds a canary pod with a new ``service.version``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from processor.otlp.spanedit import key_values

NODES = ("ip-10-0-1-17.ec2.internal", "ip-10-0-1-42.ec2.internal", "ip-10-0-2-9.ec2.internal",
         "ip-10-0-2-133.ec2.internal")
ZONES = {NODES[0]: "us-east-1a", NODES[1]: "us-east-1a", NODES[2]: "us-east-1b", NODES[3]: "us-east-1b"}

# service -> (version, runtime, pods)
SERVICES: dict[str, tuple[str, str, int]] = {
    "frontend": ("2.14.0", "nodejs", 3),
    "catalog": ("4.2.1", "python", 2),
    "cart": ("1.9.3", "go", 2),
    "checkout": ("3.7.0", "python", 2),
    "inventory": ("2.3.5", "java", 2),
    "payment": ("1.12.2", "go", 2),
    "shipping": ("0.18.4", "python", 1),
    "assistant": ("0.31.0", "python", 2),
    "recommendation": ("1.4.0", "python", 1),
}

_LANGUAGES = {"nodejs": ("nodejs", "opentelemetry", "1.28.0"), "python": ("python", "opentelemetry", "1.29.0"),
              "go": ("go", "opentelemetry", "1.33.0"), "java": ("java", "opentelemetry", "1.45.0")}


@dataclass(eq=False)
class Pod:
    """One running instance of a service; its resource is what every span it emits carries."""

    service: str
    version: str
    name: str
    node: str
    runtime: str

    def resource(self) -> Resource:
        language, sdk, sdk_version = _LANGUAGES[self.runtime]
        return Resource(attributes=key_values({
            "service.name": self.service,
            "service.namespace": "shop",
            "service.version": self.version,
            "service.instance.id": self.name,
            "deployment.environment.name": "production",
            "telemetry.sdk.language": language,
            "telemetry.sdk.name": sdk,
            "telemetry.sdk.version": sdk_version,
            "k8s.cluster.name": "shop-prod-use1",
            "k8s.namespace.name": "shop",
            "k8s.deployment.name": self.service,
            "k8s.pod.name": self.name,
            "k8s.node.name": self.node,
            "host.name": self.node,
            "cloud.provider": "aws",
            "cloud.availability_zone": ZONES[self.node],
        }))


def _suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


@dataclass
class Cluster:
    """The pods of every service; ``pick`` routes a request to one of them."""

    rng: random.Random
    pods: dict[str, list[Pod]] = field(default_factory=dict)
    rollout: Pod | None = None     # a healthy canary taking a share of its service's requests
    rollout_share: float = 0.0

    @classmethod
    def build(cls, seed: int) -> Cluster:
        rng = random.Random(f"cluster-{seed}")
        cluster = cls(rng)
        for i, (service, (version, runtime, count)) in enumerate(SERVICES.items()):
            replica_set = _suffix(rng, 9)
            cluster.pods[service] = [
                Pod(service, version, f"{service}-{replica_set}-{_suffix(rng, 5)}", NODES[(i + k) % len(NODES)],
                    runtime) for k in range(count)]
        return cluster

    def pick(self, service: str, rng: random.Random) -> Pod:
        if self.rollout is not None and self.rollout.service == service and rng.random() < self.rollout_share:
            return self.rollout
        return rng.choice(self.stable(service))

    def roll_out(self, service: str, rng: random.Random) -> None:
        """A healthy release of ``service`` (its next patch version) on a canary pod taking 20-40% of
        its requests: deployments happen whether or not something else goes wrong."""
        major, minor, patch = self.pods[service][0].version.split(".")
        self.rollout = self.canary(service, f"{major}.{minor}.{int(patch) + 1}")
        self.rollout_share = rng.uniform(0.2, 0.4)

    def stable(self, service: str) -> list[Pod]:
        """The pods of the service's current release (a canary is routed to explicitly)."""
        pods = self.pods[service]
        return [p for p in pods if p.version == pods[0].version] or pods

    def canary(self, service: str, version: str) -> Pod:
        """A pod of a new release of ``service`` (made once, on a node of the service's first pod)."""
        for pod in self.pods[service]:
            if pod.version == version:
                return pod
        first = self.pods[service][0]
        pod = Pod(service, version, f"{service}-{_suffix(self.rng, 9)}-{_suffix(self.rng, 5)}",
                  NODES[(NODES.index(first.node) + 1) % len(NODES)], first.runtime)
        self.pods[service].append(pod)
        return pod
