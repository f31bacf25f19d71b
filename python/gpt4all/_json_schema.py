"""JSON Schema to GBNF: a grammar that makes llama.cpp generate JSON valid against a schema.

:func:`json_schema_to_gbnf` turns a JSON Schema (a parsed dict, draft 2020-12 vocabulary)
into a grammar in llama.cpp's GBNF syntax whose ``root`` rule matches JSON documents that
the schema accepts; :class:`GrammarBuilder` embeds one or more schemas in a larger grammar.
Every text the grammar accepts parses as JSON and validates against the schema (with
``jsonschema``, formats included); the grammar accepts a documented subset of the valid
documents, the part a model needs:

* Layout: no whitespace before or after the document; between tokens nothing, one space,
  or a newline followed by up to 20 spaces/tabs.
* Objects: declared ``properties`` come in declared order, each optional one may be left
  out; keys beyond them (``additionalProperties`` true or a schema) come after them.
  ``additionalProperties`` absent next to ``properties`` means no other keys.  Extra keys
  escape characters the way json.dumps does (so that none spells a declared name another
  way).  Required names missing from ``properties`` take the ``additionalProperties`` schema.
* Numbers: integers have at most 16 digits; unbounded numbers at most 16 digits before and
  16 after the point and an exponent of at most 2 digits.  Bounded numbers (``minimum``...)
  are written without exponent, with at most 15 digits in all (16 without a fraction), so
  that float rounding never crosses a bound; any decimal of that form in range is accepted.
  ``-0`` may appear where 0 is allowed.
* Strings: characters are those JSON allows (escapes checked; ``\\u`` escapes of
  surrogates only as high-low pairs, one character, as Python counts them).  A string
  constrained by ``pattern`` writes each character in its canonical JSON form.  Strings are
  otherwise unbounded.  ``format``: ``date``, ``time``, ``date-time`` (no leap seconds, no
  29 February, ``Z`` upper case, at most 9 fraction digits) and ``uuid``.
* ``pattern``: a regular-expression subset valid both as ECMA-262 and as Python ``re``
  (jsonschema searches with Python's ``re``): literals, escapes, ``.``, classes, groups,
  alternation, quantifiers, ``^``/``$`` at the ends.  ``\\d``/``\\w``/``\\s`` produce only
  characters both dialects agree on.  A pattern without ``^``/``$`` may have anything
  before/after.  It combines with ``minLength``/``maxLength`` when the pattern's length is
  already within them or is set by one repeated character class (an unanchored pattern is
  then matched at the start of the string).
* ``oneOf`` is treated as ``anyOf``: a value that matches several branches can be produced
  (and then fails ``oneOf``); ``anyOf``/``oneOf`` branches are alternatives.
* ``allOf`` (and ``$ref`` with sibling keywords) is merged into one schema: types and enums
  intersected, bounds tightened, properties merged (each meeting the other side's
  ``additionalProperties``), ``anyOf``/``oneOf`` inside distributed over the branches;
  two different ``pattern``/``format`` values are an error.  ``enum``/``const`` keep the values
  that satisfy ``type``, bounds, lengths and ``pattern`` beside them.
* Type-specific keywords without ``type`` restrict the value to the types they apply to.
* Recursion through ``$ref`` works when an object or array lies between a schema and its
  reuse; a ``$ref`` cycle with nothing in between is an error.

Everything else that constrains validation is refused with :class:`SchemaError` (a
``ValueError``) naming the JSON pointer and the reason: unsupported keywords (``not``,
``if``, ``patternProperties``...), unknown keywords (``x-`` extensions are ignored), bad
keyword values, contradictions, remote ``$ref``, unknown formats, regex features outside
the subset, and schemas over the limits below (hostile input arrives over HTTP).

Limits: schema nesting 64 levels; 50 000 schema nodes visited; grammar 2 MB / 20 000 rules;
``minItems``/``maxItems``/``minLength``/``maxLength`` and regex counts up to 100 000
(written so that llama.cpp's 2000-repetition limit holds); regex counts nested in one
another multiply to at most 10 000; 256 alternatives from combining ``allOf`` with ``anyOf``;
10 000 paths through leading alternatives (llama.cpp's left-recursion check walks each).
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import unquote

__all__ = ["JSON_OBJECT_GBNF", "GrammarBuilder", "SchemaError", "json_schema_to_gbnf"]

MAX_SCHEMA_DEPTH = 64
MAX_WORK = 50_000  # schema nodes visited, merges included: bounds exponential $ref/allOf tricks
MAX_GRAMMAR_BYTES = 2_000_000
MAX_RULES = 20_000
MAX_REPEAT = 100_000  # minItems/maxItems/minLength/maxLength and regex {m,n}
MAX_EXPANSION = 400_000  # rules llama.cpp makes when it unrolls x{m,n}
MAX_LEFT_PATHS = 10_000  # llama.cpp's left-recursion check walks every path of leading references
MAX_ALTERNATIVES = 256
MAX_REGEX_NESTING = 10_000  # product of nested regex counts: llama.cpp keeps a stack per position
MAX_INT_DIGITS = 16
MAX_FRACTION_DIGITS = 16
MAX_EXPONENT_DIGITS = 2
MAX_SIGNIFICANT_DIGITS = 15  # bounded numbers: distinct decimals of 15 digits stay distinct doubles
MAX_INDENT = 20
_DIRECT_REPEAT = 1000  # x{m,n} written as is up to here; llama.cpp refuses counts over 2000
_BLOCK = 100

Path = Tuple[Union[str, int], ...]
Ranges = Tuple[Tuple[int, int], ...]
_MAX_CP = 0x10FFFF
_NAME_RE = re.compile(r"[a-zA-Z0-9-]+\Z")
_SYMBOL_RE = re.compile(r'(?:[a-zA-Z0-9-]+|\[\^?(?:[^\]\\]|\\.)*\]|"(?:[^"\\]|\\.)*"|\.)\Z')


def _pointer(path: Path) -> str:
    return "#" + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in path)


class SchemaError(ValueError):
    """A schema the converter cannot turn into a grammar; ``pointer`` says where, ``reason`` why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.pointer = _pointer(path)
        self.reason = reason
        super().__init__(f"{self.pointer}: {reason}")


class _Unsatisfiable(SchemaError):
    """Nothing can match; dropped quietly where it comes from combining schemas (allOf)."""


class _Alternatives(list):  # type: ignore[type-arg]
    """Branches made by distributing allOf over anyOf: contradictory ones are dropped."""


# --- sets of code points as sorted, merged ranges -------------------------------------

