"""JSON Schema -> GBNF (gpt4all._json_schema): errors, structure, and the grammar's language.

No model: grammars are run by tests/gbnf_matcher.py, which parses and matches GBNF the way
llama.cpp does.  Where hypothesis and jsonschema are installed, texts drawn from each grammar
must validate against their schema, and valid instances (within the documented subset)
must be accepted.
"""
from __future__ import annotations

import datetime
import json
import random
import re
import subprocess
import sys
from decimal import Decimal
from functools import lru_cache
from typing import Any, Dict, List

from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gbnf_matcher import Grammar, GrammarError  # noqa: E402
from gpt4all._json_schema import JSON_OBJECT_GBNF, GrammarBuilder, SchemaError, json_schema_to_gbnf  # noqa: E402

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

quick = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                 database=None)


@lru_cache(maxsize=None)
def _grammar(text: str) -> Grammar:
    return Grammar(text)


def accepts(schema: Any, text: str) -> bool:
    return _grammar(json_schema_to_gbnf(schema)).accepts(text)


def validator(schema: Any) -> Any:
    cls = jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# --- errors ---------------------------------------------------------------------------------------

ERRORS = [
    ({"not": {"type": "string"}}, "#/not", "not"),
    ({"if": {"type": "string"}, "then": {}}, "#/if", "if"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "#/patternProperties", "patternProperties"),
    ({"dependentRequired": {"a": ["b"]}}, "#/dependentRequired", "dependentRequired"),
    ({"dependentSchemas": {"a": {}}}, "#/dependentSchemas", "dependentSchemas"),
    ({"type": "array", "uniqueItems": True}, "#/uniqueItems", "uniqueItems"),
    ({"contains": {"type": "integer"}}, "#/contains", "contains"),
    ({"minProperties": 1}, "#/minProperties", "minProperties"),
    ({"maxProperties": 3}, "#/maxProperties", "maxProperties"),
    ({"type": "integer", "multipleOf": 2}, "#/multipleOf", "multipleOf"),
    ({"unevaluatedProperties": False}, "#/unevaluatedProperties", "unevaluatedProperties"),
    ({"unevaluatedItems": False}, "#/unevaluatedItems", "unevaluatedItems"),
    ({"propertyNames": {"maxLength": 3}}, "#/propertyNames", "propertyNames"),
    ({"type": "string", "format": "email"}, "#/format", "'email'"),
    ({"type": "strng"}, "#/type", "strng"),
    ({"nullable": True}, "#/nullable", "unknown keyword"),
    ({"type": "object", "properties": {"age": {"type": "integer", "minimum": "3"}}},
     "#/properties/age/minimum", "must be a number"),
    ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 5, "maximum": 3}}},
     "#/properties/age/maximum", "minimum 5"),
    ({"type": "number", "exclusiveMinimum": 2, "maximum": 2}, "#/maximum", "exclusiveMinimum"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "#/maxItems", "minItems 3 > maxItems 2"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "#/maxLength", "minLength 3 > maxLength 2"),
    ({"enum": []}, "#/enum", "empty"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"], "additionalProperties": False},
     "#/required", "'b'"),
    ({"$ref": "https://example.com/schema.json"}, "#/$ref", "https://example.com/schema.json"),
    ({"$ref": "other.json#/$defs/a"}, "#/$ref", "other.json#/$defs/a"),
    ({"$ref": "#/$defs/missing", "$defs": {}}, "#/$ref", "does not resolve"),
    ({"$ref": "#anchor"}, "#/$ref", "anchor"),
    ({"$dynamicRef": "#node"}, "#/$dynamicRef", "$dynamicRef"),
    ({"type": "object", "properties": {"a": {"$id": "https://x/y"}}}, "#/properties/a/$id", "$id"),
    ({"type": "string", "pattern": "a(?=b)"}, "#/pattern", "lookahead"),
    ({"type": "string", "pattern": "(?<!a)b"}, "#/pattern", "lookbehind"),
    ({"type": "string", "pattern": "(a)\\1"}, "#/pattern", "backreference"),
    ({"type": "string", "pattern": "\\bword"}, "#/pattern", "word boundary"),
    ({"type": "string", "pattern": "a^b"}, "#/pattern", "start and end"),
    ({"type": "string", "pattern": "x{,3}"}, "#/pattern", "quantifier"),
    ({"type": "string", "pattern": "[a"}, "#/pattern", "not a valid"),
    ({"type": "string", "pattern": "^[a-z]+[0-9]+$", "maxLength": 5}, "#/pattern", "maxLength 5"),
    ({"type": "string", "format": "uuid", "maxLength": 10}, "#/format", "maxLength 10"),
    ({"type": "string", "format": "date", "pattern": "^2"}, "#/pattern", "format"),
    ({"type": "array", "items": [{"type": "string"}]}, "#/items", "prefixItems"),
    ({"type": "integer", "exclusiveMinimum": True, "minimum": 0}, "#/exclusiveMinimum", "draft 4"),
    ({"type": "string", "maxLength": 10 ** 7}, "#/maxLength", "limit"),
    ({"type": "array", "minItems": -1}, "#/minItems", "non-negative"),
    ({"required": ["a", "a"]}, "#/required", "twice"),
    ({"const": float("nan")}, "#/const", "nan"),
    ({"type": "integer", "minimum": 1e20}, "#", "16 digits"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "#/allOf/1/type", "nothing in common"),
    ({"allOf": [{"pattern": "^a"}, {"pattern": "^b"}]}, "#/allOf/1/pattern", "pattern"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
     "#/$defs/b/$ref", "leads back to itself"),
    ({"anyOf": [{"$ref": "#"}, {"type": "string"}]}, "#/anyOf/0/$ref", "leads back to itself"),
    ({"allOf": [{"$ref": "#"}]}, "#/allOf/0/$ref", "leads back to itself"),
    ({"type": "object", "properties": {"a": 3}}, "#/properties/a", "expected a schema"),
    ({"type": "object", "properties": {"x": {"enum": [1], "properties": {}}}}, "#/properties/x/properties",
     "enum"),
    (False, "#", "false"),
    ("string", "#", "expected a schema"),
]


