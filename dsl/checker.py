"""Semantic checks: AST -> typed IR (``dsl.ir``) plus every diagnostic.

Resolves names (span variables, consts, lists, macros, enum values), types
each expression, checks arity, metadata and attribute keys (against
``dsl.semconv``), expands macros and semconv aliases, and warns about unused
definitions and rules that provably never fire.  It collects all problems of
all files and never raises midway: an ill-typed expression gets ``Ty.ERROR``,
which silences follow-on errors about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dsl import ast, ir
from dsl.diagnostics import Diagnostic, SourceSpan, did_you_mean
from dsl.faulttree import DEFAULT_PRIOR, PROBE, condition_id, matters, never_fires, substitute
from dsl.ir import Ty
from dsl.limits import MAX_NESTING, nesting_diagnostic
from dsl.neverfires import contradiction
from dsl.projection import AttrRef, AttrSource, AttrType
from dsl.semconv import SemconvTable

if TYPE_CHECKING:
    import networkx as nx

_RULE_ID = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
_ANNOTATIONS = {t.value: t for t in AttrType if t is not AttrType.PRESENT}
_ATTR_TO_TY = {
    AttrType.STRING: Ty.STRING, AttrType.INT: Ty.INT, AttrType.DOUBLE: Ty.DOUBLE, AttrType.BOOL: Ty.BOOL,
    AttrType.STRING_ARRAY: Ty.STRING_ARRAY, AttrType.INT_ARRAY: Ty.INT_ARRAY, AttrType.DOUBLE_ARRAY: Ty.DOUBLE_ARRAY,
    AttrType.PRESENT: Ty.BOOL, AttrType.ANY: Ty.STRING,
}
# value functions: name -> (parameter kinds, `?` optional; result type; example)
FUNCTIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "len": (("string|array",), "int", 'len(s.attr["gen_ai.response.finish_reasons"]) > 1'),
    "lower": (("string",), "string", 'lower(s.name) contains "timeout"'),
    "upper": (("string",), "string", 'upper(s.attr["http.request.method"]) = "POST"'),
    "substr": (("string", "int", "int?"), "string", 'substr(s.name, 1, 4) = "GET "'),
    "split": (("string", "string"), "string[]", 'split(s.attr["app.path"], "/") contains "admin"'),
    "json": (("string", "string"), "string", 'json(s.attr["app.result"], "$.rows") = "0"'),
}
# what an un-annotated attribute of unknown type becomes next to a literal
_INFER_FROM = {Ty.STRING: AttrType.STRING, Ty.INT: AttrType.DOUBLE, Ty.DOUBLE: AttrType.DOUBLE, Ty.BOOL: AttrType.BOOL}
_LITERAL_TY = {"string": Ty.STRING, "int": Ty.INT, "double": Ty.DOUBLE, "bool": Ty.BOOL, "duration": Ty.DURATION}
_ORDERED = {Ty.INT, Ty.DOUBLE, Ty.DURATION, Ty.TIME, Ty.STRING}
# constructs Python's `re` accepts and RE2 refuses, named here for a clearer
# message; the engine itself (via ``RegexValidator``) has the last word
_RE2_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?>|\(\?\(|\(\?P=|(?<!\\)(?:\\\\)*\\[1-9]")
_META_KEYS = ("title", "layer", "severity", "confidence", "tags", "references", "description")
_REQUIRED_META = ("title", "layer", "severity", "confidence")


@dataclass
class CheckResult:
    rules: list[ir.CheckedRule]
    diagnostics: list[Diagnostic]
    trees: list[ir.CheckedTree] = field(default_factory=list)
    houses: list[ir.HouseEvent] = field(default_factory=list)  # every house event with a span condition

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


RegexValidator = Callable[[str], str]  # pattern -> problem ('' if fine)


def check(files: Iterable[ast.File], regex_validator: RegexValidator | None = None) -> CheckResult:
    """Check a whole rule set (definitions are shared across its files).

    ``regex_validator`` asks the regex engine that will run the patterns
    (RE2 inside DuckDB, see ``dsl.api``) whether it accepts one; without it
    only RE2's known refusals and general syntax are checked."""
    return _Checker(list(files), regex_validator).run()


@dataclass
class _Scope:
    """Span variables visible at a point, and macro parameters."""

    vars: dict[str, str] = field(default_factory=dict)  # name in the source -> name in the IR
    params: dict[str, ir.Node | str] = field(default_factory=dict)  # str = a span variable (IR name)
    used: set[str] = field(default_factory=set)
    anchor: str = ""  # the rule's first variable: `span v` and `trace.x` are of its trace
    taken: set[str] = field(default_factory=set)  # IR names bound anywhere in the rule
    events: set[str] = field(default_factory=set)  # IR names of event variables (`event e of s`): not spans

    def child(self) -> _Scope:
        return _Scope(dict(self.vars), dict(self.params), self.used, self.anchor, self.taken, self.events)