def _norm(ranges: Any) -> Ranges:
    out: List[List[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _complement(r: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in r:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_CP:
        out.append((nxt, _MAX_CP))
    return tuple(out)


def _union(*sets: Ranges) -> Ranges:
    return _norm([x for s in sets for x in s])


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    return _complement(_union(_complement(a), _complement(b)))


@lru_cache(maxsize=None)
def _py_class(letter: str) -> Ranges:
    """What Python's re means by \\d, \\w or \\s (Unicode); jsonschema matches with it."""
    everything = "".join(map(chr, range(_MAX_CP + 1)))
    return tuple((m.start(), m.end() - 1) for m in re.finditer("\\" + letter + "+", everything))


_ANY: Ranges = ((0, _MAX_CP),)
_DIGITS: Ranges = ((0x30, 0x39),)
_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_ECMA_SPACE: Ranges = _norm([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                             (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
                             (0xFEFF, 0xFEFF)])
_DOT: Ranges = _complement(_norm([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]))  # ECMA's . (Python's is wider)
_JSON_SPECIAL: Ranges = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
_SHORT_ESCAPES = {0x22: '"', 0x5C: "\\", 0x08: "b", 0x0C: "f", 0x0A: "n", 0x0D: "r", 0x09: "t"}


def _shorthand(letter: str) -> Tuple[Ranges, Callable[[], Ranges]]:
    """(characters both ECMA and Python match, a thunk for characters either matches)."""
    if letter == "d":
        return _DIGITS, lambda: _union(_DIGITS, _py_class("d"))
    if letter == "w":
        return _WORD, lambda: _union(_WORD, _py_class("w"))
    # \s: Python's str.isspace() covers all of ECMA's white space but U+FEFF
    return _intersect(_ECMA_SPACE, _complement(((0xFEFF, 0xFEFF),))), lambda: _union(_ECMA_SPACE, _py_class("s"))


# --- GBNF text ----------------------------------------------------------------------------

def _literal(text: str) -> str:
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02X}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _class_char(o: int) -> str:
    if o < 0x80 and chr(o).isalnum():
        return chr(o)
    if o < 0x80:
        return f"\\x{o:02X}"
    if o <= 0xFFFF:
        return f"\\u{o:04X}"
    return f"\\U{o:08X}"


def _class(ranges: Ranges, negate: bool = False) -> str:
    if negate and not ranges:
        return "."
    body = "".join(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _group(alts: Sequence[str]) -> str:
    """Alternatives as one item of a sequence; an empty alternative makes the group optional."""
    nonempty = list(dict.fromkeys(a for a in alts if a))
    optional = len(nonempty) < len(alts)
    if not nonempty:
        return ""
    if len(nonempty) == 1 and not optional and _SYMBOL_RE.match(nonempty[0]):
        return nonempty[0]
    inner = " | ".join(nonempty)
    return f"( {inner} )?" if optional else f"( {inner} )"


def _json_char_alts(ranges: Ranges) -> List[str]:
    """One character of a JSON string, from the set, written the way json.dumps writes it."""
    alts = []
    raw = _intersect(ranges, _complement(_JSON_SPECIAL))
    if len(raw) == 1 and raw[0][0] == raw[0][1]:
        alts.append(_literal(chr(raw[0][0])))
    elif raw:
        comp = _complement(raw)
        alts.append(_class(comp, negate=True) if len(comp) <= len(raw) else _class(raw))
    specials = [o for a, b in _intersect(ranges, _JSON_SPECIAL) for o in range(a, b + 1)]
    short = sorted(ord(_SHORT_ESCAPES[o]) for o in specials if o in _SHORT_ESCAPES)
    if short:
        alts.append('"\\\\" ' + _class(_norm((c, c) for c in short)))
    by_high: Dict[int, List[int]] = {}
    for o in specials:
        if o not in _SHORT_ESCAPES:
            by_high.setdefault(o >> 4, []).append(ord(f"{o & 15:x}"))
    for high, lows in sorted(by_high.items()):
        alts.append(_literal(f"\\u00{high:x}") + " " + _class(_norm((c, c) for c in lows)))
    return alts


def _json_chars(ranges: Ranges) -> Optional[str]:
    alts = _json_char_alts(ranges)
    return None if not alts else alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def _json_dump(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):  # lone surrogates cannot be UTF-8
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text


# --- numbers ----------------------------------------------------------------------------------

def _digits(n: int) -> str:
    return "" if n <= 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"


def _digit_class(lo: int, hi: int) -> str:
    return _literal(str(lo)) if lo == hi else f"[{lo}-{hi}]"


def _uint_ge(s: str) -> str:
    """Digit strings of len(s) that are >= s."""
    if s.strip("0") == "":
        return _digits(len(s))
    d = int(s[0])
    alts = [_join(_literal(s[0]), _uint_ge(s[1:]))]
    if d < 9:
        alts.append(_join(_digit_class(d + 1, 9), _digits(len(s) - 1)))
    return _group(alts)


def _uint_le(s: str) -> str:
    """Digit strings of len(s) that are <= s."""
    if s.strip("9") == "":
        return _digits(len(s))
    d = int(s[0])
    alts = [_join(_literal(s[0]), _uint_le(s[1:]))]
    if d > 0:
        alts.append(_join(_digit_class(0, d - 1), _digits(len(s) - 1)))
    return _group(alts)


def _uint_same_len(a: str, b: str) -> str:
    """Digit strings between a and b (a <= b, same length)."""
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    head = _literal(a[:i]) if i else ""
    if i == len(a):
        return head
    a, b = a[i:], b[i:]
    da, db, n = int(a[0]), int(b[0]), len(a) - 1
    if a[1:].strip("0") == "" and b[1:].strip("9") == "":
        return _join(head, _digit_class(da, db), _digits(n))
    alts = [_join(_literal(a[0]), _uint_ge(a[1:]))]
    if da + 1 <= db - 1:
        alts.append(_join(_digit_class(da + 1, db - 1), _digits(n)))
    alts.append(_join(_literal(b[0]), _uint_le(b[1:])))
    return _join(head, _group(alts))


def _uint_pieces(lo: int, hi: int) -> List[Tuple[int, str]]:
    """Unsigned integers in [lo, hi] without leading zeros, one piece per digit count."""
    pieces = []
    for n in range(len(str(lo)), len(str(hi)) + 1):
        a, b = max(lo, 10 ** (n - 1) if n > 1 else 0), min(hi, 10 ** n - 1)
        if a <= b:
            pieces.append((n, _uint_same_len(str(a), str(b))))
    return pieces


def _int_range(lo: int, hi: int) -> str:
    """A rule body for the integers in [lo, hi]."""
    alts = []
    if lo < 0:
        alts.append(_join('"-"', _group([e for _, e in _uint_pieces(max(1, -hi), -lo)])))
    if hi >= 0:
        alts.extend(e for _, e in _uint_pieces(max(0, lo), hi))
    return " | ".join(alts)


_Bound = Optional[Tuple[str, bool]]  # fraction digits (no trailing zeros), strict


def _fraction(lo: _Bound, hi: _Bound, k: int) -> Tuple[bool, Optional[str]]:
    """Fraction digit strings f of length <= k with 0.f compared to the bounds' 0.g.

    Returns (whether the empty string qualifies, an expression for the nonempty ones)."""
    empty_ok = (lo is None or (lo[0] == "" and not lo[1])) and (hi is None or not (hi[1] and hi[0] == ""))
    if k == 0:
        return empty_ok, None
    groups: Dict[Tuple[_Bound, _Bound], List[int]] = {}
    for d in range(10):
        nlo: _Bound = None
        if lo is not None:
            g = int(lo[0][0]) if lo[0] else 0
            if d < g:
                continue
            if d == g:
                nlo = (lo[0][1:], lo[1])
                if nlo == ("", False):
                    nlo = None
        nhi: _Bound = None
        if hi is not None:
            g = int(hi[0][0]) if hi[0] else 0
            if d > g:
                continue
            if d == g:
                nhi = (hi[0][1:], hi[1])
        groups.setdefault((nlo, nhi), []).append(d)
    alts = []
    for (nlo, nhi), ds in groups.items():
        cls = _class(_norm((0x30 + d, 0x30 + d) for d in ds))
        if nlo is None and nhi is None:
            alts.append(_join(cls, f"[0-9]{{0,{k - 1}}}" if k > 2 else "[0-9]?" if k == 2 else ""))
            continue
        rest_empty, rest = _fraction(nlo, nhi, k - 1)
        if rest is None and not rest_empty:
            continue
        alts.append(_join(cls, "" if rest is None else rest if not rest_empty else _group([rest, ""])))
    return empty_ok, (_group(alts) if alts else None)


def _fraction_suffix(lo: _Bound, hi: _Bound, k: int) -> Optional[str]:
    """The optional '.digits' after an integer part; None when nothing qualifies."""
    empty_ok, nonempty = _fraction(lo, hi, k)
    if nonempty is None:
        return "" if empty_ok else None
    return _group([_join('"."', nonempty)] + ([""] if empty_ok else []))


def _split(x: Decimal) -> Tuple[int, str]:
    whole = int(x.to_integral_value(rounding=ROUND_FLOOR))
    frac = x - whole
    digits = "" if frac == 0 else format(frac, "f").split(".")[1].rstrip("0")
    return whole, digits


def _magnitudes(a: Decimal, ax: bool, b: Decimal, bx: bool) -> List[str]:
    """Unsigned decimals (no exponent) between a and b, a, b >= 0, x = exclusive."""
    if a > b or (a == b and (ax or bx)):
        return []
    ia, fa = _split(a)
    ib, fb = _split(b)
    k = lambda i: max(0, MAX_SIGNIFICANT_DIGITS - len(str(i)))  # noqa: E731
    out = []
    if ia == ib:
        f = _fraction_suffix((fa, ax), (fb, bx), k(ia))
        if f is not None:
            out.append(_join(_literal(str(ia)), f))
        return out
    f = _fraction_suffix((fa, ax) if (fa or ax) else None, None, k(ia))
    if f is not None:
        out.append(_join(_literal(str(ia)), f))
    if ia + 1 <= ib - 1:
        for n, e in _uint_pieces(ia + 1, ib - 1):
            out.append(_join(e, _fraction_suffix(None, None, max(0, MAX_SIGNIFICANT_DIGITS - n)) or ""))
    f = _fraction_suffix(None, (fb, bx), k(ib))
    if f is not None:
        out.append(_join(_literal(str(ib)), f))
    return out


def _number_range(lo: Optional[Decimal], lox: bool, hi: Optional[Decimal], hix: bool) -> Optional[str]:
    """A rule body for the decimals between the bounds (None: unbounded); None if none fit."""
    limit = Decimal(10 ** MAX_INT_DIGITS)
    alts: List[str] = []
    if hi is None or hi > 0 or (hi == 0 and not hix):
        a, ax = (lo, lox) if lo is not None and lo >= 0 else (Decimal(0), False)
        b, bx = (hi, hix) if hi is not None and hi < limit else (limit, True)
        alts.extend(_magnitudes(a, ax, b, bx))
    if lo is None or lo < 0:
        a, ax = (-hi, hix) if hi is not None and hi < 0 else (Decimal(0), True)  # zero: on the other side
        b, bx = (-lo, lox) if lo is not None and -lo < limit else (limit, True)
        neg = _magnitudes(a, ax, b, bx)
        if neg:
            alts.append(_join('"-"', _group(neg)))
    return " | ".join(alts) if alts else None


def _exact(x: Union[int, float]) -> Decimal:
    """The decimal a bound stands for: floats by their shortest repr, as Python prints them."""
    if isinstance(x, float):
        return Decimal(int(x)) if x.is_integer() else Decimal(repr(x))
    return Decimal(x)


# --- formats -----------------------------------------------------------------------------------

_YEAR = '( [1-9] [0-9]{3} | "0" ( [1-9] [0-9]{2} | "0" ( [1-9] [0-9] | "0" [1-9] ) ) )'
_MONTH_DAY = ('( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )'
              ' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
              ' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )')
_HOUR_MIN = '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9]'
_FORMATS: Dict[str, Tuple[str, int, int]] = {  # body, shortest, longest
    "date": (f'{_YEAR} "-" {_MONTH_DAY}', 10, 10),
    "time": (f'{_HOUR_MIN} ":" [0-5] [0-9] ( "." [0-9]{{1,9}} )? ( "Z" | [+\\x2D] {_HOUR_MIN} )', 9, 24),
    "uuid": ('[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}', 36, 36),
}


# --- regular expressions (pattern) ---------------------------------------------------------
# Nodes: ("set", ranges) one character; ("seq", [nodes]); ("alt", [nodes]);
# ("rep", node, min, max or None); ("bol",) and ("eol",) for ^ and $.
_Node = Tuple[Any, ...]
_QUANT_RE = re.compile(r"\{(\d+)(,(\d*))?\}")


class _RegexParser:
    def __init__(self, pattern: str, path: Path) -> None:
        self.p, self.i, self.path, self.depth = pattern, 0, path, 0

    def fail(self, why: str) -> SchemaError:
        return SchemaError(self.path, f"pattern {self.p!r}: {why} (at offset {self.i})")

    def peek(self, n: int = 0) -> str:
        return self.p[self.i + n] if self.i + n < len(self.p) else ""

    def parse(self) -> _Node:
        node = self.alt()
        if self.i < len(self.p):
            raise self.fail("unbalanced ')'")
        return node

    def alt(self) -> _Node:
        branches = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.seq())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def seq(self) -> _Node:
        items = []
        while self.i < len(self.p) and self.peek() not in "|)":
            items.append(self.quantified(self.atom()))
        return ("seq", items)

    def quantified(self, atom: _Node) -> _Node:
        c = self.peek()
        m = _QUANT_RE.match(self.p, self.i) if c == "{" else None
        if c not in ("*", "+", "?") and not m:
            if c == "{":
                raise self.fail("'{' that is not a quantifier {m}, {m,} or {m,n}: escape it as \\{")
            return atom
        if atom[0] in ("bol", "eol"):
            raise self.fail("quantifier after an anchor")
        if m:
            lo, hi = int(m.group(1)), (int(m.group(3)) if m.group(3) else None) if m.group(2) else int(m.group(1))
            self.i = m.end()
            if hi is not None and hi < lo:
                raise self.fail(f"quantifier {{{lo},{hi}}} out of order")
            if max(lo, hi or 0) > MAX_REPEAT:
                raise self.fail(f"repetition count over the limit of {MAX_REPEAT}")
        else:
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.i += 1
        if self.peek() == "?":  # lazy: the same strings
            self.i += 1
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and _QUANT_RE.match(self.p, self.i)):
            raise self.fail("nested quantifier")
        return ("rep", atom, lo, hi)

    def atom(self) -> _Node:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            rest = self.p[self.i:]
            if rest.startswith("?:"):
                self.i += 2
            elif rest.startswith(("?=", "?!")):
                raise self.fail("lookahead is not supported")
            elif rest.startswith(("?<=", "?<!")):
                raise self.fail("lookbehind is not supported")
            elif rest.startswith("?"):
                raise self.fail("group syntax '(?' other than '(?:' (named groups, flags) is not supported")
            self.depth += 1
            if self.depth > MAX_SCHEMA_DEPTH:
                raise self.fail(f"groups nested deeper than {MAX_SCHEMA_DEPTH}")
            node = self.alt()
            self.depth -= 1
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return node
        if c == ")":
            raise self.fail("unbalanced ')'")
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            return ("set", _DOT)
        if c == "^":
            return ("bol",)
        if c == "$":
            return ("eol",)
        if c in "*+?":
            raise self.fail(f"nothing to repeat before {c!r}")
        if c == "{":
            self.i -= 1
            raise self.fail("'{' that is not a quantifier: escape it as \\{")
        if c == "\\":
            lo, _hi, _single = self.escape(in_class=False)
            return ("set", lo)
        return ("set", self.single(ord(c)))

    def single(self, o: int) -> Ranges:
        if 0xD800 <= o <= 0xDFFF:
            raise self.fail("surrogate code points are not supported")
        return ((o, o),)

    def escape(self, in_class: bool) -> Tuple[Ranges, Callable[[], Ranges], Optional[int]]:
        """(characters matched in both dialects, thunk: matched in either, the code point if one)."""
        if self.i >= len(self.p):
            raise self.fail("trailing backslash")
        c = self.p[self.i]
        self.i += 1
        if c in "dws":
            lo, hi = _shorthand(c)
            return lo, hi, None
        if c in "DWS":
            lo, hi = _shorthand(c.lower())
            return _complement(hi()), (lambda: _complement(lo)), None
        simple = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11}
        if c in simple:
            o = simple[c]
        elif c == "b" and in_class:
            o = 8
        elif c in "bB":
            raise self.fail(f"\\{c} (word boundary) is not supported")
        elif c in "123456789" or c == "k":
            raise self.fail("backreferences are not supported")
        elif c == "0":
            if self.peek().isdigit():
                raise self.fail("octal escapes are not supported")
            o = 0
        elif c in "xu":
            n = 2 if c == "x" else 4
            h = self.p[self.i:self.i + n]
            if len(h) != n or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise self.fail(f"\\{c} needs {n} hex digits")
            self.i += n
            o = int(h, 16)
        elif c in "pP":
            raise self.fail("Unicode property escapes \\p{...} are not supported")
        elif c == "c":
            raise self.fail("control escapes \\cX are not supported")
        elif c.isascii() and c.isalnum():
            raise self.fail(f"unknown escape \\{c}")
        else:
            o = ord(c)
        r = self.single(o)
        return r, (lambda: r), o

    def char_class(self) -> Ranges:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        if self.peek() == "]":
            raise self.fail("']' first in a class (ECMA and Python read it differently): escape it as \\]")
        los: List[Ranges] = []
        his: List[Callable[[], Ranges]] = []
        while True:
            if self.i >= len(self.p):
                raise self.fail("unterminated character class")
            if self.peek() == "]":
                self.i += 1
                break
            lo, hi, first = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                _lo2, _hi2, last = self.class_atom()
                if first is None or last is None:
                    raise self.fail("a range with a class escape (\\d, \\w, \\s...) as an end")
                if first > last:
                    raise self.fail("character range out of order")
                r = ((first, last),)
                lo, hi = r, (lambda r=r: r)  # type: ignore[misc]
            los.append(lo)
            his.append(hi)
        if negate:  # a character none of the items matches in either dialect
            return _complement(_union(*[h() for h in his]))
        return _union(*los)

    def class_atom(self) -> Tuple[Ranges, Callable[[], Ranges], Optional[int]]:
        c = self.p[self.i]
        self.i += 1
        if c == "\\":
            return self.escape(in_class=True)
        r = self.single(ord(c))
        return r, (lambda: r), ord(c)


def _re_length(node: _Node) -> Tuple[int, Optional[int]]:
    kind = node[0]
    if kind == "set":
        return 1, 1
    if kind in ("bol", "eol"):
        return 0, 0
    if kind == "rep":
        lo, hi = _re_length(node[1])
        if hi == 0:
            return 0, 0
        return lo * node[2], None if hi is None or node[3] is None else hi * node[3]
    spans = [_re_length(n) for n in node[1]]
    highs = [s[1] for s in spans]
    unbounded = any(h is None for h in highs)
    if kind == "seq":
        return sum(s[0] for s in spans), None if unbounded else sum(highs)  # type: ignore[arg-type]
    return min(s[0] for s in spans), None if unbounded else max(highs)  # type: ignore[type-var]


def _check_no_anchor(node: _Node, parser: _RegexParser) -> None:
    if node[0] in ("bol", "eol"):
        raise parser.fail("^ and $ are only supported at the start and end of the pattern")
    if node[0] in ("seq", "alt"):
        for n in node[1]:
            _check_no_anchor(n, parser)
    elif node[0] == "rep":
        _check_no_anchor(node[1], parser)


# --- schema keywords ---------------------------------------------------------------------------

_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "$defs", "definitions", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary",
    "contentMediaType", "contentEncoding", "contentSchema",
    "discriminator",  # OpenAPI's (pydantic writes it): a hint for readers; the anyOf/oneOf beside it decides
})
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_SUPPORTED = frozenset({
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
    "additionalProperties", "items", "prefixItems", "pattern", "format", *_COUNTS, *_BOUNDS,
})
_UNSUPPORTED = frozenset({
    "not", "if", "then", "else", "patternProperties", "dependentRequired", "dependentSchemas", "dependencies",
    "uniqueItems", "contains", "minContains", "maxContains", "minProperties", "maxProperties", "multipleOf",
    "unevaluatedItems", "unevaluatedProperties", "propertyNames", "additionalItems", "$dynamicRef",
    "$recursiveRef",
})
_FAMILIES = {  # a keyword without "type" restricts the value to these types
    "object": ("properties", "required", "additionalProperties"),
    "array": ("items", "prefixItems", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": _BOUNDS,
}
_WITH_ENUM = frozenset({"type", "enum", "const", "pattern", *_COUNTS, *_BOUNDS})
_FORMAT_SPANS = {"date": (10, 10), "time": (9, 24), "date-time": (20, 35), "uuid": (36, 36)}


def _kind(v: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "an array",
            type(None): "null"}.get(type(v), "an object" if isinstance(v, Mapping) else type(v).__name__)


def _is_annotation(k: str) -> bool:
    return k in _ANNOTATIONS or k.startswith("x-")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has_type(v: Any, t: str) -> bool:
    if t == "integer":
        return _is_num(v) and (isinstance(v, int) or v.is_integer())
    if t == "number":
        return _is_num(v)
    return isinstance(v, {"string": str, "boolean": bool, "null": type(None), "object": Mapping,
                          "array": list}[t])  # type: ignore[arg-type]


def _check_json(v: Any, path: Path, depth: int = 0) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(path, f"value nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise SchemaError(path, f"object key {k!r} in a value is not a string")
            _check_json(x, path, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_json(x, path, depth + 1)
    elif isinstance(v, float) and not (v == v and abs(v) != float("inf")):
        raise SchemaError(path, f"{v!r} is not a JSON number")
    elif not (v is None or isinstance(v, (str, int, float))):
        raise SchemaError(path, f"{_kind(v)} is not a JSON value")


def _canon(v: Any) -> Any:
    """A key equal for values JSON Schema calls equal (1 == 1.0, true != 1)."""
    if isinstance(v, bool) or v is None:
        return ("b", v)
    if _is_num(v):
        return ("n", int(v) if isinstance(v, float) and v.is_integer() else v)
    if isinstance(v, list):
        return ("l", tuple(_canon(x) for x in v))
    if isinstance(v, Mapping):
        return ("d", frozenset((k, _canon(x)) for k, x in v.items()))
    return ("s", v)


def _type_meet(a: Any, b: Any) -> List[str]:
    sa, sb = ({a} if isinstance(a, str) else set(a)), ({b} if isinstance(b, str) else set(b))
    both = sa & sb
    if ("number" in sa and "integer" in sb) or ("integer" in sa and "number" in sb):
        both.add("integer")
    return [t for t in _TYPES if t in both]


def _count(s: Mapping[str, Any], k: str, default: Optional[int]) -> Optional[int]:
    v = s.get(k)
    return default if v is None else int(v)


# --- the builder ---------------------------------------------------------------------------------

class GrammarBuilder:
    """Accumulates named GBNF rules; lets callers embed several schemas in one grammar.

    Helper rules (``ws``, ``string``, ``char``, ``number``, ``integer``, ``boolean``, ``value``,
    ``object``, ``array``...) are made once and shared by every :meth:`schema_rule` call;
    names never collide (a taken name gets a ``-2``, ``-3``... suffix) and ``root`` is kept
    free for :meth:`gbnf`.  After a :class:`SchemaError` the builder is as it was.
    """

    def __init__(self) -> None:
        self._rules: Dict[str, str] = {}
        self._used: Set[str] = {"root"}
        self._memo: Dict[Any, str] = {}
        self._cost: Dict[str, int] = {}  # leading-reference paths, for llama.cpp's left-recursion check
        self._size = 0
        self._expansion = 0

    # public API

    def schema_rule(self, schema: Mapping[str, Any], name_hint: str = "value") -> str:
        """Add rules for the JSON values `schema` accepts; returns the rule name that matches them."""
        saved = (dict(self._rules), set(self._used), dict(self._memo), dict(self._cost), self._size,
                 self._expansion)
        try:
            return _Converter(self, schema).root(name_hint)
        except BaseException:
            (self._rules, self._used, self._memo, self._cost, self._size, self._expansion) = saved
            raise

    def add_rule(self, name_hint: str, body: str) -> str:
        """Add ``name ::= body`` under a fresh name made from `name_hint`; returns the name."""
        if "\n" in body or "\r" in body:
            raise ValueError("a rule body must be a single line")
        name = self._reserve(name_hint)
        self._define(name, body)
        return name

    @staticmethod
    def literal(text: str) -> str:
        """A GBNF string literal matching exactly `text`."""
        return _literal(text)

    def gbnf(self, root_body: str, root: str = "root") -> str:
        """The whole grammar: ``root ::= root_body`` followed by every rule added so far."""
        if not _NAME_RE.match(root):
            raise ValueError(f"rule name {root!r} is not made of letters, digits and '-'")
        if root in self._rules:
            raise ValueError(f"rule name {root!r} is already taken by another rule")
        return "\n".join([f"{root} ::= {root_body}"] + [f"{n} ::= {b}" for n, b in self._rules.items()]) + "\n"

    # rule bookkeeping

    def _reserve(self, hint: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9]+", "-", str(hint)).strip("-")[-40:].strip("-") or "r"
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}-{i}"
        self._used.add(name)
        return name

    def _define(self, name: str, body: str) -> None:
        self._rules[name] = body
        self._size += len(name.encode()) + len(body.encode()) + 5
        if self._size > MAX_GRAMMAR_BYTES:
            raise SchemaError((), f"the grammar would be over {MAX_GRAMMAR_BYTES} bytes")
        if len(self._rules) > MAX_RULES:
            raise SchemaError((), f"the grammar would have over {MAX_RULES} rules")

    def _shared(self, key: Any, hint: str, make: Callable[[], str]) -> str:
        name = self._memo.get(key)
        if name is None:
            name = self._reserve(hint)
            self._memo[key] = name  # first, so that a recursive make() finds it
            self._define(name, make())
        return name

    def _alternatives(self, exprs: Sequence[str], hint: str, path: Path) -> str:
        uniq = list(dict.fromkeys(exprs))
        if len(uniq) == 1:
            return uniq[0]
        cost = 1 + sum(self._cost.get(e, 1) for e in uniq)
        if cost > MAX_LEFT_PATHS:
            raise SchemaError(path, f"too many nested alternatives (over {MAX_LEFT_PATHS} paths)")
        name = self.add_rule(hint, " | ".join(uniq))
        self._cost[name] = cost
        return name

    def _grow(self, n: int) -> None:
        self._expansion += n
        if self._expansion > MAX_EXPANSION:
            raise SchemaError((), f"the grammar's repetitions would unroll into over {MAX_EXPANSION} rules")

    def _rep(self, item: str, lo: int, hi: Optional[int]) -> str:
        """`item` (one symbol) lo to hi times (None: no upper bound), within llama.cpp's limits."""
        if hi == 0:
            return ""
        if hi is None and lo <= 1:
            return f"{item}{'*' if lo == 0 else '+'}"
        if hi == 1:
            return item if lo == 1 else f"{item}?"
        if max(lo, hi or 0) <= _DIRECT_REPEAT:
            self._grow(max(lo, hi or 0))
            return f"{item}{{{lo}}}" if lo == hi else f"{item}{{{lo},{'' if hi is None else hi}}}"
        # big counts: blocks of _BLOCK items, so that no count is over llama.cpp's 2000
        block = self._shared(("block", item), f"{item}-block", lambda: self._rep(item, _BLOCK, _BLOCK))
        q, r = divmod(lo, _BLOCK)
        parts = [self._rep(block, q, q), self._rep(item, r, r)]
        if hi is None:
            parts.append(f"{item}*")
        else:
            q2, r2 = divmod(hi - lo, _BLOCK)
            if q2 == 0:
                parts.append(self._rep(item, 0, r2))
            else:  # 0..q2*B-1 items, or q2*B..q2*B+r2: disjoint, so the parse stays narrow
                few = _join(self._rep(block, 0, q2 - 1), self._rep(item, 0, _BLOCK - 1))
                many = _join(self._rep(block, q2, q2), self._rep(item, 0, r2))
                parts.append(self._shared(("upto", item, hi - lo), f"{item}-upto", lambda: f"{few} | {many}"))
        return _join(*parts)

    # shared JSON rules

    def _ws(self) -> str:
        self._memo.get("ws") or self._grow(MAX_INDENT)
        return self._shared("ws", "ws", lambda: f'( " " | "\\n" [ \\t]{{0,{MAX_INDENT}}} )?')

    def _char(self) -> str:
        # \uXXXX: no lone surrogates; a high-low pair is one character, as Python counts it
        hex4 = self._shared("hex4", "hex4", lambda: (
            '[0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}'
            ' | [dD] [89abAB] [0-9a-fA-F]{2} "\\\\u" [dD] [c-fC-F] [0-9a-fA-F]{2}'))
        return self._shared("char", "char", lambda: r'[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ' + hex4 + " )")

    def _string(self, lo: int = 0, hi: Optional[int] = None) -> str:
        char = self._char()
        return self._shared(("string", lo, hi), "string", lambda: _join('"\\""', self._rep(char, lo, hi), '"\\""'))

    def _number(self) -> str:
        self._memo.get("number") or self._grow(40)
        return self._shared("number", "number", lambda: (
            f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_INT_DIGITS - 1}}} ) ( "." [0-9]{{1,{MAX_FRACTION_DIGITS}}} )?'
            f' ( [eE] [+\\x2D]? [0-9]{{1,{MAX_EXPONENT_DIGITS}}} )?'))

    def _integer(self) -> str:
        self._memo.get("integer") or self._grow(20)
        return self._shared("integer", "integer", lambda: f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_INT_DIGITS - 1}}} )')

    def _boolean(self) -> str:
        return self._shared("boolean", "boolean", lambda: '"true" | "false"')

    def _any(self) -> str:
        """Any JSON value (rule ``value``); also makes ``object`` and ``array``."""
        if "value" in self._memo:
            return self._memo["value"]
        ws, string, number, boolean = self._ws(), self._string(), self._number(), self._boolean()
        value = self._reserve("value")
        self._memo["value"] = value
        obj, arr, member = self._reserve("object"), self._reserve("array"), self._reserve("member")
        self._memo["object"], self._memo["array"] = obj, arr
        self._define(member, f'{string} {ws} ":" {ws} {value} {ws}')
        self._define(obj, f'"{{" {ws} ( {member} ( "," {ws} {member} )* )? "}}"')
        self._define(arr, f'"[" {ws} ( {value} {ws} ( "," {ws} {value} {ws} )* )? "]"')
        self._define(value, f'{obj} | {arr} | {string} | {number} | {boolean} | "null"')
        return value

    def _any_object(self) -> str:
        self._any()
        return self._memo["object"]

    def _format(self, fmt: str) -> str:
        def inner(f: str) -> str:
            self._memo.get(("format-body", f)) or self._grow(30)
            return self._shared(("format-body", f), f"{f}-body", lambda: _FORMATS[f][0])
        body = _join(inner("date"), '"T"', inner("time")) if fmt == "date-time" else inner(fmt)
        return self._shared(("format", fmt), fmt, lambda: _join('"\\""', body, '"\\""'))

    def _key_not_in(self, names: Sequence[str]) -> str:
        """A JSON string (canonical escapes only) whose value is none of `names`."""
        key = ("key-not-in",) + tuple(sorted(set(names)))
        if key in self._memo:
            return self._memo[key]
        tail = self._shared("key-tail", "key-tail", lambda: f'{self._char()}* "\\""')
        trie: Dict[str, Any] = {}
        for n in names:
            node = trie
            for ch in n:
                node = node.setdefault(ch, {})
            node[""] = {}  # end of a name: "" is no character
        top = self._reserve("key")
        self._memo[key] = top
        first = self._reserve("key")
        self._define(top, f'"\\"" {first}')
        todo = [(first, trie)]
        while todo:
            name, node = todo.pop()
            children = sorted(c for c in node if c)
            alts = [] if "" in node else ['"\\""']
            for c in children:
                child = self._reserve("key")
                alts.append(_join(_literal(json.dumps(c, ensure_ascii=False)[1:-1]), child))
                todo.append((child, node[c]))
            other = _json_chars(_complement(_norm((ord(c), ord(c)) for c in children)))
            alts.append(_join(other or "", tail))
            self._define(name, " | ".join(alts))
        return top

    def _pattern(self, pattern: str, lo: int, hi: Optional[int], path: Path) -> str:
        key = ("pattern", pattern, lo, hi)
        if key in self._memo:
            return self._memo[key]
        try:
            re.compile(pattern)
        except re.error as e:  # jsonschema would fail on it
            raise SchemaError(path, f"pattern {pattern!r} is not a valid Python regular expression: {e}") from None
        parser = _RegexParser(pattern, path)
        tree = parser.parse()
        branches = []
        for br in (tree[1] if tree[0] == "alt" else [tree]):
            items = list(br[1])
            start = bool(items) and items[0][0] == "bol"
            items = items[1:] if start else items
            end = bool(items) and items[-1][0] == "eol"
            items = items[:-1] if end else items
            for it in items:
                _check_no_anchor(it, parser)
            fitted = self._fit_length(items, start, end, lo, hi, parser)
            if fitted is not None:
                branches.append(fitted)
        if not branches:
            raise SchemaError(path, f"pattern {pattern!r} cannot be met within minLength {lo} / maxLength {hi}")
        alts = [a for a in (self._re_emit(("seq", items), 1, parser) for items in branches) if a is not None]
        if not alts:
            raise SchemaError(path, f"pattern {pattern!r} matches no character a JSON string can hold")
        body = _join('"\\""', _group(alts), '"\\""')
        name = self.add_rule("pattern", body)
        self._memo[key] = name
        return name

    def _fit_length(self, items: List[_Node], start: bool, end: bool, lo: int, hi: Optional[int],
                    parser: _RegexParser) -> Optional[List[_Node]]:
        """The branch, anything before/after it included, limited to lo..hi characters.

        None when it cannot fit; an error when the limit cannot be expressed."""
        anything: _Node = ("rep", ("set", _ANY), 0, None)
        items = ([] if start else [anything]) + items + ([] if end else [anything])
        mn, mx = _re_length(("seq", items))
        if mn >= lo and (hi is None or (mx is not None and mx <= hi)):
            return items
        if (mx is not None and mx < lo) or (hi is not None and mn > hi):
            return None
        if not start and not end:  # put the match first: then only what follows it varies
            items = items[1:]
        spans = [_re_length(it) for it in items]
        loose = [i for i, (a, b) in enumerate(spans) if a != b]
        if len(loose) == 1 and items[loose[0]][0] == "rep" and items[loose[0]][1][0] == "set":
            i = loose[0]
            fixed = sum(a for j, (a, _) in enumerate(spans) if j != i)
            _, sub, rlo, rhi = items[i]
            nlo = max(rlo, lo - fixed)
            nhi = rhi if hi is None else hi - fixed if rhi is None else min(rhi, hi - fixed)
            if nlo > nhi:
                return None
            return items[:i] + [("rep", sub, nlo, nhi)] + items[i + 1:]
        raise parser.fail(f"cannot combine with minLength {lo} / maxLength {hi} (only an anchored pattern whose "
                          "length varies through one repeated character class can be)")

    def _re_emit(self, node: _Node, weight: int, parser: _RegexParser) -> Optional[str]:
        """GBNF for a regex node (None: matches nothing)."""
        kind = node[0]
        if kind == "set":
            if node[1] == _ANY:
                return self._char()
            alts = _json_char_alts(node[1])
            if len(alts) == 1 and _SYMBOL_RE.match(alts[0]):
                return alts[0]
            return self._shared(("json-chars", node[1]), "pattern-char", lambda: " | ".join(alts)) if alts else None
        if kind == "seq":
            parts = [self._re_emit(n, weight, parser) for n in node[1]]
            return None if any(p is None for p in parts) else _join(*parts)  # type: ignore[arg-type]
        if kind == "alt":
            alts = [a for a in (self._re_emit(n, weight, parser) for n in node[1]) if a is not None]
            return _group(alts) if alts else None
        _, sub, lo, hi = node
        weight *= max(lo, hi or 1, 1)
        if weight > MAX_REGEX_NESTING:
            raise parser.fail(f"nested repetition counts multiply to over {MAX_REGEX_NESTING}")
        inner = self._re_emit(sub, weight, parser)
        if inner is None:
            return "" if lo == 0 else None
        if inner == "":
            return ""
        if not _SYMBOL_RE.match(inner) or inner.startswith("("):
            inner = self.add_rule("pattern-part", inner)
        return self._rep(inner, lo, hi)