@pytest.mark.parametrize("schema,pointer,words", ERRORS, ids=[e[1] + " " + e[2] for e in ERRORS])
def test_errors_say_where_and_why(schema: Any, pointer: str, words: str) -> None:
    with pytest.raises(SchemaError) as info:
        json_schema_to_gbnf(schema)
    assert isinstance(info.value, ValueError)
    assert info.value.pointer == pointer
    assert str(info.value).startswith(pointer + ": ")
    assert words in str(info.value)


def test_hostile_schemas_are_refused_quickly() -> None:
    deep: Any = {"type": "string"}
    for _ in range(80):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match="deeper than 64"):
        json_schema_to_gbnf(deep)
    with pytest.raises(SchemaError, match="nested repetition"):
        json_schema_to_gbnf({"type": "string", "pattern": "^((a{0,1000}){0,1000})$"})
    # anyOf levels that each double the paths llama.cpp's left-recursion check walks
    defs: Dict[str, Any] = {"a0": {"type": "string"}}
    for i in range(1, 30):
        defs[f"a{i}"] = {"anyOf": [{"$ref": f"#/$defs/a{i - 1}"},
                                   {"anyOf": [{"$ref": f"#/$defs/a{i - 1}"}, {"type": "boolean"}]}]}
    with pytest.raises(SchemaError, match="paths"):
        json_schema_to_gbnf({"$defs": defs, "$ref": "#/$defs/a29"})
    # allOf that would inline 2**40 copies
    defs = {"a0": {"type": "string"}}
    for i in range(1, 40):
        defs[f"a{i}"] = {"allOf": [{"$ref": f"#/$defs/a{i - 1}"}, {"$ref": f"#/$defs/a{i - 1}"}]}
    with pytest.raises(SchemaError):
        json_schema_to_gbnf({"$defs": defs, "$ref": "#/$defs/a39"})
    with pytest.raises(SchemaError, match="bytes|rules"):
        json_schema_to_gbnf({"type": "object", "properties": {
            f"p{i}": {"type": "object", "properties": {f"q{j}": {"type": "integer", "minimum": j} for j in range(200)}}
            for i in range(100)}})