class _Checker:
    def __init__(self, files: list[ast.File], regex_validator: RegexValidator | None = None) -> None:
        self.files = files
        self.regex_validator = regex_validator
        self.regex_problems: dict[str, str] = {}  # asking the engine costs ~3 ms; a library repeats its patterns
        self.semconv = SemconvTable()
        self.diags: list[Diagnostic] = []
        self.macros: dict[str, ast.MacroDef] = {}
        self.lists: dict[str, ast.ListDef] = {}
        self.consts: dict[str, ast.ConstDef] = {}
        self.used_defs: set[str] = set()
        self.macro_stack: list[str] = []
        self.definition_stack: list[str] = []  # consts and lists being evaluated
        self.error_count = 0  # errors so far: a piece that counts more after checking than before has failed
        # levels of the expression being lowered, macros expanded: the parser
        # bounds the source's nesting, this bounds what macros make of it
        self.depth = 0
        self.cut_short = False  # an expansion was refused: which definitions are used is not known
        # the quantifiers of the rule being checked, as lowered (by ``id`` of the AST node), for `explains`
        self.lowered: dict[int, ir.Node] = {}
        self.grouped_ok: set[int] = set()  # grouped aggregates (`by`) compared, as they must be

    def _report(self, diag: Diagnostic) -> None:
        self.diags.append(diag)
        self.error_count += diag.is_error

    def error(self, code: str, message: str, span: SourceSpan, *hints: str, label: str = "") -> None:
        self._report(Diagnostic(code, message, span, tuple(h for h in hints if h), label))

    # ---- driver ---------------------------------------------------------------

    def run(self) -> CheckResult:
        self._collect_definitions()
        rules: list[ir.CheckedRule] = []
        seen_ids: dict[str, ast.Rule] = {}
        for f in self.files:
            for item in f.items:
                if isinstance(item, ast.Rule):
                    if item.id in seen_ids:
                        first = seen_ids[item.id].id_span
                        self.error("E015", f"duplicate rule id `{item.id}`", item.id_span, _first_defined(first))
                    seen_ids.setdefault(item.id, item)
                    checked = self._rule(item)
                    if checked is not None:
                        rules.append(checked)
        trees, houses = _TreeChecker(self, seen_ids, {r.meta.id: r.meta for r in rules}).run()
        # definitions no rule uses are still checked
        for name, const in self.consts.items():
            self._defining(name, lambda: self._const(const))
        for name, lst in self.lists.items():
            self._defining(name, lambda: ir.Const(self._list_items(lst.value), Ty.LIST))
        self._unused_definitions()
        # a macro body reached through several calls reports once
        unique = list(dict.fromkeys(self.diags))
        return CheckResult(rules, unique, trees, houses)

    def _collect_definitions(self) -> None:
        seen: dict[str, SourceSpan] = {}
        for f in self.files:
            for item in f.items:
                if isinstance(item, (ast.Rule, ast.Tree, ast.EventDef, ast.BasicDef, ast.HouseDef)):
                    continue
                if item.name in seen:
                    first = seen[item.name]
                    self.error("E016", f"`{item.name}` is already defined", item.name_span, _first_defined(first))
                    continue
                seen[item.name] = item.name_span
                if isinstance(item, ast.MacroDef):
                    self.macros[item.name] = item
                elif isinstance(item, ast.ListDef):
                    self.lists[item.name] = item
                else:
                    self.consts[item.name] = item

    def _unused_definitions(self) -> None:
        if self.cut_short:
            return
        for kind, table in (("macro", self.macros), ("list", self.lists), ("const", self.consts)):
            for name, d in table.items():
                if name not in self.used_defs:
                    self.error("W003", f"{kind} `{name}` is never used", d.name_span, "remove it, or use it in a rule")

    # ---- rules ----------------------------------------------------------------

    def _rule(self, rule: ast.Rule) -> ir.CheckedRule | None:
        before = self.error_count
        if not _RULE_ID.fullmatch(rule.id):
            self.error("E033", f"invalid rule id `{rule.id}`", rule.id_span,
                       "ids are lowercase dotted names such as `code.deepest_exception`")
        meta = self._meta(rule)
        if not rule.matches:
            self.error("E035", f"rule `{rule.id}` has no `match` clause", rule.id_span, "add e.g. `match span s where s.status = error`")
            return None
        for extra in rule.matches[1:]:
            self.error("E032", "a rule has one `match` clause", extra.span, "join the conditions with `and`")
        for extra in rule.blames[1:]:
            self.error("E032", "a rule has one `blame` clause", extra.span)
        for extra in rule.messages[1:]:
            self.error("E032", "a rule has one `message` clause", extra.span)
        match = rule.matches[0]
        scope = _Scope()
        self.lowered.clear()
        rels = [self._binding(b, scope) for b in match.bindings]
        where = self._condition(match.where, scope) if match.where is not None else None
        blame = self._blame(rule, match, scope)
        explains = self._explains(rule, match, scope, blame)
        message = self._message(rule, scope)
        self._unused_vars(match, scope)
        if where is not None:
            self._never_fires(where, match.where.span)  # type: ignore[union-attr]
        if meta is None or self.error_count > before:
            return None
        return ir.CheckedRule(meta, tuple(r for r in rels if r is not None), where, blame, message, rule.span, explains)

    def _meta(self, rule: ast.Rule) -> ir.RuleMeta | None:
        values, ok = self._meta_fields(rule.meta, _META_KEYS)
        for key in _REQUIRED_META:
            if key not in values:
                example = {"title": '"Deepest erroring span"', "layer": "code", "severity": "high", "confidence": "0.8"}[key]
                self.error("E030", f"rule `{rule.id}` is missing `{key}`", rule.id_span, f"add `{key} {example}`")
                ok = False
        if not ok:
            return None
        return ir.RuleMeta(
            id=rule.id, title=str(values["title"]), layer=str(values["layer"]), severity=str(values["severity"]),
            confidence=float(values["confidence"]),  # type: ignore[arg-type]
            tags=tuple(values.get("tags", ())), references=tuple(values.get("references", ())),  # type: ignore[arg-type]
            description=str(values.get("description", "")),
        )

    def _meta_fields(self, meta: Iterable[ast.Meta], keys: tuple[str, ...],
                     owner: str = "") -> tuple[dict[str, object], bool]:
        """The metadata fields of a rule or a tree, and whether every one is
        known and valid; ``keys`` are the fields it may have, ``owner`` ends
        the message about an unknown one (e.g. `` for a tree``)."""
        values: dict[str, object] = {}
        ok = True
        for m in meta:
            if m.key not in keys:
                # a misspelt clause parses as a metadata field (`explain f`)
                clauses = ("match", "blame", "explains", "message") if not owner else ("top", "cause")
                self.error("E031", f"unknown metadata field `{m.key}`{owner}", m.key_span,
                           *(did_you_mean(m.key, keys) or did_you_mean(m.key, clauses)), f"fields: {', '.join(keys)}")
                ok = False
                continue
            if m.key in values:
                self.error("E032", f"duplicate metadata field `{m.key}`", m.key_span)
                continue
            value = self._meta_value(m)
            if value is None:
                ok = False
            values[m.key] = value
        return values, ok

    def _meta_value(self, m: ast.Meta) -> object:
        v = m.value
        word = v.name if isinstance(v, ast.Name) else v.value if isinstance(v, ast.Literal) and v.kind == "string" else None
        if m.key in ("layer", "severity"):
            allowed = ir.LAYERS if m.key == "layer" else tuple(ir.SEVERITIES)
            if word in allowed:
                return word
            self.error("E031", f"invalid {m.key} `{word if word is not None else '...'}`", v.span,
                       *did_you_mean(str(word), allowed), f"one of: {', '.join(allowed)}")
            return None
        if m.key == "confidence":
            if isinstance(v, ast.Literal) and v.kind in ("int", "double") and 0 <= float(v.value) <= 1:  # type: ignore[arg-type]
                return float(v.value)  # type: ignore[arg-type]
            self.error("E031", "confidence must be a number between 0 and 1", v.span, "e.g. `confidence 0.8`")
            return None
        if m.key in ("tags", "references"):
            if isinstance(v, ast.ListLit) and all(isinstance(i, ast.Literal) and i.kind == "string" for i in v.items):
                return tuple(i.value for i in v.items)  # type: ignore[union-attr]
            self.error("E031", f"{m.key} must be a list of strings", v.span, f'e.g. `{m.key} ["a", "b"]`')
            return None
        if isinstance(v, ast.Literal) and v.kind == "string":
            return v.value
        self.error("E031", f"{m.key} must be a string", v.span)
        return None

    def _binding(self, b: ast.Binding, scope: _Scope) -> ir.Rel | None:
        if b.var == "trace":
            self.error("E017", "`trace` is reserved for trace intrinsics", b.var_span, "choose another variable name")
            return None
        if b.var in scope.vars or b.var in scope.params:
            self.error("E017", f"variable `{b.var}` is already bound", b.var_span, "choose another variable name")
            return None
        other = b.other
        if b.relation != "span":
            other = self._span_var(b.other, b.other_span or b.span, scope, f"`{b.relation.replace('_', ' ')} ... of`")  # type: ignore[assignment]
            if other is None:
                return None
        else:
            # `span v` after the first variable ranges over the same trace
            other = scope.anchor
        # a name reused in another quantifier or a macro body gets a fresh IR
        # name, so SQL aliases never collide
        name, n = b.var, 1
        while name in scope.taken:
            n += 1
            name = f"{b.var}_{n}"
        scope.taken.add(name)
        scope.vars[b.var] = name
        scope.anchor = scope.anchor or name
        if b.relation == "event":
            scope.events.add(name)
        return ir.Rel(name, b.relation, other or "")

    def _span_var(self, name: str, span: SourceSpan, scope: _Scope, use: str) -> str | None:
        """``_var_ref`` for a place that needs a span: an event variable there is E073."""
        var = self._var_ref(name, span, scope)
        if var is not None and var in scope.events:
            self.error("E073", f"`{name}` is an event, not a span: {use} needs a span", span,
                       f"events have `{name}.name`, `{name}.time` and `{name}.attr[\"k\"]`; "
                       f"relate the span they belong to instead")
            return None
        return var

    def _var_ref(self, name: str, span: SourceSpan, scope: _Scope) -> str | None:
        """Resolve a span-variable name (through macro parameters) to its IR name."""
        target = scope.params[name] if name in scope.params else scope.vars.get(name)
        if isinstance(target, str):
            scope.used.add(target)
            return target
        if name in scope.params:
            self.error("E019", f"macro parameter `{name}` is not a span variable here", span,
                       "pass a span variable, e.g. `is_db(s)`")
            return None
        self.error("E010", f"unknown span variable `{name}`", span, *did_you_mean(name, scope.vars),
                   "variables are bound by `match span v`, `child v of w`, ...")
        return None

    def _blame(self, rule: ast.Rule, match: ast.Match, scope: _Scope) -> str:
        top = [b.var for b in match.bindings]
        if not rule.blames:
            return top[0] if top else ""
        b = rule.blames[0]
        if b.var in top and scope.vars.get(b.var) in scope.events:
            self._span_var(b.var, b.span, scope, "`blame`")
            return top[0]
        if b.var not in top:
            self.error("E018", f"cannot blame `{b.var}`: not a variable of `match`", b.span, *did_you_mean(b.var, top),
                       f"blame one of: {', '.join(top)}")
            return top[0] if top else ""
        scope.used.add(b.var)
        return b.var

    def _explains(self, rule: ast.Rule, match: ast.Match, scope: _Scope, blame: str) -> tuple[ir.Explained, ...]:
        """The spans ``explains`` names: variables of ``match``, or bound by a
        quantifier of its condition (not under ``not``, not in an aggregated
        value or a macro's argument: there, the spans a firing rule explains
        are not defined)."""
        for extra in rule.explains[1:]:
            self.error("E032", "a rule has one `explains` clause", extra.span, "name every span in one: `explains f, g`")
        if not rule.explains:
            return ()
        top = {b.var: scope.vars[b.var] for b in match.bindings if scope.vars.get(b.var) is not None}
        bound = _quantified(match.where) if match.where is not None else {}
        out: list[ir.Explained] = []
        seen: set[str] = set()
        for name in rule.explains[0].vars:
            if name.name in seen:
                self.error("E032", f"`{name.name}` is named twice in `explains`", name.span, "name each span once")
                continue
            seen.add(name.name)
            if name.name == blame:
                self.error("E071", f"`{name.name}` is the span this rule blames: it cannot explain itself", name.span,
                           "`blame` names the cause, `explains` the spans that only followed from it, e.g. a later failing sibling",
                           label="the blamed span")
                continue
            if name.name in top and top[name.name] in scope.events:
                self._span_var(name.name, name.span, scope, "`explains`")
                continue
            if name.name in top:
                scope.used.add(top[name.name])
                out.append(ir.Explained(top[name.name]))
                continue
            found = bound.get(name.name, [])
            if not found:
                self.error("E070", f"`explains` names no span variable of this rule: `{name.name}`", name.span,
                           *did_you_mean(name.name, [*top, *bound]),
                           "name a variable of `match` or one bound by `exists(...)` in its condition")
                continue
            if len(found) > 1:
                self.error("E072", f"cannot explain `{name.name}`: several quantifiers bind it", name.span,
                           "give the one whose spans the rule explains a name of its own")
                continue
            path, problem = found[0]
            if problem:
                self.error("E072", f"cannot explain `{name.name}`: it is bound {_UNNAMEABLE[problem][0]}", name.span,
                           _UNNAMEABLE[problem][1])
                continue
            lowered = [self.lowered.get(id(q)) for q in path]
            if isinstance(lowered[-1], ir.Quant) and lowered[-1].rel.relation == "event":
                self.error("E073", f"`{name.name}` is an event, not a span: `explains` needs a span", name.span,
                           "a rule explains spans; name the span the event belongs to")
                continue
            if all(isinstance(q, ir.Quant) for q in lowered):
                out.append(ir.Explained(lowered[-1].rel.var, tuple(lowered)))  # type: ignore[union-attr,arg-type]
        return tuple(out)

    def _message(self, rule: ast.Rule, scope: _Scope) -> tuple[str | ir.Node, ...]:
        if not rule.messages:
            return (rule.id,)
        parts: list[str | ir.Node] = []
        for p in rule.messages[0].parts:
            if isinstance(p, str):
                parts.append(p)
                continue
            node = self._expr(p.expr, scope)
            if node.ty is Ty.LIST:
                self.error("E034", "a list cannot be interpolated", p.span)
            parts.append(node)
        return tuple(parts)

    def _unused_vars(self, match: ast.Match, scope: _Scope) -> None:
        for b in match.bindings[1:]:
            if b.var not in scope.used:
                self.error("W005", f"variable `{b.var}` is bound but never used", b.var_span,
                           "each extra variable multiplies the rows a rule inspects")

    # ---- expressions ------------------------------------------------------------

    def _condition(self, e: ast.Expr, scope: _Scope) -> ir.Node:
        node = self._expr(e, scope, AttrType.BOOL)  # an attribute alone as a condition is a bool
        if node.ty not in (Ty.BOOL, Ty.ERROR):
            self.error("E023", f"condition must be a boolean, found {node.ty}", e.span,
                       "compare it, e.g. `... > 0`, or test it with `exists(...)`")
            return ir.Const(False, Ty.ERROR)
        return node

    def _expr(self, e: ast.Expr, scope: _Scope, want: AttrType | None = None) -> ir.Node:
        if self.depth >= MAX_NESTING:
            # the parser refused deeper source: only expanding macros (or consts) gets here
            self._too_deep(e.span)
            return ir.Const(None, Ty.ERROR)
        self.depth += 1
        try:
            return self._lower(e, scope, want)
        finally:
            self.depth -= 1

    def _too_deep(self, span: SourceSpan) -> None:
        self.cut_short = True
        self._report(nesting_diagnostic(span, "expression nested too deeply once macros are expanded",
                                        "macros expand inline: a chain of macros calling macros nests as deep as "
                                        "all their bodies together", label=""))

    def _lower(self, e: ast.Expr, scope: _Scope, want: AttrType | None) -> ir.Node:
        match e:
            case ast.Literal():
                return ir.Const(e.value, _LITERAL_TY[e.kind])
            case ast.ListLit():
                items = self._list_items(e)
                return ir.Const(items, Ty.LIST)
            case ast.Name():
                return self._name(e, scope)
            case ast.Field():
                return self._field(e, scope)
            case ast.Attr():
                return self._attr(e, scope, want)
            case ast.Unary(op="not"):
                return ir.Not(self._condition(e.operand, scope))
            case ast.Unary(op="-"):
                inner = self._expr(e.operand, scope)
                if inner.ty not in (Ty.INT, Ty.DOUBLE, Ty.DURATION, Ty.ERROR):
                    self.error("E022", f"cannot negate a {inner.ty}", e.span)
                    return ir.Const(None, Ty.ERROR)
                if isinstance(inner, ir.Const):
                    return ir.Const(-inner.value, inner.ty)  # type: ignore[operator]
                return ir.Negate(inner, inner.ty)
            case ast.Logical():
                flat: list[ir.Node] = []
                cls = ir.And if e.op == "and" else ir.Or
                for item in e.items:
                    it = self._condition(item, scope)
                    flat += it.items if isinstance(it, cls) else [it]
                return cls(tuple(flat))
            case ast.Binary(op="+" | "-" | "*" | "/" | "%"):
                return self._arith(e, scope)
            case ast.Binary():
                return self._comparison(e, scope)
            case ast.Call():
                return self._call(e, scope)
            case ast.Order():
                return self._order(e, scope)
            case ast.IsSet():
                return ir.IsSet(self._expr(e.operand, scope))
            case ast.Quantifier():
                return self._quantifier(e, scope)
        raise AssertionError(f"unhandled AST node {e!r}")  # pragma: no cover

    def _list_items(self, lst: ast.ListLit) -> tuple[ir.Const, ...]:
        items: list[ir.Const] = []
        for item in lst.items:
            node = self._expr(item, _Scope())
            if isinstance(node, ir.Const) and node.ty not in (Ty.LIST, Ty.ERROR):
                items.append(node)
            elif node.ty is not Ty.ERROR:
                self.error("E026", "list items must be literals", item.span)
        kinds = {_family(i.ty) for i in items}
        if len(kinds) > 1:
            self.error("E026", "list mixes item types: " + ", ".join(sorted(kinds)), lst.span, "use one type per list")
        return tuple(items)

    def _const(self, d: ast.ConstDef) -> ir.Node:
        node = self._expr(d.value, _Scope())
        if not isinstance(node, ir.Const) and node.ty is not Ty.ERROR:
            self.error("E026", f"const `{d.name}` must be a literal", d.value.span)
            return ir.Const(None, Ty.ERROR)
        return node

    def _name(self, e: ast.Name, scope: _Scope) -> ir.Node:
        if e.name in scope.params:
            target = scope.params[e.name]
            if isinstance(target, str):
                return self._var_as_value(e, target)
            if self.depth + ir.height(target) - 1 > MAX_NESTING:  # the argument nests on from here
                self._too_deep(e.span)
                return ir.Const(None, Ty.ERROR)
            return target
        if e.name in self.consts:
            return self._definition(e, "const", lambda: self._const(self.consts[e.name]))
        if e.name in self.lists:
            return self._definition(e, "list", lambda: ir.Const(self._list_items(self.lists[e.name].value), Ty.LIST))
        if e.name in ir.STATUSES:
            return ir.Const(ir.STATUSES[e.name], Ty.STATUS)
        if e.name in ir.KINDS:
            return ir.Const(ir.KINDS[e.name], Ty.KIND)
        if e.name in scope.vars:
            return self._var_as_value(e, e.name)
        if e.name in self.macros:
            self.error("E014", f"macro `{e.name}` must be called with arguments", e.span, f"write `{e.name}(...)`")
            return ir.Const(None, Ty.ERROR)
        known = [*self.consts, *self.lists, *ir.STATUSES, *ir.KINDS, *scope.vars, *scope.params]
        self.error("E010", f"unknown name `{e.name}`", e.span, *did_you_mean(e.name, known),
                   "bare names are consts, lists, statuses (ok, error, unset) or kinds (server, client, ...)")
        return ir.Const(None, Ty.ERROR)

    def _definition(self, e: ast.Name, kind: str, value: Callable[[], ir.Node]) -> ir.Node:
        """The ``value`` of the const or list ``e`` names, unless it is defined through itself."""
        if e.name in self.definition_stack:
            self.error("E026", f"{kind} `{e.name}` is defined through itself", e.span, f"give `{e.name}` a literal value")
            return ir.Const(None, Ty.ERROR)
        self.used_defs.add(e.name)
        return self._defining(e.name, value)

    def _defining(self, name: str, value: Callable[[], ir.Node]) -> ir.Node:
        self.definition_stack.append(name)
        try:
            return value()
        finally:
            self.definition_stack.pop()

    def _var_as_value(self, e: ast.Name, var: str) -> ir.Node:
        self.error("E011", f"span variable `{var}` used as a value", e.span, f"read a field, e.g. `{e.name}.name` or `{e.name}.duration`")
        return ir.Const(None, Ty.ERROR)

    def _field(self, e: ast.Field, scope: _Scope) -> ir.Node:
        if e.var == "trace" and "trace" not in scope.params:
            anchor = scope.anchor
            if e.field not in ir.TRACE_INTRINSICS:
                self.error("E012", f"unknown trace field `{e.field}`", e.field_span, *did_you_mean(e.field, ir.TRACE_INTRINSICS),
                           f"trace fields: {', '.join(ir.TRACE_INTRINSICS)}")
                return ir.Const(None, Ty.ERROR)
            if not anchor:
                self.error("E012", "`trace` needs a span variable in scope", e.span)
                return ir.Const(None, Ty.ERROR)
            return ir.TraceIntrinsic(anchor, e.field, ir.TRACE_INTRINSICS[e.field])
        var = self._var_ref(e.var, e.var_span, scope)
        if var is None:
            return ir.Const(None, Ty.ERROR)
        if var in scope.events:
            if e.field not in ir.EVENT_INTRINSICS:
                self.error("E011", f"unknown event field `{e.field}`", e.field_span, *did_you_mean(e.field, ir.EVENT_INTRINSICS),
                           f"event fields: {', '.join(ir.EVENT_INTRINSICS)}; attributes: {e.var}.attr[\"key\"]; "
                           f"the time since its span started: `{e.var}.time - s.start`")
                return ir.Const(None, Ty.ERROR)
            return ir.Intrinsic(var, f"event_{e.field}", ir.EVENT_INTRINSICS[e.field])
        if e.field not in ir.SPAN_INTRINSICS:
            self.error("E011", f"unknown span field `{e.field}`", e.field_span, *did_you_mean(e.field, ir.SPAN_INTRINSICS),
                       f"fields: {', '.join(ir.SPAN_INTRINSICS)}; attributes: {e.var}.attr[\"key\"]")
            return ir.Const(None, Ty.ERROR)
        return ir.Intrinsic(var, e.field, ir.SPAN_INTRINSICS[e.field])

    def _attr(self, e: ast.Attr, scope: _Scope, want: AttrType | None) -> ir.Node:
        var = self._var_ref(e.var, e.var_span, scope)
        if var is None:
            return ir.Const(None, Ty.ERROR)
        if var in scope.events and e.source != "attr":
            self._span_var(e.var, e.var_span, scope, f"`.{e.source}[...]`")
            return ir.Const(None, Ty.ERROR)
        if e.source == "event" and not e.keys:
            if not e.event:
                self.error("E039", "empty event name", e.span)
                return ir.Const(None, Ty.ERROR)
            return ir.AttrValue(var, (AttrRef(AttrSource.EVENT, "", AttrType.PRESENT, e.event),), Ty.BOOL)
        typ = self._attr_type(e, want)
        if typ is None:
            return ir.Const(None, Ty.ERROR)
        source = {"attr": AttrSource.SPAN, "resource": AttrSource.RESOURCE, "event": AttrSource.EVENT}[e.source]
        if var in scope.events:
            source = AttrSource.EVENTS  # an attribute of each event, in its own list column
        names: list[str] = []
        for k in e.keys:
            if not k.key:
                self.error("E039", "empty attribute key", k.span)
                return ir.Const(None, Ty.ERROR)
            self._check_key(k, e, var in scope.events)
            names += [n for n in self.semconv.aliases(k.key) if n not in names]
        refs = tuple(AttrRef(source, n, typ, e.event) for n in names)
        return ir.AttrValue(var, refs, _ATTR_TO_TY[typ])

    def _attr_type(self, e: ast.Attr, want: AttrType | None) -> AttrType | None:
        known = next((s for s in (self.semconv.lookup(k.key) for k in e.keys) if s), None)
        if e.annotation:
            typ = _ANNOTATIONS.get(e.annotation)
            if typ is None:
                self.error("E038", f"unknown type `{e.annotation}`", e.annotation_span or e.span,
                           *did_you_mean(e.annotation, _ANNOTATIONS), f"types: {', '.join(_ANNOTATIONS)}")
                return None
            if known is not None and known.type is not typ:
                self.error("W007", f"`{known.key}` has type {known.type} in the semantic conventions, read here as {typ}",
                           e.annotation_span or e.span, "values of another type read as nil")
            return typ
        if known is not None:
            return known.type
        # nothing says the type: read the value's text whatever its type (never nil for being an
        # int or a bool), unless a number or a bool is wanted beside it
        return AttrType.ANY if want in (None, AttrType.STRING) else want

    def _check_key(self, k: ast.Key, e: ast.Attr, of_event: bool = False) -> None:
        sem = self.semconv.lookup(k.key)
        if sem is None:
            if self.semconv.in_known_namespace(k.key):
                candidates = [*self.semconv.known_keys(), *self.semconv.current_of]
                self.error("W001", f"unknown semantic-convention key `{k.key}`", k.span, *did_you_mean(k.key, candidates, 0.75))
            return
        if self.semconv.is_deprecated(k.key):
            self.error("W002", f"`{k.key}` is deprecated; use `{sem.key}`", k.span,
                       f"`{sem.key}` also matches spans that still send `{k.key}`")
        expected = {"attr": "span", "resource": "resource", "event": f"event:{e.event}"}[e.source]
        if of_event and sem.where != "resource":  # an event variable's attribute: any event's key will do
            return
        if sem.where not in (expected, "any"):
            if sem.where == "resource":
                how = f'{e.var}.resource["{k.key}"]'
            elif sem.where.startswith("event:"):
                how = f'{e.var}.event["{sem.where[6:]}"]["{k.key}"]'
            else:
                how = f'{e.var}.attr["{k.key}"]'
            self.error("W006", f"`{k.key}` is not a {expected.replace(':', ' ')} attribute", k.span, f"read it as `{how}`")

    def _arith(self, e: ast.Binary, scope: _Scope) -> ir.Node:
        left, right = self._expr(e.left, scope, AttrType.DOUBLE), self._expr(e.right, scope, AttrType.DOUBLE)
        if Ty.ERROR in (left.ty, right.ty):
            return ir.Const(None, Ty.ERROR)
        ty = _arith_type(e.op, left.ty, right.ty)
        if ty is None:
            self.error("E022", f"cannot apply `{e.op}` to {left.ty} and {right.ty}", e.op_span,
                       "durations combine with durations and numbers, e.g. `2 * 100ms`" if Ty.DURATION in (left.ty, right.ty) else "")
            return ir.Const(None, Ty.ERROR)
        return ir.Arith(e.op, left, right, ty)

    def _typed_pair(self, e: ast.Binary, scope: _Scope) -> tuple[ir.Node, ir.Node]:
        """Type both operands; an un-annotated unknown attribute takes its type
        from the other side when that side is a literal."""
        if isinstance(e.left, ast.Attr) and not isinstance(e.right, ast.Attr):
            right = self._expr(e.right, scope)
            return self._expr(e.left, scope, _want(right, e.op)), right
        left = self._expr(e.left, scope)
        return left, self._expr(e.right, scope, _want(left, e.op))

    def _comparison(self, e: ast.Binary, scope: _Scope) -> ir.Node:
        if isinstance(e.left, ast.Quantifier) and e.left.by is not None and e.op in ("=", "!=", "<", "<=", ">", ">="):
            self.grouped_ok.add(id(e.left))
        left, right = self._typed_pair(e, scope)
        if Ty.ERROR in (left.ty, right.ty):
            return ir.Const(None, Ty.ERROR)
        return self._compare_nodes(e, left, right)

    def _compare_nodes(self, e: ast.Binary, left: ir.Node, right: ir.Node) -> ir.Node:
        """The comparison ``e`` of the typed operands ``left`` and ``right``."""
        op = e.op
        if op in ("in", "not in"):
            return self._membership(e, left, right)
        if op in ("=~", "!~"):
            return self._regex(e, left, right)
        if op in ("contains", "starts_with", "ends_with"):
            return self._string_test(e, left, right)
        if not _comparable(left.ty, right.ty):
            self.error("E020", f"cannot compare {left.ty} with {right.ty}", e.op_span, _compare_hint(left, right))
            return ir.Const(None, Ty.ERROR)
        if op not in ("=", "!=") and left.ty not in _ORDERED:
            self.error("E021", f"`{op}` does not apply to {left.ty}", e.op_span, "only `=` and `!=` compare this type")
            return ir.Const(None, Ty.ERROR)
        return ir.Compare(op, left, right)

    def _membership(self, e: ast.Binary, left: ir.Node, right: ir.Node) -> ir.Node:
        if right.ty is not Ty.LIST:
            self.error("E026", f"`{e.op}` needs a list on its right, found {right.ty}", e.right.span, "e.g. `x in [500, 503]` or a `list` name")
            return ir.Const(None, Ty.ERROR)
        items: tuple[ir.Const, ...] = right.value  # type: ignore[union-attr,assignment]
        for item in items:
            if not _comparable(left.ty, item.ty):
                self.error("E020", f"cannot compare {left.ty} with list item of type {item.ty}", e.right.span, _compare_hint(left, item))
                return ir.Const(None, Ty.ERROR)
        return ir.InList(left, items, e.op == "not in")

    def _regex(self, e: ast.Binary, left: ir.Node, right: ir.Node) -> ir.Node:
        if left.ty is not Ty.STRING:
            self.error("E021", f"`{e.op}` matches strings, not {left.ty}", e.op_span)
            return ir.Const(None, Ty.ERROR)
        if not (isinstance(right, ir.Const) and right.ty is Ty.STRING):
            self.error("E024", "a regular expression must be a string literal or const", e.right.span)
            return ir.Const(None, Ty.ERROR)
        pattern = str(right.value)
        if pattern not in self.regex_problems:
            self.regex_problems[pattern] = _regex_problem(pattern, self.regex_validator)
        problem = self.regex_problems[pattern]
        if problem:
            self.error("E024", f"invalid regular expression: {problem}", e.right.span,
                       "patterns use RE2 syntax (linear time: no backreferences or lookaround)")
            return ir.Const(None, Ty.ERROR)
        return ir.Regex(left, pattern, e.op == "!~")

    def _string_test(self, e: ast.Binary, left: ir.Node, right: ir.Node) -> ir.Node:
        if left.ty.is_array and e.op == "contains":
            if not _comparable(left.ty.element, right.ty):
                self.error("E020", f"a {left.ty} cannot contain {right.ty} values", e.op_span)
                return ir.Const(None, Ty.ERROR)
            return ir.ArrayHas(left, right)
        if left.ty is not Ty.STRING or right.ty is not Ty.STRING:
            self.error("E021", f"`{e.op}` applies to strings (and `contains` to arrays), not {left.ty} and {right.ty}", e.op_span)
            return ir.Const(None, Ty.ERROR)
        return ir.StrTest(e.op, left, right)

    def _call(self, e: ast.Call, scope: _Scope) -> ir.Node:
        macro = self.macros.get(e.name)
        if macro is None and e.name == "first":
            return self._first(e, scope)
        if macro is None and e.name == "any":
            return self._any(e, scope)
        if macro is None and e.name in FUNCTIONS:
            return self._function(e, scope)
        if macro is None:
            self.error("E013", f"unknown macro `{e.name}`", e.name_span, *did_you_mean(e.name, [*self.macros, *FUNCTIONS, "any"]),
                       "built-ins: first(...), exists(...), count(...), min/max/avg/sum(... for ...), "
                       f"{', '.join(FUNCTIONS)}, any(...)")
            return ir.Const(None, Ty.ERROR)
        self.used_defs.add(e.name)
        if len(e.args) != len(macro.params):
            self.error("E014", f"macro `{e.name}` takes {len(macro.params)} argument(s), got {len(e.args)}", e.span,
                       f"defined as `{e.name}({', '.join(p.name for p in macro.params)})` at line {macro.name_span.line}")
            return ir.Const(None, Ty.ERROR)
        if e.name in self.macro_stack:
            self.error("E037", f"macro `{e.name}` calls itself", e.name_span, "macros are expanded inline and cannot recurse")
            return ir.Const(None, Ty.ERROR)
        # hygienic: the body sees its parameters, not the caller's variables
        inner = _Scope({}, {}, scope.used, scope.anchor, scope.taken)
        for param, arg in zip(macro.params, e.args):
            target = None
            if isinstance(arg, ast.Name):
                target = scope.params[arg.name] if arg.name in scope.params else scope.vars.get(arg.name)
            if isinstance(target, str):
                inner.params[param.name] = target  # a span variable
                scope.used.add(target)
            else:
                inner.params[param.name] = self._expr(arg, scope)
        self.macro_stack.append(e.name)
        mark = len(self.diags)
        try:
            return self._expr(macro.body, inner)
        finally:
            self.macro_stack.pop()
            # a problem inside the body is reported there, naming the call
            where = f"in `{e.name}(...)` called at {e.span.path}:{e.span.line}:{e.span.col}"
            self.diags[mark:] = [
                replace(d, hints=(*d.hints, where)) if _inside(d.span, macro.span) else d for d in self.diags[mark:]
            ]

    def _order(self, e: ast.Order, scope: _Scope) -> ir.Node:
        """``a before b``: a ended no later than b started; ``a after b``: ``b before a``."""
        left = self._span_var(e.left, e.left_span, scope, f"`{e.op}`")
        right = self._span_var(e.right, e.right_span, scope, f"`{e.op}`")
        if left is None or right is None:
            return ir.Const(None, Ty.ERROR)
        first, then = (left, right) if e.op == "before" else (right, left)
        return ir.Compare("<=", ir.Intrinsic(first, "end", Ty.TIME), ir.Intrinsic(then, "start", Ty.TIME))

    def _function(self, e: ast.Call, scope: _Scope) -> ir.Node:
        """A value function (``FUNCTIONS``): arity and argument types, then its result type."""
        params, result, example = FUNCTIONS[e.name]
        required = sum(1 for p in params if not p.endswith("?"))
        if not required <= len(e.args) <= len(params):
            count = str(required) if required == len(params) else f"{required} or {len(params)}"
            self.error("E014", f"`{e.name}` takes {count} argument(s), got {len(e.args)}", e.span, f"e.g. `{example}`")
            return ir.Const(None, Ty.ERROR)
        args = []
        for param, arg in zip(params, e.args):
            kinds = param.rstrip("?").split("|")
            want = AttrType.STRING if "string" in kinds else AttrType.INT if "int" in kinds else None
            node = self._expr(arg, scope, want)
            if node.ty is Ty.ERROR:
                return ir.Const(None, Ty.ERROR)
            fits = ("string" in kinds and node.ty is Ty.STRING) or ("int" in kinds and node.ty is Ty.INT) or (
                "array" in kinds and node.ty.is_array)
            if not fits:
                self.error("E028", f"`{e.name}` takes {' or '.join(kinds)} here, not {node.ty}", arg.span,
                           f"e.g. `{example}`", *(("an attribute's type can be given: `s.attr[\"k\"]:string[]`",)
                                                  if "array" in kinds and isinstance(arg, ast.Attr) else ()))
                return ir.Const(None, Ty.ERROR)
            args.append(node)
        if e.name == "json":
            path = args[1]
            if not (isinstance(path, ir.Const) and str(path.value).startswith("$")):
                self.error("E028", "`json` takes a JSON path literal starting with `$`", e.args[1].span,
                           'e.g. `json(s.attr["gen_ai.output"], "$.choices[0].text")`')
                return ir.Const(None, Ty.ERROR)
        return ir.Call(e.name, tuple(args), Ty(result))

    def _any(self, e: ast.Call, scope: _Scope) -> ir.Node:
        """``any(arr <op> x)``: the comparison holds for some element of the array ``arr``."""
        arg = e.args[0] if len(e.args) == 1 else None
        if not isinstance(arg, ast.Binary) or arg.op in ("+", "-", "*", "/", "%", "in", "not in"):
            self.error("E014", "`any` takes one comparison of an array's elements", e.span,
                       'e.g. `any(s.attr["gen_ai.response.finish_reasons"] =~ "^len")`')
            return ir.Const(None, Ty.ERROR)
        array = self._expr(arg.left, scope)
        if array.ty is Ty.ERROR:
            return ir.Const(None, Ty.ERROR)
        if not array.ty.is_array:
            self.error("E028", f"`any` compares the elements of an array, not a {array.ty}", arg.left.span,
                       *(('an attribute\'s type can be given: `s.attr["k"]:string[]`',) if isinstance(arg.left, ast.Attr)
                         else ()))
            return ir.Const(None, Ty.ERROR)
        element = ir.Element(array.ty.element)
        right = self._expr(arg.right, scope, _want(element, arg.op))
        if right.ty is Ty.ERROR:
            return ir.Const(None, Ty.ERROR)
        cond = self._compare_nodes(arg, element, right)
        if cond.ty is Ty.ERROR:
            return cond
        return ir.AnyOf(array, cond)

    def _first(self, e: ast.Call, scope: _Scope) -> ir.Node:
        """Built-in ``first(a, b, ...)``: the first non-nil value (one type)."""
        items = [self._expr(a, scope) for a in e.args]
        if len(items) < 2:
            self.error("E014", "`first` takes two or more arguments", e.span, 'e.g. `first(s.attr["a"], s.event["x"]["a"])`')
            return ir.Const(None, Ty.ERROR)
        if any(i.ty is Ty.ERROR for i in items):
            return ir.Const(None, Ty.ERROR)
        ty = items[0].ty
        for arg, item in zip(e.args[1:], items[1:]):
            if not _comparable(ty, item.ty) and ty != item.ty:
                self.error("E020", f"`first` mixes {ty} and {item.ty}", arg.span, "every argument needs the same type")
                return ir.Const(None, Ty.ERROR)
        if all(i.ty.numeric for i in items):
            ty = Ty.DOUBLE if Ty.DOUBLE in {i.ty for i in items} else Ty.INT
        return ir.First(tuple(items), ty)

    def _quantifier(self, e: ast.Quantifier, scope: _Scope) -> ir.Node:
        node = self._quantified(e, scope)
        if not self.macro_stack:  # a macro's body is one AST node for every call: its variables cannot be named
            self.lowered[id(e)] = node
        return node

    def _quantified(self, e: ast.Quantifier, scope: _Scope) -> ir.Node:
        inner = scope.child()
        rel = self._binding(e.binding, inner)
        if rel is None:
            return ir.Const(None, Ty.ERROR)
        where = self._condition(e.where, inner) if e.where is not None else None
        # an attribute of unknown type is aggregated as a number (ints fill it too)
        value = self._expr(e.value, inner, AttrType.DOUBLE) if e.value is not None else None
        by = self._group_key(e, inner)
        if isinstance(by, ir.Const) and by.ty is Ty.ERROR:
            return by
        if e.func in ("exists", "count"):
            return ir.Quant(e.func, rel, where, None, Ty.BOOL if e.func == "exists" else Ty.INT, by)
        assert value is not None
        if value.ty is Ty.ERROR:
            return ir.Const(None, Ty.ERROR)
        allowed = _ORDERED if e.func in ("min", "max") else {Ty.INT, Ty.DOUBLE, Ty.DURATION}
        if value.ty not in allowed:
            self.error("E027", f"`{e.func}` cannot aggregate {value.ty} values", e.value.span,  # type: ignore[union-attr]
                       "sum and avg take numbers or durations; min and max also strings and times",
                       "an attribute's type can be given: `s.attr[\"k\"]:int` or `:double`")
            return ir.Const(None, Ty.ERROR)
        ty = Ty.DOUBLE if e.func == "avg" and value.ty is Ty.INT else value.ty
        return ir.Quant(e.func, rel, where, value, ty, by)

    def _group_key(self, e: ast.Quantifier, inner: _Scope) -> ir.Node | None:
        """The key of ``by``, if any: a plain value, and the aggregate the left side of a comparison."""
        if e.by is None:
            return None
        if id(e) not in self.grouped_ok:
            self.error("E029", f"a grouped `{e.func}` (`by`) can only be compared", e.span,
                       "the comparison then holds when it holds for some group, e.g. "
                       "`count(child c of s where c.status = error by c.name) >= 3`")
            return ir.Const(None, Ty.ERROR)
        key = self._expr(e.by, inner)
        if key.ty is Ty.ERROR:
            return key
        if key.ty.is_array or key.ty in (Ty.LIST, Ty.BOOL):
            self.error("E029", f"cannot group by a {key.ty}", e.by.span, "group by a name, an attribute, a status, ...")
            return ir.Const(None, Ty.ERROR)
        return key

    # ---- "never fires" ------------------------------------------------------------

    def _never_fires(self, where: ir.Node, span: SourceSpan) -> None:
        reason = contradiction(where)
        if reason:
            self.error("W004", "this rule can never fire", span, reason)


