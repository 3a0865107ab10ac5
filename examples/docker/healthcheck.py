"""The container image's HEALTHCHECK: probe the address the running ``faulttrace serve`` was configured with.

Docker runs this inside the container.  It reads the command line of the
serving process (PID 1, the image's ENTRYPOINT, or ``--pid``; else the first
``faulttrace serve`` process it finds), loads the same
configuration ``serve`` loaded (``--config``, ``--set``, ``--*-port``, with the
same ``${env:…}`` expansion) and probes, without any proxy:

* each ``health_check`` extension listed in ``service.extensions``:
  ``GET http://<endpoint><path>``, healthy on 200 (503 before the pipeline has
  started and from the moment it stops);
* otherwise ``GET /healthz`` on the metrics endpoint
  (``service.telemetry.metrics``), healthy on 200.

A wildcard listen address (``0.0.0.0``, ``::``) is probed on loopback.  With
neither endpoint configured there is nothing to ask: it says so and reports
healthy, since a container is not broken for having no probe.

Exit status as Docker reads it: 0 healthy, 1 unhealthy (with the reason on stderr).

    python healthcheck.py [--pid N] [--timeout S]
    python healthcheck.py -- serve --config FILE ...   (the arguments of serve, without reading a process)
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "[::1]", "": "127.0.0.1"}


@dataclass(frozen=True)
class Probe:
    what: str  # the configuration key it comes from, for the message
    url: str


def _argv(pid: int | str) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_serve(argv: list[str]) -> bool:
    return "serve" in argv and any(Path(a).name == "faulttrace" for a in argv[:argv.index("serve")])


def serve_arguments(pid: int) -> list[str]:
    """The arguments after ``serve`` of process ``pid`` or, when that is not ``faulttrace serve``
    (``docker run --init`` puts an init process first), of the first process that is."""
    candidates = [str(pid)] + sorted((p.name for p in Path("/proc").iterdir() if p.name.isdigit()), key=int)
    for candidate in candidates:
        try:
            argv = _argv(candidate)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if _is_serve(argv):
            return argv[argv.index("serve") + 1:]
    raise ValueError(f"no `faulttrace serve` process (process {pid} is: {' '.join(_argv(pid))[:200]})")


def _url(endpoint: str, path: str) -> str:
    host, _, port = endpoint.rpartition(":")
    host = WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probes(args: Sequence[str]) -> list[Probe]:
    """What to probe for ``faulttrace serve ARGS``, read from the configuration those arguments load."""
    from processor.cli import build_parser
    from processor.config import load_config
    from processor.confmap import component_type
    from processor.extensions.config import HealthCheckConfig

    parsed = build_parser().parse_args(["serve", *args])
    ports = {"grpc": parsed.grpc_port, "http": parsed.http_port, "metrics": parsed.metrics_port}
    config = load_config(parsed.config, parsed.set or (), ports)
    found = []
    for cid in config.service.extensions:
        if component_type(cid) == "health_check":
            check = HealthCheckConfig.model_validate(config.extensions.get(cid) or {})
            found.append(Probe(f"extensions.{cid}", _url(check.endpoint, check.path)))
    if not found and (endpoint := config.service.telemetry.metrics.endpoint):
        found.append(Probe("service.telemetry.metrics", _url(endpoint, "/healthz")))
    return found


def check(probe: Probe, timeout: float) -> str | None:
    """None when healthy, else why not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # whatever http_proxy says
    try:
        with opener.open(probe.url, timeout=timeout) as response:
            return None if response.status == 200 else f"{probe.url} answered {response.status}"
    except urllib.error.HTTPError as err:
        return f"{probe.url} ({probe.what}) answered {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{probe.url} ({probe.what}): {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, default=1, help="the serving process (default 1: the ENTRYPOINT)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds per request (default 4)")
    parser.add_argument("serve", nargs=argparse.REMAINDER,
                        help="after --: serve's arguments, instead of reading them from --pid")
    args = parser.parse_args(argv)
    try:
        serve_args = args.serve[1:] if args.serve[:1] == ["--"] else args.serve
        if serve_args[:1] == ["serve"]:
            serve_args = serve_args[1:]
        if not args.serve:
            serve_args = serve_arguments(args.pid)
        targets = probes(serve_args)
    except SystemExit:
        print("healthcheck: serve's arguments do not parse", file=sys.stderr)
        return 1
    except Exception as err:  # any configuration or /proc problem is an unhealthy verdict, said in one line
        print(f"healthcheck: {err}", file=sys.stderr)
        return 1
    if not targets:
        print("healthcheck: no health_check extension and no metrics endpoint configured; nothing to probe")
        return 0
    failures = [reason for probe in targets if (reason := check(probe, args.timeout)) is not None]
    for reason in failures:
        print(f"healthcheck: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