def test_big_counts_stay_within_llama_limits() -> None:
    for schema in ({"type": "string", "maxLength": 100_000}, {"type": "string", "minLength": 5000, "maxLength": 7777},
                   {"type": "array", "items": {"type": "null"}, "minItems": 2345},
                   {"type": "string", "pattern": "^a{3000,4500}$"}):
        text = json_schema_to_gbnf(schema)
        counts = [int(n) for pair in re.findall(r"\{(\d+)(?:,(\d*))?\}", text) for n in pair if n]
        assert counts and max(counts) <= 2000, text
        Grammar(text)  # llama.cpp's limits, checked again by the matcher
    g = _grammar(json_schema_to_gbnf({"type": "string", "minLength": 1234, "maxLength": 1350}))
    for n in (1233, 1234, 1300, 1350, 1351):
        assert g.accepts('"' + "x" * n + '"') == (1234 <= n <= 1350)


def test_annotations_and_extensions_are_ignored() -> None:
    plain = json_schema_to_gbnf({"type": "object", "properties": {"a": {"type": "integer"}}})
    annotated = json_schema_to_gbnf({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/s", "title": "T",
        "description": "d", "x-vendor": {"anything": 1}, "$comment": "c", "examples": [{}], "default": {},
        "type": "object", "properties": {"a": {"type": "integer", "deprecated": True, "readOnly": True,
                                               "writeOnly": False, "default": 1, "x-ui": "spin"}},
        "$defs": {"unused": {"not": {}}}, "uniqueItems": False,
    })
    assert plain == annotated


# --- structure ----------------------------------------------------------------------------------------

def _rules(text: str) -> Dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in text.splitlines() if line)


def test_builder_names_are_unique_and_helpers_shared() -> None:
    b = GrammarBuilder()
    first = b.schema_rule({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}, "args")
    second = b.schema_rule({"type": "array", "items": {"type": "string", "maxLength": 4}}, "args")
    mine = b.add_rule("args", '"<" ws ">"')
    assert len({first, second, mine}) == 3
    text = b.gbnf(f"{first} | {second} | {mine}")
    rules = _rules(text)
    assert len(rules) == len(text.splitlines())  # no name defined twice
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+", n) for n in rules)
    assert list(rules.values()).count('"\\"" char* "\\""') == 1  # one plain string rule, shared
    assert sum(body.startswith("( \" \" |") for body in rules.values()) == 1  # one ws rule
    g = Grammar(text)
    assert g.accepts('{"q": "x"}') and g.accepts('["ab", "cdef"]') and g.accepts("< >")
    assert not g.accepts('["abcde"]')
    with pytest.raises(ValueError, match="taken"):
        b.gbnf(first, root=first)
    with pytest.raises(ValueError):
        b.gbnf(first, root="bad_name")
    with pytest.raises(ValueError):
        b.add_rule("x", '"a"\nroot ::= "b"')
    assert GrammarBuilder.literal('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'


def test_builder_is_unchanged_after_an_error() -> None:
    b = GrammarBuilder()
    b.schema_rule({"type": "string"})
    before = b.gbnf("string")
    with pytest.raises(SchemaError):
        b.schema_rule({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"not": {}}}})
    assert b.gbnf("string") == before


def test_output_is_deterministic() -> None:
    schema = {"type": "object", "properties": {"b": {"enum": ["x", 1]}, "a": {"type": "number", "minimum": 0.5}},
              "additionalProperties": {"type": "string", "pattern": "^\\w+$"}}
    assert json_schema_to_gbnf(schema) == json_schema_to_gbnf(json.loads(json.dumps(schema)))
    assert json_schema_to_gbnf(schema, root="main").startswith("main ::= ")