# ---- fault trees --------------------------------------------------------------------

_TREE_META_KEYS = ("title", "layer", "severity", "description", "tags", "references")


class _TreeChecker:
    """Trees, intermediate/basic/house events: names, cycles, gate arity,
    priors; lowers each tree to ``ir.CheckedTree``; warns about gates that can
    never fire (W010) or never matter (W011) and events no tree uses (W003).
    Span conditions (house events, top predicates) are checked like rules."""

    def __init__(self, checker: _Checker, rule_ids: dict[str, ast.Rule], metas: dict[str, ir.RuleMeta]) -> None:
        self.c = checker
        self.rule_ids = rule_ids
        self.metas = metas
        self.events: dict[str, ast.EventDef] = {}
        self.basics: dict[str, ast.BasicDef] = {}
        self.houses: dict[str, ast.HouseDef] = {}
        self.trees: list[ast.Tree] = []
        self.used: set[str] = set()
        self.house_ir: dict[str, ir.HouseEvent] = {}
        self.bad: set[str] = set()  # definitions with errors

    def error(self, code: str, message: str, span: SourceSpan, *hints: str) -> None:
        self.c.error(code, message, span, *hints)

    def run(self) -> tuple[list[ir.CheckedTree], list[ir.HouseEvent]]:
        self._collect()
        self._cycles()
        self._heights()
        for b in self.basics.values():
            self._basic_def(b)
        for h in self.houses.values():
            self._house_def(h)
        out = []
        for t in self.trees:
            checked = self._tree(t)
            if checked is not None:
                out.append(checked)
        for kind, table in (("event", self.events), ("basic event", self.basics), ("house event", self.houses)):
            for name, d in table.items():
                if name not in self.used:
                    self.error("W003", f"{kind} `{name}` is never used", d.name_span, "use it in a tree's `cause`, or remove it")
        houses = [h for h in self.house_ir.values() if h.condition is not None]
        return out, houses

    def _collect(self) -> None:
        seen: dict[str, SourceSpan] = {}
        tree_ids: dict[str, SourceSpan] = {}
        for f in self.c.files:
            for item in f.items:
                if isinstance(item, ast.Tree):
                    if item.id in tree_ids:
                        self.error("E062", f"duplicate tree id `{item.id}`", item.id_span, _first_defined(tree_ids[item.id]))
                        continue
                    tree_ids[item.id] = item.id_span
                    self.trees.append(item)
                elif isinstance(item, (ast.EventDef, ast.BasicDef, ast.HouseDef)):
                    if item.name in seen:
                        self.error("E062", f"event `{item.name}` is already defined", item.name_span,
                                   _first_defined(seen[item.name]), "intermediate, basic and house events share one namespace")
                        continue
                    seen[item.name] = item.name_span
                    table = {ast.EventDef: self.events, ast.BasicDef: self.basics, ast.HouseDef: self.houses}[type(item)]
                    table[item.name] = item  # type: ignore[index]

    def _cycles(self) -> None:
        """E061 once for each group of intermediate events that reach each other (a
        strongly connected component: linear time, however many cycles a hostile file
        holds), naming one cycle through it and pointing at the reference that closes
        it; its events are marked bad, so no tree is lowered through them."""
        self._groups: dict[str, frozenset[str]] = {}
        self._graph: nx.DiGraph | None = None
        if not self.events:
            return  # no graph, and no networkx to import (a tenth of a second of `faulttrace check`)
        import networkx as nx

        graph: nx.DiGraph = nx.DiGraph()
        closing: dict[tuple[str, str], SourceSpan] = {}
        for name, d in self.events.items():
            graph.add_node(name)
            for ref in _gate_refs(d.gate):
                if ref.name in self.events:
                    graph.add_edge(name, ref.name)
                    closing.setdefault((name, ref.name), ref.span)
        order = {name: i for i, name in enumerate(self.events)}  # definition order: stable messages
        groups = [g for g in nx.strongly_connected_components(graph)
                  if len(g) > 1 or graph.has_edge(next(iter(g)), next(iter(g)))]
        for group in sorted(groups, key=lambda g: min(order[n] for n in g)):
            first = min(group, key=order.__getitem__)
            cycle = [u for u, _ in nx.find_cycle(graph.subgraph(group), first)]
            self.error("E061", f"events form a cycle: {' -> '.join([*cycle, first])}", closing[(cycle[-1], first)],
                       "a fault tree is acyclic: an event cannot cause itself")
            self.bad.update(group)
            self._groups.update(dict.fromkeys(group, frozenset(group)))
        self._graph = graph

    def _heights(self) -> None:
        """How many levels each event's gate takes once the events it names
        are expanded (``self.heights``), referenced events first.  An event
        past ``MAX_NESTING`` is an E005 at the reference that takes it there,
        and is marked bad like a cycle: no tree is lowered through it, so no
        walk of a lowered tree goes deeper than the limit."""
        self.heights: dict[str, int] = {}
        self.deep: set[str] = set()  # too deep, or naming an event that is (reported once, at the first)
        if self._graph is None:
            return
        import networkx as nx

        acyclic = self._graph.subgraph(n for n in self._graph if n not in self.bad)
        for name in reversed(list(nx.topological_sort(acyclic))):
            gate = self.events[name].gate
            if any(self.deep.intersection(acyclic.successors(name))):
                self.deep.add(name)
                continue
            height, over = self._expanded(gate)
            if over is None:
                self.heights[name] = height
                continue
            self._too_deep(over, f"event `{name}` nests too deeply once the events it names are expanded", gate)
            self.deep.add(name)
        self.bad |= self.deep

    def _expanded(self, gate: ast.GateExpr) -> tuple[int, ast.GateExpr | None]:
        """Levels of ``gate`` with the events it names expanded (their heights
        known), and its first node, in source order, past ``MAX_NESTING``."""
        height, todo = 0, [(gate, 1)]
        while todo:
            node, level = todo.pop()
            if isinstance(node, ast.GateRef):
                level += self.heights.get(node.name, 1) - 1  # an event's gate takes the reference's place
            if level > MAX_NESTING:
                return level, node
            height = max(height, level)
            todo.extend((child, level + 1) for child in reversed(ast.children(node)))
        return height, None

    def _too_deep(self, at: ast.GateExpr, message: str, gate: ast.GateExpr) -> None:
        """E005; what ``gate`` names counts as used (it is not lowered, so W003 would follow)."""
        self.c._report(nesting_diagnostic(at.span, message, "events expand inline: a chain of events naming events "
                                          "nests as deep as all their gates together", label=""))
        for ref in _gate_refs(gate):
            self._used_below(ref.name)

    def _used_below(self, name: str) -> None:
        """``name`` and every event it reaches count as used."""
        self.used.add(name)
        if self._graph is not None and name in self._graph:
            import networkx as nx

            self.used.update(nx.descendants(self._graph, name))

    def _record_cycle(self, name: str) -> None:
        """A tree reaches an event on a cycle: what the cycle's events name is used and
        checked (unknown names, gate arity) as if lowered, each event's gate once."""
        group = self._groups.pop(name, frozenset())
        for event in sorted(group):
            self._groups.pop(event, None)
            self.used.add(event)
            self._resolve(self.events[event].gate, {}, {}, None, record=True)

    def _rule_ref(self, rule: str, span: SourceSpan) -> bool:
        if rule in self.rule_ids:
            return True
        self.error("E060", f"unknown rule `{rule}`", span, *did_you_mean(rule, self.rule_ids),
                   "basic events and `top rule` name rules by id")
        return False

    def _basic_def(self, b: ast.BasicDef) -> None:
        if not self._rule_ref(b.rule, b.rule_span):
            self.bad.add(b.name)
        if b.prior is not None and not 0 <= b.prior <= 1:
            self.error("E066", f"prior {b.prior:g} is not a probability", b.prior_span or b.span, "write a number between 0 and 1")
            self.bad.add(b.name)

    def _basic(self, name: str, rule: str, prior: float | None) -> ir.BasicEvent:
        meta = self.metas.get(rule)
        return ir.BasicEvent(name, rule, DEFAULT_PRIOR if prior is None else prior, meta.confidence if meta else 1.0)

    def _house_def(self, h: ast.HouseDef) -> None:
        if h.binding is None:
            self.house_ir[h.name] = ir.HouseEvent(h.name, h.value)
            return
        cond = self._condition_rule(condition_id("house", h.name), f"house event {h.name}", h.binding, h.where, h.span)
        if cond is None:
            self.bad.add(h.name)
            return
        self.house_ir[h.name] = ir.HouseEvent(h.name, None, cond)

    def _condition_rule(self, cid: str, title: str, binding: ast.Binding, where: ast.Expr | None,
                        span: SourceSpan) -> ir.CheckedRule | None:
        before = self.c.error_count
        scope = _Scope()
        rel = self.c._binding(binding, scope)
        cond = self.c._condition(where, scope) if where is not None else None
        if cond is not None and where is not None:
            reason = contradiction(cond)
            if reason:
                self.error("W004", "this condition can never hold", where.span, reason)
        if rel is None or self.c.error_count > before:
            return None
        meta = ir.RuleMeta(cid, title, "code", "info", 1.0)
        return ir.CheckedRule(meta, (rel,), cond, rel.var, (), span)

    # -- one tree

    def _tree(self, t: ast.Tree) -> ir.CheckedTree | None:
        before = self.c.error_count
        if not _RULE_ID.fullmatch(t.id):
            self.error("E033", f"invalid tree id `{t.id}`", t.id_span,
                       "ids are lowercase dotted names such as `checkout.failure`")
        meta = self._tree_meta(t)
        if not t.tops:
            self.error("E065", f"tree `{t.id}` has no `top` event", t.id_span,
                       "add e.g. `top span s where s.is_root and s.status = error`, or `top rule <rule id>`")
        if not t.causes:
            self.error("E065", f"tree `{t.id}` has no `cause`", t.id_span, "add e.g. `cause a or (b and c)`")
        for extra in t.tops[1:]:
            self.error("E032", "a tree has one `top` event", extra.span)
        for extra in t.causes[1:]:
            self.error("E032", "a tree has one `cause`", extra.span)
        top_rule, top_cond = "", None
        if t.tops:
            top = t.tops[0]
            if top.rule:
                if self._rule_ref(top.rule, top.span):
                    top_rule = top.rule
            elif top.binding is not None:
                top_cond = self._condition_rule(condition_id("top", t.id), f"top event of {t.id}", top.binding, top.where, top.span)
        cause = None
        over = self._expanded(t.causes[0].gate)[1] if t.causes else None
        if over is not None:
            self._too_deep(over, f"the cause of tree `{t.id}` nests too deeply once the events it names are expanded",
                           t.causes[0].gate)
        elif t.causes:
            basics: dict[str, ir.BasicEvent] = {}
            houses: dict[str, ir.HouseEvent] = {}
            cause = self._resolve(t.causes[0].gate, basics, houses, None, record=True)
        if meta is None or cause is None or self.c.error_count > before:
            return None
        tree = ir.CheckedTree(meta, top_rule, top_cond, cause, tuple(basics.values()), tuple(houses.values()),
                              t.span)
        self._warn_dead(t, tree)
        return tree

    def _tree_meta(self, t: ast.Tree) -> ir.TreeMeta | None:
        values, ok = self.c._meta_fields(t.meta, _TREE_META_KEYS, " for a tree")
        if "title" not in values:
            self.error("E030", f"tree `{t.id}` is missing `title`", t.id_span, 'add `title "Checkout fails"`')
            return None
        if not ok:
            return None
        return ir.TreeMeta(t.id, str(values["title"]), str(values.get("layer", "")), str(values.get("severity", "high")),
                           str(values.get("description", "")), tuple(values.get("tags", ())),  # type: ignore[arg-type]
                           tuple(values.get("references", ())))  # type: ignore[arg-type]

    def _resolve(self, g: ast.GateExpr, basics: dict[str, ir.BasicEvent], houses: dict[str, ir.HouseEvent],
                 probe: object | None, record: bool = False,
                 memo: dict[str, ir.FtNode | None] | None = None) -> ir.FtNode | None:
        """Lower a gate expression; intermediate events become shared nodes.
        ``probe`` (an AST node) is replaced by the probe variable (W011)."""
        memo = {} if memo is None else memo
        if g is probe:
            return ir.FtEvent(PROBE)
        if isinstance(g, ast.Gate):
            if record:
                self._gate_checks(g)
            items = [self._resolve(i, basics, houses, probe, record, memo) for i in g.items]
            if any(i is None for i in items):
                return None
            k = g.k if g.op == "atleast" else 0
            if g.op == "atleast" and not 1 <= k <= len(items):
                return None
            return ir.FtGate(g.op, tuple(items), k)  # type: ignore[arg-type]
        name = g.name
        if record:
            self.used.add(name)
        if "." in name and name not in self.events:
            if name not in self.rule_ids:
                if record:
                    self.error("E060", f"unknown rule `{name}`", g.span, *did_you_mean(name, [*self.rule_ids, *self._names()]),
                               "a dotted name in a gate is a rule id (a basic event with the default prior)")
                return None
            basics.setdefault(name, self._basic(name, name, None))
            return ir.FtEvent(name)
        if name in self.basics:
            b = self.basics[name]
            if name in self.bad:
                return None
            basics.setdefault(name, self._basic(name, b.rule, b.prior))
            return ir.FtEvent(name)
        if name in self.houses:
            if name in self.bad:
                return None
            houses.setdefault(name, self.house_ir[name])
            return ir.FtEvent(name)
        if name in self.events:
            if name in self.bad:
                if record and name in self.deep:
                    self._used_below(name)
                elif record:
                    self._record_cycle(name)
                return None
            if name in memo and probe is None:
                return memo[name]
            inner = self._resolve(self.events[name].gate, basics, houses, probe, record, memo)
            if isinstance(inner, ir.FtGate):
                inner = ir.FtGate(inner.op, inner.items, inner.k, name)
            memo[name] = inner
            return inner
        if record:
            self.error("E060", f"unknown event `{name}`", g.span, *did_you_mean(name, [*self._names(), *self.rule_ids]),
                       "define it with `event`, `basic` or `house`, or name a rule by its dotted id")
        return None

    def _names(self) -> list[str]:
        return [*self.events, *self.basics, *self.houses]

    def _gate_checks(self, g: ast.Gate) -> None:
        if g.op == "atleast" and not 1 <= g.k <= len(g.items):
            self.error("E063", f"`atleast {g.k} of` needs 1 <= k <= {len(g.items)} (the number of events listed)",
                       g.k_span or g.span, "`atleast 1 of` is `or`, `atleast n of` is `and`")
        seen: dict[str, ast.GateRef] = {}
        for item in g.items:
            if isinstance(item, ast.GateRef):
                if item.name in seen:
                    self.error("E064", f"`{item.name}` appears twice under one `{g.op}` gate", item.span,
                               "list each event once; the second occurrence changes nothing" if g.op != "atleast"
                               else "an event counts once towards `atleast`")
                seen.setdefault(item.name, item)

    def _warn_dead(self, t: ast.Tree, tree: ir.CheckedTree) -> None:
        constants = {h.name: h.value for h in tree.houses if h.value is not None}
        root = t.causes[0].gate
        whole = substitute(tree.cause, constants)
        if never_fires(whole):
            off = [n for n, v in constants.items() if not v]
            self.error("W010", f"tree `{t.id}` can never fire", t.causes[0].span,
                       f"house event(s) {', '.join(f'`{n}`' for n in off)} are false" if off
                       else "its branches contradict each other (e.g. `a and not a`)")
            return
        dead: set[int] = set()  # nodes inside a gate that can never fire: W010 says it all
        for node in _gate_nodes(root, self.events):
            if node is root or id(node) in dead:
                continue
            basics: dict[str, ir.BasicEvent] = {}
            houses: dict[str, ir.HouseEvent] = {}
            if isinstance(node, ast.Gate):
                alone = self._resolve(node, basics, houses, None)
                if alone is not None and never_fires(substitute(alone, constants)):
                    self.error("W010", f"this gate can never fire (in tree `{t.id}`)", node.span,
                               "its inputs contradict each other, or a house event is false")
                    dead |= {id(n) for n in _gate_nodes(node, self.events)}
                    continue
            probed = self._resolve(root, basics, houses, node)
            if probed is not None and not matters(tree.cause, probed, constants):
                what = f"event `{node.name}`" if isinstance(node, ast.GateRef) else "this gate"
                self.error("W011", f"{what} never matters to tree `{t.id}`", node.span,
                           "the top event is decided without it (e.g. absorbed: `a or (a and b)` is `a`)")
                dead |= {id(n) for n in _gate_nodes(node, self.events)}