# --- the schema walk -----------------------------------------------------------------------------

class _Converter:
    """One schema document: resolves its $refs and turns its nodes into rules of the builder."""

    def __init__(self, builder: GrammarBuilder, doc: Any) -> None:
        self.b = builder
        self.doc = doc
        self.refs: Dict[str, str] = {}  # JSON pointer -> rule name
        self.open: Set[str] = set()  # $refs being expanded with no object/array opened since
        self.depth = 0
        self.work = 0
        self.synth: Set[int] = set()  # ids of allOf wrappers made by merging
        self.keep: List[Any] = []  # keeps those alive, so that ids stay unique

    def root(self, hint: str) -> str:
        return self.visit_ref("#", (), hint)

    def tick(self, path: Path, depth: int) -> None:
        self.work += 1
        if self.work > MAX_WORK:
            raise SchemaError(path, f"schema too complex: over {MAX_WORK} schema nodes to visit")
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(path, f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels "
                                    "(or $ref/allOf recursion with no object or array in between)")

    # keywords

    def check(self, s: Mapping[str, Any], path: Path) -> None:
        for k, v in s.items():
            p = path + (k,)
            if not isinstance(k, str):
                raise SchemaError(path, f"keyword {k!r} is not a string")
            if _is_annotation(k):
                if k == "$id" and s is not self.doc:
                    raise SchemaError(p, "$id inside a schema (an embedded schema resource) is not supported")
                continue
            if k == "uniqueItems" and v is False:
                continue
            if k in _UNSUPPORTED:
                raise SchemaError(p, f"keyword {k!r} is not supported")
            if k not in _SUPPORTED:
                raise SchemaError(p, f"unknown keyword {k!r}")
            self.check_value(k, v, p)

    @staticmethod
    def check_value(k: str, v: Any, p: Path) -> None:
        if k == "type":
            ts = [v] if isinstance(v, str) else v
            if (not isinstance(ts, list) or not ts or len(set(map(str, ts))) != len(ts)
                    or any(not isinstance(t, str) or t not in _TYPES for t in ts)):
                raise SchemaError(p, f"type must be one of {', '.join(_TYPES)} or a list of them without repeats, "
                                     f"got {v!r}")
        elif k == "enum":
            if not isinstance(v, list):
                raise SchemaError(p, f"enum must be an array, got {_kind(v)}")
            if not v:
                raise SchemaError(p, "enum is empty: nothing can match")
            _check_json(v, p)
        elif k == "const":
            _check_json(v, p)
        elif k in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(v, list) or (not v and k != "prefixItems"):
                raise SchemaError(p, f"{k} must be a{' non-empty' if k != 'prefixItems' else 'n'} array of schemas, "
                                     f"got {_kind(v)}")
        elif k in ("$ref", "pattern", "format"):
            if not isinstance(v, str):
                raise SchemaError(p, f"{k} must be a string, got {_kind(v)}")
            if k == "format" and v not in _FORMAT_SPANS:
                raise SchemaError(p, f"format {v!r} is not supported (supported: {', '.join(sorted(_FORMAT_SPANS))})")
        elif k == "properties":
            if not isinstance(v, Mapping):
                raise SchemaError(p, f"properties must be an object, got {_kind(v)}")
        elif k == "required":
            if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
                raise SchemaError(p, "required must be an array of strings")
            if len(set(v)) != len(v):
                raise SchemaError(p, "required lists a name twice")
        elif k in ("additionalProperties", "items"):
            if k == "items" and isinstance(v, list):
                raise SchemaError(p, "the array form of items (draft 4 to 2019-09 tuples) is not supported; "
                                     "use prefixItems")
            if not isinstance(v, (bool, Mapping)):
                raise SchemaError(p, f"{k} must be a schema, got {_kind(v)}")
        elif k in _COUNTS:
            if not _is_num(v) or not float(v).is_integer() or v < 0:
                raise SchemaError(p, f"{k} must be a non-negative integer, got {v!r}")
            if v > MAX_REPEAT:
                raise SchemaError(p, f"{k} {v} is over the supported limit of {MAX_REPEAT}")
        elif k in _BOUNDS:
            if isinstance(v, bool) and k.startswith("exclusive"):
                raise SchemaError(p, f"boolean {k} (draft 4) is not supported; give the bound as a number")
            if not _is_num(v):
                raise SchemaError(p, f"{k} must be a number, got {_kind(v)} {v!r}")
            _check_json(v, p)

    # $ref

    def resolve(self, ref: Any, path: Path) -> Tuple[str, Path, Any]:
        if not isinstance(ref, str):
            raise SchemaError(path, f"$ref must be a string, got {_kind(ref)}")
        if not ref.startswith("#"):
            raise SchemaError(path, f"$ref {ref!r}: only references within the schema ('#...') are supported, "
                                    "not remote or relative ones")
        frag = unquote(ref[1:])
        if frag and not frag.startswith("/"):
            raise SchemaError(path, f"$ref {ref!r}: anchor references are not supported; use a JSON pointer "
                                    "such as '#/$defs/name'")
        node, tpath = self.doc, []  # type: Any, List[Union[str, int]]
        for tok in frag.split("/")[1:] if frag else []:
            tok = tok.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and tok in node:
                node = node[tok]
                tpath.append(tok)
            elif isinstance(node, list) and re.fullmatch("0|[1-9][0-9]*", tok) and int(tok) < len(node):
                node = node[int(tok)]
                tpath.append(int(tok))
            else:
                raise SchemaError(path, f"$ref {ref!r} does not resolve: nothing at {tok!r} in "
                                        f"{_pointer(tuple(tpath))}")
        return _pointer(tuple(tpath)), tuple(tpath), node

    def visit_ref(self, ref: Any, path: Path, hint: Optional[str] = None) -> str:
        key, tpath, target = self.resolve(ref, path)
        name = self.refs.get(key)
        if name is not None:
            if key in self.open:
                raise SchemaError(path, f"$ref {ref!r} leads back to itself with no object or array in between")
            return name
        name = self.b._reserve(hint or str(tpath[-1] if tpath else "schema"))
        self.refs[key] = name
        self.open.add(key)
        try:
            expr = self.visit(target, tpath, name)
        finally:
            self.open.discard(key)
        self.b._define(name, expr)
        self.b._cost[name] = self.b._cost.get(expr, 1) + 1
        return name

    # values

    def visit(self, schema: Any, path: Path, hint: str) -> str:
        """An expression (usually a rule name) for the JSON values `schema` accepts."""
        self.depth += 1
        try:
            self.tick(path, self.depth)
            return self._visit(schema, path, hint)
        finally:
            self.depth -= 1

    def child(self, schema: Any, path: Path, hint: str) -> str:
        """A value inside an object or array: recursion from here on consumes input first."""
        saved, self.open = self.open, set()
        try:
            return self.visit(schema, path, hint)
        finally:
            self.open = saved

    def _visit(self, schema: Any, path: Path, hint: str) -> str:
        b = self.b
        if isinstance(schema, _Alternatives):
            exprs, first = [], None
            for i, branch in enumerate(schema):
                try:
                    exprs.append(self.visit(branch, path, f"{hint}-{i}"))
                except _Unsatisfiable as e:
                    first = first or e
            if not exprs:
                assert first is not None
                raise first
            return b._alternatives(exprs, hint, path)
        if schema is True:
            return b._any()
        if schema is False:
            raise _Unsatisfiable(path, "schema is false: nothing can match")
        if not isinstance(schema, Mapping):
            raise SchemaError(path, f"expected a schema (an object or a boolean), got {_kind(schema)}")
        self.check(schema, path)
        keys = [k for k in schema if not _is_annotation(k)]
        if "$ref" in schema and len(keys) == 1:
            return self.visit_ref(schema["$ref"], path + ("$ref",))
        combos = [k for k in ("anyOf", "oneOf") if k in schema]
        if "$ref" in schema or "allOf" in schema or (combos and len(keys) > 1):
            return self.visit(self.merge([(schema, path)], path, self.depth), path, hint)
        if combos:
            kw = combos[0]
            exprs = [self.visit(br, path + (kw, i), f"{hint}-{i}") for i, br in enumerate(schema[kw])]
            return b._alternatives(exprs, hint, path)
        if "enum" in schema or "const" in schema:
            return self.visit_enum(schema, path, hint)
        t = schema.get("type")
        if t is None:
            types = [f for f, kws in _FAMILIES.items() if any(k in schema for k in kws)]
            if not types:
                return b._any()
        else:
            types = [t] if isinstance(t, str) else list(t)
        if "number" in types and "integer" in types:
            types.remove("integer")
        exprs = [self.visit_type(t, schema, path, hint) for t in types]
        return b._alternatives(exprs, hint, path)

    def visit_type(self, t: str, s: Mapping[str, Any], path: Path, hint: str) -> str:
        if t == "null":
            return '"null"'
        if t == "boolean":
            return self.b._boolean()
        if t == "string":
            return self.visit_string(s, path)
        if t == "integer":
            return self.visit_integer(s, path)
        if t == "number":
            return self.visit_number(s, path)
        if t == "object":
            return self.visit_object(s, path, hint)
        return self.visit_array(s, path, hint)

    def visit_enum(self, s: Mapping[str, Any], path: Path, hint: str) -> str:
        for k in s:
            if k not in _WITH_ENUM and not _is_annotation(k):
                raise SchemaError(path + (k,), f"{k!r} together with enum/const is not supported")
        if "const" in s:
            values, where = [s["const"]], path + ("const",)
            if "enum" in s:
                values = [v for v in values if any(_canon(v) == _canon(e) for e in s["enum"])]
        else:
            values, where = list(s["enum"]), path + ("enum",)
        kept = [v for v in values if self.value_ok(v, s, path)]
        if not kept:
            raise _Unsatisfiable(where, "no enum/const value satisfies the other keywords")
        return self.b._alternatives([_literal(_json_dump(v)) for v in kept], hint, path)

    @staticmethod
    def value_ok(v: Any, s: Mapping[str, Any], path: Path) -> bool:
        t = s.get("type")
        if t is not None and not any(_has_type(v, x) for x in ([t] if isinstance(t, str) else t)):
            return False
        if _is_num(v):
            for k, ok in (("minimum", lambda b: v >= b), ("maximum", lambda b: v <= b),
                          ("exclusiveMinimum", lambda b: v > b), ("exclusiveMaximum", lambda b: v < b)):
                if k in s and not ok(s[k]):
                    return False
        if isinstance(v, str):
            if len(v) < _count(s, "minLength", 0) or len(v) > _count(s, "maxLength", len(v)):  # type: ignore[operator]
                return False
            if "pattern" in s:
                try:
                    if not re.search(s["pattern"], v):
                        return False
                except re.error as e:
                    raise SchemaError(path + ("pattern",), f"not a valid Python regular expression: {e}") from None
        if isinstance(v, list):
            if len(v) < _count(s, "minItems", 0) or len(v) > _count(s, "maxItems", len(v)):  # type: ignore[operator]
                return False
        return True

    def visit_string(self, s: Mapping[str, Any], path: Path) -> str:
        lo, hi = _count(s, "minLength", 0), _count(s, "maxLength", None)
        assert lo is not None
        if hi is not None and lo > hi:
            raise _Unsatisfiable(path + ("maxLength",), f"minLength {lo} > maxLength {hi}")
        fmt, pattern = s.get("format"), s.get("pattern")
        if fmt is not None:
            if pattern is not None:
                raise SchemaError(path + ("pattern",), "pattern together with format is not supported")
            flo, fhi = _FORMAT_SPANS[fmt]
            if flo < lo or (hi is not None and fhi > hi):
                raise SchemaError(path + ("format",), f"format {fmt!r} has {flo} to {fhi} characters, which is not "
                                                      f"within minLength {lo} / maxLength {hi}")
            return self.b._format(fmt)
        if pattern is not None:
            return self.b._pattern(pattern, lo, hi, path + ("pattern",))
        return self.b._string(lo, hi)

    @staticmethod
    def bounds(s: Mapping[str, Any], path: Path) -> Tuple[Optional[Decimal], bool, Optional[Decimal], bool]:
        lo = hi = None  # type: Optional[Decimal]
        lox = hix = False
        lo_kw = hi_kw = ""
        if "minimum" in s:
            lo, lo_kw = _exact(s["minimum"]), "minimum"
        if "exclusiveMinimum" in s:
            e = _exact(s["exclusiveMinimum"])
            if lo is None or e >= lo:
                lo, lox, lo_kw = e, True, "exclusiveMinimum"
        if "maximum" in s:
            hi, hi_kw = _exact(s["maximum"]), "maximum"
        if "exclusiveMaximum" in s:
            e = _exact(s["exclusiveMaximum"])
            if hi is None or e <= hi:
                hi, hix, hi_kw = e, True, "exclusiveMaximum"
        if lo is not None and hi is not None and (lo > hi or (lo == hi and (lox or hix))):
            raise _Unsatisfiable(path + (hi_kw,), f"{lo_kw} {lo} and {hi_kw} {hi} leave no number")
        return lo, lox, hi, hix

    def visit_integer(self, s: Mapping[str, Any], path: Path) -> str:
        lo, lox, hi, hix = self.bounds(s, path)
        if lo is None and hi is None:
            return self.b._integer()
        cap = 10 ** MAX_INT_DIGITS - 1
        ilo = -cap if lo is None else (int(lo.to_integral_value(ROUND_FLOOR)) + 1 if lox
                                       else int(lo.to_integral_value(ROUND_CEILING)))
        ihi = cap if hi is None else (int(hi.to_integral_value(ROUND_CEILING)) - 1 if hix
                                      else int(hi.to_integral_value(ROUND_FLOOR)))
        if lo is not None and hi is not None and ilo > ihi:
            raise _Unsatisfiable(path, f"no integer lies between the bounds {lo} and {hi}")
        ilo, ihi = max(ilo, -cap), min(ihi, cap)
        if ilo > ihi:
            raise SchemaError(path, f"the bounds leave no integer of at most {MAX_INT_DIGITS} digits")
        return self.b._shared(("int", ilo, ihi), "integer-range", lambda: _int_range(ilo, ihi))

    def visit_number(self, s: Mapping[str, Any], path: Path) -> str:
        lo, lox, hi, hix = self.bounds(s, path)
        if lo is None and hi is None:
            return self.b._number()
        body = _number_range(lo, lox, hi, hix)
        if body is None:
            raise SchemaError(path, f"the bounds leave no number of at most {MAX_INT_DIGITS} integer digits "
                                    f"and {MAX_SIGNIFICANT_DIGITS} significant digits")
        self.b._memo.get(("num", lo, lox, hi, hix)) or self.b._grow(60)
        return self.b._shared(("num", lo, lox, hi, hix), "number-range", lambda: body)  # type: ignore[return-value]

    def visit_object(self, s: Mapping[str, Any], path: Path, hint: str) -> str:
        b = self.b
        props: Mapping[str, Any] = s.get("properties") or {}
        required: List[str] = list(s.get("required") or [])
        addl = s.get("additionalProperties")
        if not props and not required and addl in (None, True):
            return b._any_object()
        extras: Any = (None if props else True) if addl is None else (None if addl is False else addl)
        names = list(props) + [n for n in required if n not in props]
        ws = b._ws()
        items: List[Tuple[str, bool]] = []  # (rule for "key": value, required)
        for name in names:
            req = name in required
            if name in props:
                sub, sp = props[name], path + ("properties", name)
            elif extras is None:
                raise SchemaError(path + ("required",), f"required property {name!r} is not in properties and "
                                                        "additionalProperties is false")
            else:
                sub, sp = extras, path + ("additionalProperties",)
            if sub is False:
                if req:
                    raise _Unsatisfiable(sp, f"property {name!r} is required but its schema is false")
                continue
            try:
                value = self.child(sub, sp, f"{hint}-{name}")
            except _Unsatisfiable:
                if req or id(sub) not in self.synth:
                    raise
                continue  # a combination (allOf) no value satisfies: the property stays out
            items.append((b.add_rule(f"{hint}-{name}-kv", f'{_literal(_json_dump(name))} {ws} ":" {ws} {value}'),
                          req))
        extra = None
        if extras is not None:
            try:
                value = self.child(extras, path + ("additionalProperties",), f"{hint}-additional")
                key = b._key_not_in(names) if names else b._string()
                extra = b.add_rule(f"{hint}-additional-kv", f'{key} {ws} ":" {ws} {value}')
            except _Unsatisfiable:
                if id(extras) not in self.synth:
                    raise
        return b.add_rule(hint, _join('"{"', ws, self.members(items, extra, hint), '"}"'))

    def members(self, items: List[Tuple[str, bool]], extra: Optional[str], hint: str) -> str:
        """Members in declared order, optional ones left out, commas right; extra keys last."""
        b, ws = self.b, self.b._ws()
        n, named = len(items), len(items) > 8  # long objects: rules, not quadratic text
        rest = [""] * (n + 1)  # rest[i]: members i.. once a member has been written
        rest[n] = f'( "," {ws} {extra} {ws} )*' if extra else ""
        for i in range(n - 1, -1, -1):
            kv, req = items[i]
            term = f'"," {ws} {kv} {ws}'
            seq = _join(term if req else f"( {term} )?", rest[i + 1])
            rest[i] = b.add_rule(f"{hint}-rest", seq) if named and rest[i + 1] else seq
        first = _group([_join(extra, ws, rest[n]), ""]) if extra else ""  # members i.. before any
        for i in range(n - 1, -1, -1):
            kv, req = items[i]
            lead = _join(kv, ws, rest[i + 1])
            if req:
                first = lead
            elif not first:
                first = f"( {lead} )?"
            else:
                first = b.add_rule(f"{hint}-from-{i}", f"{lead} | {first}")
        return first

    def visit_array(self, s: Mapping[str, Any], path: Path, hint: str) -> str:
        b, ws = self.b, self.b._ws()
        prefix = list(s.get("prefixItems") or [])
        items = s.get("items", True)
        lo, hi = _count(s, "minItems", 0), _count(s, "maxItems", None)
        assert lo is not None
        if hi is not None and lo > hi:
            raise _Unsatisfiable(path + ("maxItems",), f"minItems {lo} > maxItems {hi}")
        limit: Optional[int] = None  # where the array must end
        elems: List[str] = []
        for i, sub in enumerate(prefix):
            if (hi is not None and i >= hi) or sub is False:
                limit = i if sub is False else None
                break
            try:
                elems.append(self.child(sub, path + ("prefixItems", i), f"{hint}-{i}"))
            except _Unsatisfiable:
                if id(sub) not in self.synth:
                    raise
                limit = i
                break
        item = None
        if limit is None and len(elems) == len(prefix):
            if items is False:
                limit = len(prefix)
            else:
                try:
                    item = self.child(items, path + ("items",), f"{hint}-item")
                except _Unsatisfiable:
                    if id(items) not in self.synth:
                        raise
                    limit = len(prefix)
        if limit is not None:
            hi = limit if hi is None else min(hi, limit)
        if hi is not None and lo > hi:
            raise _Unsatisfiable(path + ("minItems",), f"minItems {lo} cannot be met: at most {hi} items fit")
        if hi == 0:
            return b._shared("empty-array", "empty-array", lambda: f'"[" {ws} "]"')
        end = len(elems) if hi is None else min(len(elems), hi)
        start = max(end, 1)  # items written when the open-ended part begins
        tail = ""  # what may follow once i items are written, built from the back
        if item is not None and (hi is None or hi > start):
            sep = b.add_rule(f"{hint}-next", f'"," {ws} {item} {ws}')
            tail = b._rep(sep, max(0, lo - start), None if hi is None else hi - start)
        named = end > 16  # long tuples: rules, not deeply nested groups
        for i in range(end - 1, 0, -1):
            t = _join(f'"," {ws} {elems[i]} {ws}', tail)
            tail = t if i < lo else f"( {t} )?"
            if named:
                tail = b.add_rule(f"{hint}-from-{i}", tail)
        body = _join(elems[0] if elems else item or "", ws, tail)  # type: ignore[arg-type]
        return b.add_rule(hint, _join('"["', ws, body if lo > 0 else f"( {body} )?", '"]"'))

    # allOf

    def merge(self, members: List[Tuple[Any, Path]], path: Path, depth: int) -> Any:
        """One schema (a dict, or _Alternatives) for all of `members`; $ref and allOf inlined."""
        flat: List[Tuple[Dict[str, Any], Path]] = []
        for s, p in members:
            self.flatten(s, p, frozenset(), flat, depth + 1)
        for idx, (s, p) in enumerate(flat):
            for kw in ("anyOf", "oneOf"):
                if kw not in s:
                    continue
                base = flat[:idx] + [({k: v for k, v in s.items() if k != kw}, p)] + flat[idx + 1:]
                alts, first = _Alternatives(), None
                for i, branch in enumerate(s[kw]):
                    try:
                        m = self.merge(base + [(branch, p + (kw, i))], path, depth + 1)
                    except _Unsatisfiable as e:
                        first = first or e
                        continue
                    alts.extend(m if isinstance(m, _Alternatives) else [m])
                    if len(alts) > MAX_ALTERNATIVES:
                        raise SchemaError(path, f"combining allOf with anyOf/oneOf gives over {MAX_ALTERNATIVES} "
                                                "alternatives")
                if not alts:
                    assert first is not None
                    raise first
                return alts
        return self.combine(flat)

    def flatten(self, s: Any, p: Path, chain: FrozenSet[str], out: List[Tuple[Dict[str, Any], Path]],
                depth: int) -> None:
        self.tick(p, depth)
        if s is True:
            return
        if s is False:
            raise _Unsatisfiable(p, "schema is false: nothing can match")
        if not isinstance(s, Mapping):
            raise SchemaError(p, f"expected a schema (an object or a boolean), got {_kind(s)}")
        self.check(s, p)
        if "$ref" in s:
            key, tpath, target = self.resolve(s["$ref"], p + ("$ref",))
            if key in chain or key in self.open:
                raise SchemaError(p + ("$ref",), f"$ref {s['$ref']!r} leads back to itself with no object or "
                                                 "array in between")
            self.flatten(target, tpath, chain | {key}, out, depth + 1)
        for i, m in enumerate(s.get("allOf", ())):
            self.flatten(m, p + ("allOf", i), chain, out, depth + 1)
        rest = {k: v for k, v in s.items() if k not in ("$ref", "allOf") and not _is_annotation(k)}
        if rest:
            out.append((rest, p))

    def combine(self, flat: List[Tuple[Dict[str, Any], Path]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        objs: List[Tuple[Mapping[str, Any], Any]] = []
        arrs: List[Tuple[List[Any], Any]] = []
        for s, p in flat:
            for k, v in s.items():
                if k in ("properties", "additionalProperties", "prefixItems", "items"):
                    continue
                if k == "const":
                    k, v = "enum", [v]
                out[k] = v if k not in out else self.combine_keyword(k, out[k], v, p)
            if "properties" in s or "additionalProperties" in s:
                objs.append((s.get("properties") or {}, s.get("additionalProperties")))
            if "prefixItems" in s or "items" in s:
                arrs.append((list(s.get("prefixItems") or []), s.get("items")))
        if objs:  # a name one member does not declare meets that member's additionalProperties
            names = list(dict.fromkeys(n for props, _ in objs for n in props))
            if names:
                out["properties"] = {n: self.all_of([props[n] if n in props else True if ad is None else ad
                                                     for props, ad in objs]) for n in names}
            addls = [ad for _, ad in objs if ad is not None]
            if addls:
                out["additionalProperties"] = self.all_of(addls)
        if arrs:
            n = max(len(pf) for pf, _ in arrs)
            if n:
                out["prefixItems"] = [self.all_of([pf[i] if i < len(pf) else True if it is None else it
                                                   for pf, it in arrs]) for i in range(n)]
            its = [it for _, it in arrs if it is not None]
            if its:
                out["items"] = self.all_of(its)
        return out

    def all_of(self, parts: List[Any]) -> Any:
        parts = [x for x in parts if x is not True]
        if any(x is False for x in parts):
            return False
        if len(parts) <= 1:
            return parts[0] if parts else True
        synth = {"allOf": parts}
        self.synth.add(id(synth))
        self.keep.append(synth)
        return synth

    @staticmethod
    def combine_keyword(k: str, a: Any, b: Any, p: Path) -> Any:
        if k == "type":
            both = _type_meet(a, b)
            if not both:
                raise _Unsatisfiable(p + ("type",), f"types {a!r} and {b!r} in allOf have nothing in common")
            return both
        if k == "enum":
            both = [x for x in a if any(_canon(x) == _canon(y) for y in b)]
            if not both:
                raise _Unsatisfiable(p + ("enum",), "enum/const values in allOf have nothing in common")
            return both
        if k in ("minimum", "exclusiveMinimum", "minLength", "minItems"):
            return max(a, b)
        if k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems"):
            return min(a, b)
        if k == "required":
            return list(a) + [x for x in b if x not in a]
        if k in ("pattern", "format") and a == b:
            return a
        raise SchemaError(p + (k,), f"two different {k!r} values in allOf cannot be combined")


def json_schema_to_gbnf(schema: Mapping[str, Any], *, root: str = "root") -> str:
    """Full grammar whose rule `root` matches JSON documents the schema accepts (see the module notes)."""
    builder = GrammarBuilder()
    builder._used.add(root)
    return builder.gbnf(builder.schema_rule(schema, "schema"), root)


JSON_OBJECT_GBNF: str = json_schema_to_gbnf({"type": "object"})
"""Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