def test_module_is_not_imported_by_the_package() -> None:
    code = "import sys, gpt4all; assert 'gpt4all._json_schema' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_object_grammar() -> None:
    g = _grammar(JSON_OBJECT_GBNF)
    for good in ('{}', '{"a": 1}', '{"a": [1, {"b": null}], "c": "\\u00e9\\n"}', '{\n  "x": true\n}'):
        assert g.accepts(good), good
    for bad in ('[]', '"x"', '{"a": 1,}', ' {}', '{"a" 1}', '{"a": 01}', '{"a": "\x01"}', '{"a": "\\ud800"}'):
        assert not g.accepts(bad), bad


def test_layout_is_bounded() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    value = {"a": [1, 2]}
    for text in (json.dumps(value), json.dumps(value, separators=(",", ":")), json.dumps(value, indent=2),
                 json.dumps(value, indent="\t")):
        assert accepts(schema, text), text
    assert not accepts(schema, '{"a":  [1]}')  # two spaces
    assert not accepts(schema, '{"a": [1]}\n')
    assert accepts(schema, '{\n' + ' ' * 20 + '"a": []}')
    assert not accepts(schema, '{\n' + ' ' * 21 + '"a": []}')
    assert not accepts({"type": "integer"}, "1" * 17)
    assert accepts({"type": "integer"}, "-" + "9" * 16)


def test_objects_keep_commas_right() -> None:
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in "abcd"}, "required": ["c"]}
    for keys in ("c", "ac", "bc", "abc", "cd", "abcd", "acd"):
        text = json.dumps({k: 1 for k in keys})
        assert accepts(schema, text), text
    for bad in ('{}', '{"a": 1}', '{"c": 1,}', '{, "c": 1}', '{"d": 1, "c": 1}', '{"c": 1, "e": 1}'):
        assert not accepts(schema, bad), bad
    big = {"type": "object", "properties": {f"k{i}": {"type": "null"} for i in range(20)}}
    assert accepts(big, json.dumps({f"k{i}": None for i in range(0, 20, 3)}))
    assert accepts(big, "{}")


def test_additional_keys_never_repeat_declared_ones() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "a\"b": {"type": "integer"}},
              "additionalProperties": {"type": "boolean"}}
    assert accepts(schema, '{"name": "x", "nam": true, "names": false, "": true, "a": true}')
    assert accepts(schema, '{"a\\"b": 1, "a\\"": true}')
    for bad in ('{"name": true}', '{"name": "x", "name": true}', '{"na\\u006de": true}', '{"a\\"b": true}'):
        assert not accepts(schema, bad), bad


