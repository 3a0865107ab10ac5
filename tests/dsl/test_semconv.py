"""dsl.semconv: the table of known keys and deprecated names."""

from __future__ import annotations

from dsl.projection import AttrType
from dsl.semconv import SemconvTable


def test_aliases_current_first():
    t = SemconvTable()
    assert t.aliases("http.response.status_code") == ("http.response.status_code", "http.status_code")
    assert t.aliases("http.status_code") == ("http.response.status_code", "http.status_code")
    assert t.aliases("db.system.name") == ("db.system.name", "db.system")
    assert t.aliases("app.custom") == ("app.custom",)


def test_lookup_types_and_places():
    t = SemconvTable()
    assert t.lookup("gen_ai.response.finish_reasons").type is AttrType.STRING_ARRAY
    assert t.lookup("gen_ai.request.temperature").type is AttrType.DOUBLE
    assert t.lookup("service.name").where == "resource"
    assert t.lookup("exception.type").where == "event:exception"
    assert t.lookup("db.system").key == "db.system.name"
    assert t.is_deprecated("db.statement") and not t.is_deprecated("db.query.text")


def test_every_deprecated_name_maps_to_one_current_key():
    t = SemconvTable()
    for old, new in t.current_of.items():
        assert old not in t.by_key and new in t.by_key


def test_known_namespaces():
    t = SemconvTable()
    assert t.in_known_namespace("http.whatever") and t.in_known_namespace("gen_ai.x")
    assert not t.in_known_namespace("myco.tenant")
