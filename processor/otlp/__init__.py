"""The OTLP wire: protobuf views of received requests, editing a span's encoded bytes,
framing export payloads without re-encoding spans, OTLP/JSON, and recorded trace files."""