def test_recursive_schema() -> None:
    schema = {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"}
    tree = {"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]}
    assert accepts(schema, json.dumps(tree))
    assert not accepts(schema, json.dumps({"v": 1, "kids": [{"kids": []}]}))
    linked = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
              "required": ["next"]}
    assert accepts(linked, '{"next": {"next": {"next": null}}}')


def test_prefix_items_and_counts() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
              "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4}
    for value in ([1], [1, "a"], [1, "a", True], [1, "a", True, False]):
        assert accepts(schema, json.dumps(value)), value
    for value in ([], ["a"], [1, 2], [1, "a", True, False, True], [1, "a", "b"]):
        assert not accepts(schema, json.dumps(value)), value
    closed = {"type": "array", "prefixItems": [{"const": 1}], "items": False}
    assert accepts(closed, "[]") and accepts(closed, "[1]") and not accepts(closed, "[1, 1]")


def test_enum_and_const() -> None:
    schema = {"enum": ["a", 1, None, {"k": [1, "x"]}, 'q"\n']}
    for value in ("a", 1, None, {"k": [1, "x"]}, 'q"\n'):
        assert accepts(schema, json.dumps(value, separators=(",", ":"))), value
    assert not accepts(schema, '"b"') and not accepts(schema, "2")
    assert accepts({"type": "string", "enum": ["a", 1, "bbb"], "maxLength": 2}, '"a"')
    assert not accepts({"type": "string", "enum": ["a", 1, "bbb"], "maxLength": 2}, "1")
    assert accepts({"const": "fixed"}, '"fixed"')


# --- the language, against jsonschema -----------------------------------------------------------------

CORPUS: List[Any] = [
    True, {}, {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": ["string", "null"]}, {"type": ["integer", "number"]},
    {"type": "integer", "minimum": -5, "maximum": 123}, {"type": "integer", "exclusiveMinimum": 0},
    {"type": "integer", "minimum": 999, "maximum": 100000},
    {"type": "integer", "minimum": 2.5, "exclusiveMaximum": 7.0},
    {"type": "number", "minimum": 0.5, "maximum": 1.25},
    {"type": "number", "exclusiveMinimum": -1.5, "exclusiveMaximum": 2},
    {"type": "number", "minimum": 0}, {"type": "number", "exclusiveMaximum": 0},
    {"type": "number", "minimum": -0.001, "maximum": 0.001},
    {"type": "number", "exclusiveMinimum": 0.1, "maximum": 100.3},
    {"type": "string", "minLength": 2, "maxLength": 5}, {"type": "string", "format": "date"},
    {"type": "string", "format": "time"}, {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "pattern": "^[A-Z]{2,3}-\\d{4}$"}, {"type": "string", "pattern": "abc"},
    {"type": "string", "pattern": "^(foo|bar)+(?:baz)?$"}, {"type": "string", "pattern": "^[^a-z\\s]*$"},
    {"type": "string", "pattern": "^\\S+@\\S+\\.\\w{2,}$"}, {"type": "string", "pattern": '^"\\\\.\\n$'},
    {"type": "string", "pattern": "^[\\D]x$"}, {"type": "string", "pattern": "^[a-z]+$", "maxLength": 6},
    {"type": "string", "pattern": "ab", "minLength": 4, "maxLength": 6},
    {"enum": ["red", 3, None, {"a": [1, 2]}, 'quote"d\n']},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["b"]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a", "b"],
     "additionalProperties": False},
    {"type": "object", "properties": {"name": {"type": "string"}, "nam": {"type": "integer"}},
     "additionalProperties": {"type": "number"}},
    {"type": "object", "additionalProperties": {"type": "integer"}}, {"type": "object", "required": ["id"]},
    {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(12)}, "required": ["p5", "p11"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "boolean"},
     "minItems": 1, "maxItems": 4},
    {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"properties": {"b": {"type": "string"}, "a": {"minimum": 3}}}]},
    {"allOf": [{"type": "number", "minimum": 0}, {"type": "integer", "maximum": 10}]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
     "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
               {"properties": {"b": {"type": "integer"}}}]},
    {"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a", "maxLength": 3},
    {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
    {"minimum": 5}, {"properties": {"a": {"type": "integer"}}},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"},
                                               "maxItems": 3}, "when": {"type": "string", "format": "date-time"}},
     "required": ["tags"]},
]


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_drawn_texts_validate(index: int) -> None:
    schema = CORPUS[index]
    check = validator(schema)
    g = _grammar(json_schema_to_gbnf(schema))
    rng = random.Random(index)
    for n in range(25):
        text = g.sample(rng, budget=(10, 60, 250)[n % 3])
        assert g.accepts(text), text
        value = json.loads(text)
        errors = [e.message for e in check.iter_errors(value)]
        assert not errors, (text, errors)


@quick
@given(st.data())
def test_drawn_texts_validate_hypothesis(data: Any) -> None:
    schema = data.draw(st.sampled_from(CORPUS))
    g = _grammar(json_schema_to_gbnf(schema))
    text = g.sample(random.Random(data.draw(st.integers(0, 2 ** 32))), budget=data.draw(st.sampled_from([5, 40, 150])))
    assert not list(validator(schema).iter_errors(json.loads(text))), text


_BOUNDS = [0, 1, -1, 0.1, -0.1, 0.5, 2.5, -2.5, 0.30000000000000004, 1e-7, 123456.789, -99.99, 7, 100, 1e15,
           -1e15, 2 ** 53, 9999999999999999, 1e16, 1e20, 0.001, 99.5, 1000000.0000001]