def _gate_nodes(root: ast.GateExpr, events: dict[str, ast.EventDef]) -> list[ast.GateExpr]:
    """Every gate expression reachable from ``root`` (through named events), once."""
    out: list[ast.GateExpr] = []
    seen_events: set[str] = set()

    def walk(g: ast.GateExpr) -> None:
        out.append(g)
        if isinstance(g, ast.Gate):
            for i in g.items:
                walk(i)
        elif g.name in events and g.name not in seen_events:
            seen_events.add(g.name)
            walk(events[g.name].gate)

    walk(root)
    return out


# where a quantifier's variable cannot be named by `explains`: how to say it, and the hint
_UNNAMEABLE = {
    "not": ("under `not`", "when the rule fires no span matches a negated quantifier: bind it positively, "
            "e.g. `exists(following sibling f of s where f.status = error)`"),
    "value": ("inside an aggregated value", "bind it in a quantifier's `where` or in the rule's condition"),
    "call": ("inside a macro's argument", "bind it in the rule's own condition, outside the macro call"),
}


def _quantified(where: ast.Expr) -> dict[str, list[tuple[tuple[ast.Quantifier, ...], str]]]:
    """Span variables the quantifiers of a rule's condition bind: name -> each
    binding's path of quantifiers (outermost first) and why it cannot be
    named by `explains` ('' when it can: see ``_UNNAMEABLE``)."""
    out: dict[str, list[tuple[tuple[ast.Quantifier, ...], str]]] = {}
    todo: list[tuple[ast.Expr, tuple[ast.Quantifier, ...], str]] = [(where, (), "")]
    while todo:
        node, path, problem = todo.pop()
        if isinstance(node, ast.Quantifier):
            here = (*path, node)
            out.setdefault(node.binding.var, []).append((here, problem))
            if node.where is not None:
                todo.append((node.where, here, problem))
            if node.value is not None:
                todo.append((node.value, here, problem or "value"))
            continue
        if isinstance(node, ast.Unary) and node.op == "not":
            problem = problem or "not"
        elif isinstance(node, ast.Call):
            problem = problem or "call"
        todo.extend((c, path, problem) for c in ast.children(node))  # type: ignore[misc]
    return out


