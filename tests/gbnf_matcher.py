"""A small GBNF recognizer and sampler for tests (no model, no native library).

It reads grammar text the way llama.cpp's parser does (src/llama-grammar.cpp): rules,
alternatives, literals, character classes, ``.``, groups, ``* + ? {m} {m,} {m,n}`` unrolled
into helper rules with the same limits (counts over 2000), the same left-recursion check,
and it matches text code point by code point with a set of parse stacks, as the sampler
does.  :meth:`Grammar.sample` draws random strings of the language.
"""
from __future__ import annotations

import random
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

MAX_REPETITION_THRESHOLD = 2000

# element: ("chars", ((lo, hi), ...), negated) | ("any",) | ("ref", rule_id)
Element = Tuple
Alt = List[Element]
Frame = Tuple[int, int, int]  # rule id, alternative index, element index
Stack = Optional[Tuple[Frame, "Stack"]]  # linked, top first; None is the empty stack


class GrammarError(ValueError):
    pass


def _is_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.ids: Dict[str, int] = {}
        self.rules: Dict[int, List[Alt]] = {}

    def symbol(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids))

    def fresh(self, base: str) -> int:
        n = len(self.ids)
        return self.symbol(f"{base}_{n}")

    def space(self, i: int, newline_ok: bool) -> int:
        s = self.s
        while i < len(s) and (s[i] in " \t#" or (newline_ok and s[i] in "\r\n")):
            if s[i] == "#":
                while i < len(s) and s[i] not in "\r\n":
                    i += 1
            else:
                i += 1
        return i

    def name(self, i: int) -> int:
        j = i
        while j < len(self.s) and _is_word(self.s[j]):
            j += 1
        if j == i:
            raise GrammarError(f"expecting name at {self.s[i:i + 20]!r}")
        return j

    def char(self, i: int) -> Tuple[int, int]:
        s = self.s
        if i >= len(s):
            raise GrammarError("unexpected end of input")
        if s[i] == "\\":
            c = s[i + 1] if i + 1 < len(s) else ""
            sizes = {"x": 2, "u": 4, "U": 8}
            if c in sizes:
                h = s[i + 2:i + 2 + sizes[c]]
                if len(h) != sizes[c] or any(ch not in "0123456789abcdefABCDEF" for ch in h):
                    raise GrammarError(f"expecting {sizes[c]} hex chars at {s[i:i + 12]!r}")
                return int(h, 16), i + 2 + sizes[c]
            simple = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
            if c in simple:
                return simple[c], i + 2
            raise GrammarError(f"unknown escape at {s[i:i + 10]!r}")
        return ord(s[i]), i + 1

    def parse(self) -> None:
        i = self.space(0, True)
        while i < len(self.s):
            j = self.name(i)
            name = self.s[i:j]
            rule_id = self.symbol(name)
            i = self.space(j, False)
            if not self.s.startswith("::=", i):
                raise GrammarError(f"expecting ::= at {self.s[i:i + 20]!r}")
            i = self.alternates(self.space(i + 3, True), name, rule_id, False)
            if i < len(self.s) and self.s[i] == "\r":
                i += 2 if self.s[i + 1:i + 2] == "\n" else 1
            elif i < len(self.s) and self.s[i] == "\n":
                i += 1
            elif i < len(self.s):
                raise GrammarError(f"expecting newline or end at {self.s[i:i + 20]!r}")
            i = self.space(i, True)
        for rid, alts in list(self.rules.items()):
            for alt in alts:
                for el in alt:
                    if el[0] == "ref" and el[1] not in self.rules:
                        name = next(n for n, k in self.ids.items() if k == el[1])
                        raise GrammarError(f"undefined rule identifier {name!r}")
        missing = [n for n, k in self.ids.items() if k not in self.rules]
        if missing:
            raise GrammarError(f"undefined rule {missing[0]!r}")

    def alternates(self, i: int, rule_name: str, rule_id: int, nested: bool) -> int:
        alts: List[Alt] = []
        alt: Alt = []
        i = self.sequence(i, rule_name, alt, nested)
        alts.append(alt)
        while i < len(self.s) and self.s[i] == "|":
            alt = []
            i = self.sequence(self.space(i + 1, True), rule_name, alt, nested)
            alts.append(alt)
        self.rules[rule_id] = alts
        return i

    def sequence(self, i: int, rule_name: str, out: Alt, nested: bool) -> int:
        s = self.s
        last = len(out)
        n_prev = 1

        def repeat(lo: int, hi: Optional[int]) -> None:
            nonlocal n_prev
            if last == len(out):
                raise GrammarError("expecting preceding item to */+/?/{")
            prev = out[last:]
            total = hi if hi is not None and hi > 0 else lo if lo > 0 else 1
            if n_prev * total > MAX_REPETITION_THRESHOLD:
                raise GrammarError("number of rules that are going to be repeated exceeds sane defaults")
            if lo == 0:
                del out[last:]
            else:
                for _ in range(lo - 1):
                    out.extend(prev)
            n_opt = 1 if hi is None else hi - lo
            last_rec = -1
            for k in range(n_opt):
                rec_id = self.fresh(rule_name)
                rec = list(prev)
                if k > 0 or hi is None:
                    rec.append(("ref", rec_id if hi is None else last_rec))
                self.rules[rec_id] = [rec, []]
                last_rec = rec_id
            if n_opt > 0:
                out.append(("ref", last_rec))
            n_prev *= total

        while i < len(s):
            c = s[i]
            if c == '"':
                i += 1
                last, n_prev = len(out), 1
                while i >= len(s) or s[i] != '"':
                    if i >= len(s):
                        raise GrammarError("unexpected end of input")
                    cp, i = self.char(i)
                    out.append(("chars", ((cp, cp),), False))
                i = self.space(i + 1, nested)
            elif c == "[":
                i += 1
                negated = s[i:i + 1] == "^"
                if negated:
                    i += 1
                last, n_prev = len(out), 1
                ranges = []
                while i >= len(s) or s[i] != "]":
                    if i >= len(s):
                        raise GrammarError("unexpected end of input")
                    lo, i = self.char(i)
                    hi = lo
                    if s[i:i + 1] == "-" and s[i + 1:i + 2] not in ("]", ""):
                        hi, i = self.char(i + 1)
                    ranges.append((lo, hi))
                out.append(("chars", tuple(ranges), negated))
                i = self.space(i + 1, nested)
            elif c in "<!":
                raise GrammarError("token references are not supported by this matcher")
            elif _is_word(c):
                j = self.name(i)
                ref = self.symbol(s[i:j])
                i = self.space(j, nested)
                last, n_prev = len(out), 1
                out.append(("ref", ref))
            elif c == "(":
                i = self.space(i + 1, True)
                before = len(self.ids)
                sub = self.fresh(rule_name)
                i = self.alternates(i, rule_name, sub, True)
                n_prev = max(1, len(self.ids) - before)
                last = len(out)
                out.append(("ref", sub))
                if i >= len(s) or s[i] != ")":
                    raise GrammarError(f"expecting ')' at {s[i:i + 20]!r}")
                i = self.space(i + 1, nested)
            elif c == ".":
                last, n_prev = len(out), 1
                out.append(("any",))
                i = self.space(i + 1, nested)
            elif c in "*+?":
                i = self.space(i + 1, nested)
                repeat(*{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                i = self.space(i + 1, nested)
                j = i
                while j < len(s) and s[j].isdigit():
                    j += 1
                if j == i:
                    raise GrammarError("expecting an int")
                lo, hi = int(s[i:j]), None  # type: int, Optional[int]
                i = self.space(j, nested)
                if s[i:i + 1] == "}":
                    hi = lo
                    i = self.space(i + 1, nested)
                elif s[i:i + 1] == ",":
                    i = self.space(i + 1, nested)
                    j = i
                    while j < len(s) and s[j].isdigit():
                        j += 1
                    if j > i:
                        hi = int(s[i:j])
                        i = self.space(j, nested)
                    if s[i:i + 1] != "}":
                        raise GrammarError("expecting '}'")
                    i = self.space(i + 1, nested)
                else:
                    raise GrammarError("expecting ','")
                if lo > MAX_REPETITION_THRESHOLD:
                    raise GrammarError("number of repetitions exceeds sane defaults")
                if hi is not None and hi > MAX_REPETITION_THRESHOLD:
                    hi = None
                repeat(lo, hi)
            else:
                break
        return i


class Grammar:
    """A parsed grammar: ``accepts(text)`` and ``sample(rng)``."""

    def __init__(self, text: str, root: str = "root") -> None:
        p = _Parser(text)
        p.parse()
        if root not in p.ids:
            raise GrammarError(f"no rule {root!r}")
        self.names = {k: n for n, k in p.ids.items()}
        self.rules: List[List[Alt]] = [p.rules[k] for k in range(len(p.ids))]
        self.root = p.ids[root]
        self._check_left_recursion()
        self._initial: FrozenSet[Stack] = frozenset(self._advance_all(
            [((self.root, j, 0), None) if alt else None for j, alt in enumerate(self.rules[self.root])]))

    def _check_left_recursion(self) -> None:
        """llama.cpp's check, step for step (it revisits rules: it counts steps, and so do we)."""
        n = len(self.rules)
        visited, in_progress, may_be_empty = [False] * n, [False] * n, [False] * n
        steps = [0]

        def detect(r: int) -> bool:
            steps[0] += 1
            if steps[0] > 2_000_000:
                raise GrammarError("left-recursion check takes too long (exponential grammar)")
            if in_progress[r]:
                return True
            in_progress[r] = True
            if any(not alt for alt in self.rules[r]):
                may_be_empty[r] = True
            for alt in self.rules[r]:
                for el in alt:
                    if el[0] != "ref":
                        break
                    if detect(el[1]):
                        return True
                    if not may_be_empty[el[1]]:
                        break
            in_progress[r] = False
            visited[r] = True
            return False

        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        try:
            for r in range(n):
                if not visited[r] and detect(r):
                    raise GrammarError(f"left recursion detected for rule {self.names[r]!r}")
        finally:
            sys.setrecursionlimit(limit)

    def _advance_all(self, stacks: List[Stack]) -> Set[Stack]:
        out: Set[Stack] = set()
        seen: Set[Stack] = set()
        todo = list(stacks)
        while todo:
            st = todo.pop()
            if st in seen:
                continue
            seen.add(st)
            if st is None:
                out.add(None)
                continue
            (r, a, i), parent = st
            alt = self.rules[r][a]
            el = alt[i]
            if el[0] == "ref":
                nxt = parent if i + 1 == len(alt) else ((r, a, i + 1), parent)
                for j, sub in enumerate(self.rules[el[1]]):
                    todo.append(((el[1], j, 0), nxt) if sub else nxt)
            else:
                out.add(st)
        return out

    @staticmethod
    def _match(el: Element, cp: int) -> bool:
        if el[0] == "any":
            return True
        hit = any(lo <= cp <= hi for lo, hi in el[1])
        return hit != el[2]

    def accepts(self, text: str) -> bool:
        stacks: Set[Stack] = set(self._initial)
        for ch in text:
            cp = ord(ch)
            nxt: List[Stack] = []
            for st in stacks:
                if st is None:
                    continue
                (r, a, i), parent = st
                alt = self.rules[r][a]
                if self._match(alt[i], cp):
                    nxt.append(parent if i + 1 == len(alt) else ((r, a, i + 1), parent))
            if not nxt:
                return False
            stacks = self._advance_all(nxt)
        return None in stacks

    # sampling

    def _heights(self) -> List[float]:
        """Least derivation height of each rule (inf: derives nothing finite)."""
        inf = float("inf")
        h = [inf] * len(self.rules)
        changed = True
        while changed:
            changed = False
            for r, alts in enumerate(self.rules):
                best = min((1 + max([h[el[1]] for el in alt if el[0] == "ref"] or [0]) for alt in alts), default=inf)
                if best < h[r]:
                    h[r], changed = best, True
        return h

    _POOL = ([chr(c) for c in range(0x20, 0x7F)] + list("\t\n\r\x00\x01\x1f\x7f\xa0\xe9\u00fc\u2028\u2029\u0663\ufeff")
             + list("\u4e2d\u6587\U0001F600\u0416\u05d0"))

    def _char(self, el: Element, rng: random.Random) -> str:
        if el[0] == "chars" and not el[2]:
            lo, hi = rng.choice(el[1])
            if hi - lo > 200 and rng.random() < 0.7:
                hi = lo + 200
            for _ in range(50):
                cp = rng.randint(lo, hi)
                if not 0xD800 <= cp <= 0xDFFF:
                    return chr(cp)
            raise GrammarError("class of surrogates only")
        for _ in range(200):
            c = rng.choice(self._POOL)
            if self._match(el, ord(c)) and c != "\x00":
                return c
        for _ in range(10000):
            cp = rng.randint(1, 0x10FFFF)
            if not 0xD800 <= cp <= 0xDFFF and self._match(el, cp):
                return chr(cp)
        raise GrammarError("no character found for a class")

    def sample(self, rng: random.Random, budget: int = 200) -> str:
        """A random string of the language; past `budget` characters it heads for the end."""
        if not hasattr(self, "_h"):
            self._h = self._heights()
        h = self._h
        out: List[str] = []
        todo: List[Element] = [("ref", self.root)]
        while todo:
            el = todo.pop()
            if el[0] != "ref":
                out.append(self._char(el, rng))
                continue
            alts = self.rules[el[1]]
            if len(out) < budget:
                choices = [a for a in alts if all(h[x[1]] < float("inf") for x in a if x[0] == "ref")]
                alt = rng.choice(choices)
            else:
                key = [1 + max([h[x[1]] for x in a if x[0] == "ref"] or [0]) for a in alts]
                alt = alts[key.index(min(key))]
            todo.extend(reversed(alt))
        return "".join(out)