def _in_number_subset(text: str, integer: bool) -> bool:
    """Texts the bounded grammars promise to accept: no exponent, 15 digits (16 for integers)."""
    m = re.fullmatch(r"-?(0|[1-9][0-9]*)(?:\.([0-9]+))?", text)
    if not m or re.fullmatch(r"-0(\.0*)?", text):
        return False
    whole, frac = m.group(1), m.group(2) or ""
    if integer:
        return not frac and len(whole) <= 16
    return len(whole) <= 16 and (not frac or len(whole) + len(frac) <= 15)


def _near(bound: Any) -> List[str]:
    d = Decimal(repr(bound)) if isinstance(bound, float) and not bound.is_integer() else Decimal(int(bound))
    out = []
    for e in (0, 1, 2, 7, 13, 14, 15):
        for k in (-1, 0, 1):
            t = format(d + k * Decimal(1).scaleb(-e), "f")
            out.append(t.rstrip("0").rstrip(".") if "." in t else t)
    return out


@quick
@given(st.sampled_from(["number", "integer"]), st.sampled_from(_BOUNDS + [None]), st.sampled_from(_BOUNDS + [None]),
       st.booleans(), st.booleans(),
       st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: format(d, "f")),
                max_size=20))
def test_number_bounds_exactly(kind: str, lo: Any, hi: Any, lo_x: bool, hi_x: bool, extra: List[str]) -> None:
    schema: Dict[str, Any] = {"type": kind}
    if lo is not None:
        schema["exclusiveMinimum" if lo_x else "minimum"] = lo
    if hi is not None:
        schema["exclusiveMaximum" if hi_x else "maximum"] = hi
    try:
        text = json_schema_to_gbnf(schema)
    except SchemaError:
        return  # contradictory bounds (checked in the error tests)
    g, check = _grammar(text), validator(schema)
    candidates = set(extra)
    for b in (lo, hi):
        if b is not None:
            candidates.update(_near(b))
    for t in candidates:
        if not re.fullmatch(r"-?\d+(\.\d+)?", t) or len(t) > 40:
            continue
        t = re.sub(r"^(-?)0+(?=\d)", r"\1", t)
        valid = check.is_valid(json.loads(t))
        if g.accepts(t):
            assert valid, (schema, t)
        elif valid:
            assert not _in_number_subset(t, kind == "integer"), (schema, t)


@quick
@given(st.integers(-10 ** 6, 10 ** 6), st.integers(0, 10 ** 6), st.lists(st.integers(-2 * 10 ** 6, 2 * 10 ** 6)))
def test_integer_ranges(lo: int, width: int, values: List[int]) -> None:
    hi = lo + width
    g = _grammar(json_schema_to_gbnf({"type": "integer", "minimum": lo, "maximum": hi}))
    for v in values + [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, -1]:
        assert g.accepts(str(v)) == (lo <= v <= hi), (lo, hi, v)


@quick
@given(st.integers(0, 6), st.integers(0, 6), st.text(st.characters(exclude_categories=["Cs"]), max_size=10))
def test_string_lengths(lo: int, extra: int, value: str) -> None:
    g = _grammar(json_schema_to_gbnf({"type": "string", "minLength": lo, "maxLength": lo + extra}))
    assert g.accepts(json.dumps(value, ensure_ascii=False)) == (lo <= len(value) <= lo + extra)
    assert g.accepts(json.dumps(value)) == (lo <= len(value) <= lo + extra)  # \uXXXX escapes


_PATTERNS = ["^[A-Z]{2,3}-\\d{4}$", "abc", "^(foo|bar)+(?:baz)?$", "^[^a-z\\s]*$", "^\\S+@\\S+\\.\\w{2,}$",
             "^.{3}$", "^[\\D]x$", '^"\\\\.\\n?$', "^(\\d+|[a-f]*)\\.?$", "^\\w+( \\w+)*$", "[0-9]{2}$", "^x|y$",
             "^a{2,4}b?$", "^[-+]?\\d+(\\.\\d+)?$", "^\\x41\\u0042[\\t ]$"]
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\n")