def _first_defined(span: SourceSpan) -> str:
    return f"first defined at {span.path}:{span.line}:{span.col}"


def _inside(inner: SourceSpan, outer: SourceSpan) -> bool:
    return inner.path == outer.path and outer.start <= inner.start and inner.end <= outer.end


# ---- typing helpers ------------------------------------------------------------


def _family(ty: Ty) -> str:
    return "number" if ty.numeric else str(ty)


def _comparable(a: Ty, b: Ty) -> bool:
    if Ty.ERROR in (a, b):
        return True
    if a.numeric and b.numeric:
        return True
    return a == b and a is not Ty.LIST and not a.is_array


def _compare_hint(left: ir.Node, right: ir.Node) -> str:
    tys = {left.ty, right.ty}
    if Ty.DURATION in tys and (Ty.INT in tys or Ty.DOUBLE in tys):
        number = left if left.ty is not Ty.DURATION else right
        if _is_count(number):
            return "a count is a number of spans: compare it with a plain number such as `3`"
        return "write a duration literal such as `250ms` or `2s`"
    if tys & {Ty.STATUS, Ty.KIND} and Ty.STRING in tys:
        return "write the value without quotes, e.g. `s.status = error`, `s.kind = server`"
    if Ty.STRING in tys and (Ty.INT in tys or Ty.DOUBLE in tys or Ty.BOOL in tys):
        return "quote the value, or give the attribute's type: `s.attr[\"k\"]:int`, `:double` or `:bool`"
    return ""