@quick
@given(st.sampled_from(_PATTERNS), st.data())
def test_patterns(pattern: str, data: Any) -> None:
    g = _grammar(json_schema_to_gbnf({"type": "string", "pattern": pattern}))
    value = data.draw(st.from_regex(pattern, fullmatch=True, alphabet=_ASCII))
    assert g.accepts(json.dumps(value, ensure_ascii=False)), (pattern, value)
    drawn = json.loads(g.sample(random.Random(data.draw(st.integers(0, 2 ** 32))), budget=30))
    assert re.search(pattern, drawn), (pattern, drawn)
    other = data.draw(st.text(_ASCII, max_size=8))
    if g.accepts(json.dumps(other, ensure_ascii=False)):
        assert re.search(pattern, other), (pattern, other)


@quick
@given(st.dates(), st.times(), st.uuids(), st.sampled_from(["Z", "+05:30", "-00:00"]))
def test_formats(day: datetime.date, time: datetime.time, uid: Any, zone: str) -> None:
    leap = (day.month, day.day) == (2, 29)  # left out of the grammar
    assert accepts({"type": "string", "format": "date"}, f'"{day.isoformat()}"') == (not leap)
    assert accepts({"type": "string", "format": "time"}, f'"{time.isoformat()}{zone}"')
    assert accepts({"type": "string", "format": "date-time"}, f'"{day.isoformat()}T{time.isoformat()}{zone}"') \
        == (not leap)
    assert accepts({"type": "string", "format": "uuid"}, f'"{uid}"')
    assert accepts({"type": "string", "format": "uuid"}, f'"{str(uid).upper()}"')


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 15, 10 ** 15) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


def _numbers_fit(text: str) -> bool:
    """Numbers within the unbounded grammar's digit limits (outside strings)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return all(len(w) <= 16 and len(f or "") <= 17 and len(e or "") <= 4
               for w, f, e in re.findall(r"-?(\d+)(\.\d+)?([eE][-+]?\d+)?", bare))


@quick
@given(_json_values, st.sampled_from([None, 2, "\t"]))
def test_any_json_value(value: Any, indent: Any) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if _numbers_fit(text) and (indent is None or text.count("\n") == 0 or max(
            len(line) - len(line.lstrip()) for line in text.splitlines()) <= 20):
        assert accepts(True, text), text


@quick
@given(st.data())
def test_objects_and_arrays(data: Any) -> None:
    names = data.draw(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=5, unique=True))
    required = [n for n in names if data.draw(st.booleans())]
    extra = data.draw(st.sampled_from([None, False, True, {"type": "integer"}]))
    schema: Dict[str, Any] = {"type": "object", "properties": {n: {"type": "integer"} for n in names},
                              "required": required}
    if extra is not None:
        schema["additionalProperties"] = extra
    present = [n for n in names if n in required or data.draw(st.booleans())]
    value = {n: data.draw(st.integers(-99, 99)) for n in present}
    if extra not in (None, False):
        for k in data.draw(st.lists(st.text(max_size=4), max_size=3)):
            if k not in names:  # extra keys come after the declared ones
                value.setdefault(k, 1)
    text = json.dumps(value, ensure_ascii=False)
    assert accepts(schema, text) == validator(schema).is_valid(value), (schema, text)
    lo = data.draw(st.integers(0, 3))
    hi = lo + data.draw(st.integers(0, 3))
    items = data.draw(st.lists(st.integers(0, 9), max_size=8))
    arr = {"type": "array", "items": {"type": "integer"}, "minItems": lo, "maxItems": hi}
    assert accepts(arr, json.dumps(items)) == (lo <= len(items) <= hi)


def test_matcher_follows_llama_limits() -> None:
    with pytest.raises(GrammarError):
        Grammar('root ::= "a"{2001}')
    with pytest.raises(GrammarError):
        Grammar('root ::= ("a"{0,100}){0,100}')
    with pytest.raises(GrammarError, match="left recursion"):
        Grammar('root ::= root "a" | "b"')
    with pytest.raises(GrammarError, match="undefined"):
        Grammar("root ::= missing")
    g = Grammar('root ::= "a" [0-9]{1,3} ( "x" | [^a-c] )? .')
    assert g.accepts("a12z!") and g.accepts("a1.") and not g.accepts("a123456") and not g.accepts("a1bb")