def _is_count(node: ir.Node) -> bool:
    """Whether ``node`` counts spans: ``count(...)`` or a trace's span or error count."""
    if isinstance(node, ir.Quant):
        return node.func == "count"
    return isinstance(node, ir.TraceIntrinsic) and node.name.endswith("_count")


def _want(other: ir.Node, op: str) -> AttrType | None:
    if op in ("=~", "!~", "starts_with", "ends_with"):
        return AttrType.STRING
    if other.ty is Ty.LIST:
        items = other.value  # type: ignore[union-attr]
        return _INFER_FROM.get(items[0].ty) if items else None
    return _INFER_FROM.get(other.ty)


def _arith_type(op: str, a: Ty, b: Ty) -> Ty | None:
    if a.numeric and b.numeric:
        return Ty.DOUBLE if op == "/" or Ty.DOUBLE in (a, b) else Ty.INT
    table = {
        ("+", Ty.DURATION, Ty.DURATION): Ty.DURATION, ("-", Ty.DURATION, Ty.DURATION): Ty.DURATION,
        ("/", Ty.DURATION, Ty.DURATION): Ty.DOUBLE, ("%", Ty.DURATION, Ty.DURATION): Ty.DURATION,
        ("-", Ty.TIME, Ty.TIME): Ty.DURATION, ("+", Ty.TIME, Ty.DURATION): Ty.TIME, ("-", Ty.TIME, Ty.DURATION): Ty.TIME,
        ("+", Ty.DURATION, Ty.TIME): Ty.TIME,
    }
    if (op, a, b) in table:
        return table[(op, a, b)]
    if op == "*" and {a, b} & {Ty.DURATION} and (a.numeric or b.numeric):
        return Ty.DURATION
    if op == "/" and a is Ty.DURATION and b.numeric:
        return Ty.DURATION
    return None


def _regex_problem(pattern: str, validator: RegexValidator | None) -> str:
    m = _RE2_UNSUPPORTED.search(pattern)
    if m:
        return f"`{m.group(0)}` is not supported by RE2"
    if validator is not None:
        return validator(pattern)
    try:  # without the engine, Python's syntax is the nearest approximation
        re.compile(pattern)
    except re.error as err:
        return str(err)
    return ""


def _gate_refs(g: ast.GateExpr) -> Iterable[ast.GateRef]:
    """Every name a gate expression mentions, in source order."""
    if isinstance(g, ast.GateRef):
        yield g
    else:
        for item in g.items:
            yield from _gate_refs(item)
