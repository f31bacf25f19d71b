"""A Jinja sandbox with limits, for chat templates (hostile input: they come
from the GGUF file).

`jinja2.sandbox.ImmutableSandboxedEnvironment` keeps a template away from
Python internals; this subclass also bounds what one render may cost:

* **time and steps**: every loop iteration, call, filter and operator checks a
  deadline and a step budget (``range()`` items count as steps);
* **size**: an operation that would build a value larger than the limit
  (``'x' * 10**10``, ``'x'|center(10**9)``, ``'{:>999999999}'.format(1)``,
  ``10**10**8``, a join or replace that explodes) is refused *before* it runs;
* **memory**: what a render creates and keeps (operator, call and filter
  results, output, values stored in a ``namespace``) is charged to a budget;
* **depth**: calls (macros, recursive loops) nest at most ``MAX_CALL_DEPTH``.

Limits scale with the size of the input, so a long conversation is never
refused where a short one is not. Every failure is a ``ChatTemplateError``.
Imported on first use (it imports jinja2).
"""
from __future__ import annotations

import datetime
import re
import threading
import time
import types
from collections import abc
from functools import lru_cache, update_wrapper
from typing import Any, Callable, Dict, List, Optional

from jinja2 import TemplateError, nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace, pass_context
from markupsafe import Markup

from . import errors

TIME_LIMIT_S = 0.5  # per render; real templates take milliseconds
MAX_STEPS = 1_000_000  # loop iterations and range() items, per render
MAX_VALUE = 1_000_000  # characters (about bytes) of one value, and of the output ...
MAX_CREATED = 32_000_000  # ... and of all a render creates; both grow with the input
VALUE_PER_INPUT = 8
CREATED_PER_INPUT = 32
MAX_INT_BITS = 4096
MAX_CALL_DEPTH = 50
MAX_SOURCE = 256_000  # characters of template source

_LOOP_FILTER = "gpt4all_loop_guard"
_SEQUENCES = (list, tuple, set, frozenset, abc.KeysView, abc.ValuesView)
_SCALARS = (str, bytes, int, float, type(None))


def _exceeded(what: str) -> errors.ChatTemplateError:
    return errors.ChatTemplateError(f"the chat template exceeds a limit: it {what}")


class Budget:
    """The limits of one render, and how much of them it has used.

    The first limit hit is remembered: code inside Jinja that swallows a
    ``ValueError`` cannot make the render go on past it.
    """

    __slots__ = ("deadline", "steps", "max_value", "max_created", "created_left", "depth", "kept", "failure")

    def __init__(self, input_size: int):
        self.deadline = time.monotonic() + TIME_LIMIT_S
        self.steps = MAX_STEPS
        self.max_value = MAX_VALUE + VALUE_PER_INPUT * input_size
        self.max_created = self.created_left = MAX_CREATED + CREATED_PER_INPUT * input_size
        self.depth = 0
        self.kept: Dict[int, object] = {}  # objects already charged as kept in a namespace (pinned)
        self.failure: Optional[errors.ChatTemplateError] = None

    def fail(self, what: str) -> errors.ChatTemplateError:
        if self.failure is None:
            self.failure = _exceeded(what)
        return self.failure

    def tick(self, n: int = 1) -> None:
        """Spends steps; checks the deadline."""
        if self.failure is not None:
            raise self.failure
        self.steps -= n
        if self.steps < 0:
            raise self.fail(f"runs more than {MAX_STEPS} loop steps (the limit)")
        if (n > 1 or not self.steps & 15) and time.monotonic() > self.deadline:  # the clock every 16 steps
            raise self.fail(f"runs longer than {TIME_LIMIT_S} s (the limit)")

    def check(self, size: int, what: str = "a value") -> None:
        """Refuses to build something of about ``size`` characters if too big."""
        if size > self.max_value:
            raise self.fail(f"builds {what} of about {size} characters (the limit is {self.max_value})")

    def charge(self, size: int) -> None:
        """Counts what the render created."""
        self.check(size)
        self.created_left -= size
        if self.created_left < 0:
            raise self.fail(f"creates more than {self.max_created} characters of values in all (the limit)")

    def keep(self, value: Any) -> None:
        """Charges what a namespace attribute newly holds on to (a shared object once)."""
        stack, size = [value], 0
        while stack:
            x = stack.pop()
            if id(x) in self.kept:
                continue
            self.kept[id(x)] = x
            size += 16 + _size(x)
            if size > self.created_left:
                break
            stack.extend(_children(x))
        self.created_left -= size
        if self.created_left < 0:
            raise self.fail(f"keeps more than {self.max_created} characters in namespace attributes (the limit)")


_active = threading.local()


def _budget() -> Budget:
    budget = getattr(_active, "budget", None)
    if budget is None:  # e.g. Jinja folding a constant at compile time: it is evaluated at render time instead
        raise errors.ChatTemplateError("a chat template ran outside a limited render")
    return budget


# ------------------------------------------------------------------ sizes

def _children(x: Any) -> Any:
    kind = type(x)
    if kind is list or kind is tuple:  # the common case first: isinstance on ABCs is slow
        return x
    if kind is dict:
        return [v for kv in x.items() for v in kv]
    if isinstance(x, _SCALARS):
        return ()
    if isinstance(x, abc.Mapping):
        return [v for kv in x.items() for v in kv]
    if isinstance(x, Namespace):
        return list(object.__getattribute__(x, "_Namespace__attrs").values())
    if isinstance(x, _SEQUENCES):
        return x
    return ()


def _size(x: Any) -> int:
    """About the characters x takes itself, with the strings it holds directly."""
    if isinstance(x, (str, bytes)):
        return len(x)
    if isinstance(x, int):
        return x.bit_length() // 8 + 1
    if isinstance(x, (abc.Mapping, _SEQUENCES)):
        items = _children(x)
        return 8 * len(items) + sum(len(i) for i in items if isinstance(i, (str, bytes)))
    return 16


def _text_size(x: Any, cap: int, indent: int = 0) -> int:
    """About the length of ``str(x)`` (or its indented JSON): every repeat of a
    shared item counts, as it does in the text. Stops counting past cap."""
    if isinstance(x, str):
        return len(x)
    total, stack = 0, [(x, 0)]
    while stack and total <= cap:
        x, depth = stack.pop()
        total += 2 + depth * indent
        if isinstance(x, (str, bytes)):
            total += len(x)
        elif isinstance(x, int):
            total += x.bit_length() // 3
        else:
            children = _children(x)
            if children:
                total += 2 * len(children)  # counted before they are stacked: the stack stays under cap
                if total <= cap:
                    stack.extend((c, depth + 1) for c in children)
            else:
                total += 16
    return total


# ------------------------------------------------------------------ checks before an operation runs

def _check_bits(budget: Budget, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise budget.fail(f"computes an integer of about {bits} bits (the limit is {MAX_INT_BITS})")


def _check_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    if op == "*":
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(budget, left.bit_length() + right.bit_length())
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and isinstance(seq, (str, bytes, list, tuple)):
                budget.check(_size(seq) * max(n, 0))
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _check_bits(budget, right * (abs(left).bit_length() - 1))
    elif op == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
            budget.check(_size(left) + _size(right))
    elif op == "%" and isinstance(left, str):
        _check_percent(budget, left, right)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)
_DIGITS = re.compile(r"\d+")


def _check_percent(budget: Budget, fmt: str, args: Any) -> None:
    """``fmt % args``: widths, precisions and repeated arguments."""
    specs, width, star = 0, 0, False
    for m in _PERCENT_SPEC.finditer(fmt):
        specs += 1
        for g in m.group(1, 2):
            if g == "*":
                star = True
            elif g:
                width = max(width, int(g) if len(g) < 12 else 10**12)
    if not specs:
        return
    values = tuple(args.values()) if isinstance(args, abc.Mapping) else args if isinstance(args, tuple) else (args,)
    if star:
        width = max([width] + [abs(v) for v in values if isinstance(v, int)])
    biggest = max((_text_size(v, budget.max_value) for v in values), default=0)
    budget.check(len(fmt) + specs * (width + biggest))


def _check_width(budget: Budget, spec: str) -> None:
    """A ``format()`` spec: no width or precision beyond the value limit."""
    for digits in _DIGITS.findall(spec):
        if len(digits) > 12 or int(digits) > budget.max_value:
            raise budget.fail(f"formats with a width of {digits[:20]} (the limit is {budget.max_value})")


def _check_str_method(budget: Budget, target: Any, name: str, args: tuple, kwargs: Dict[str, Any]) -> tuple:
    """Methods of str/bytes whose result can dwarf their inputs. Returns the
    arguments to call with (an iterator given to join is read once, here)."""
    n = len(target)
    if name == "join" and len(args) == 1:
        items = list(args[0]) if not isinstance(args[0], (list, tuple)) else args[0]
        budget.check(sum(len(i) for i in items if isinstance(i, (str, bytes))) + n * len(items))
        return (items,)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], type(target)) and isinstance(args[1], type(target)):
        old, new = args[0], args[1]
        times = target.count(old) if old else n + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            times = min(times, args[2])
        budget.check(n + times * len(new))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            budget.check(n + target.count("\t" if isinstance(target, str) else b"\t") * size)
    elif name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        budget.check(max(n, args[0]))
    elif name == "translate" and args and isinstance(args[0], abc.Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.check(n * max(longest, 1))
    return args


def _check_call(budget: Budget, func: Any, args: tuple, kwargs: Dict[str, Any]) -> tuple:
    target = getattr(func, "__self__", None)
    if isinstance(func, types.BuiltinMethodType) and isinstance(target, (str, bytes, int)):
        for a in (*args, *kwargs.values()):  # a width, a position, a length (to_bytes): never beyond a value
            if isinstance(a, int) and abs(a) > budget.max_value:
                raise budget.fail(f"passes {a} to {func.__name__}() (the limit is {budget.max_value})")
        if not isinstance(target, int):
            return _check_str_method(budget, target, func.__name__, args, kwargs)
    return args


# ------------------------------------------------------------------ filters

# Filters that never turn a container argument into text: no size check of their arguments.
_STRUCTURAL = frozenset({
    "length", "count", "first", "last", "list", "reverse", "sort", "unique", "map", "select", "reject",
    "selectattr", "rejectattr", "items", "dictsort", "default", "d", "attr", "batch", "slice", "groupby", "random",
    "min", "max", "sum", "abs", "int", "float", "round", "join", "tojson", "format",
})
# Filters no chat template uses that are slow or unbounded on a large input.
_DROPPED = ("pprint", "urlize", "striptags")


def _join_filter(budget: Budget, value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = value if isinstance(value, (str, list, tuple)) else list(value)
    budget.check(_text_size(list(items), budget.max_value) + len(str(d)) * len(items))
    return items


def _replace_filter(budget: Budget, value: Any, old: Any = "", new: Any = "", count: Any = None) -> Any:
    s, old, new = str(value), str(old), str(new)
    times = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    budget.check(len(s) + times * len(new))
    return value


def _indent_filter(budget: Budget, value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> Any:
    s = str(value)
    budget.check(len(s) + (s.count("\n") + 1) * (width if isinstance(width, int) else len(str(width))))
    return value


def _wordwrap_filter(budget: Budget, value: Any, width: Any = 79, break_long_words: Any = True,
                     wrapstring: Any = None, *args: Any, **kwargs: Any) -> Any:
    s = str(value)
    wrapstring = kwargs.get("wrapstring", wrapstring)
    lines = len(s) // max(width, 1) + s.count("\n") + 1 if isinstance(width, int) else len(s)
    budget.tick(lines)  # textwrap loops in Python, out of reach of the step checks
    budget.check(len(s) + lines * len(str(wrapstring or "\n")))
    return value


def _center_filter(budget: Budget, value: Any, width: Any = 80) -> Any:
    if isinstance(width, int):
        budget.check(max(len(str(value)), width))
    return value


def _format_filter(budget: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_percent(budget, str(value), kwargs or args)
    return value


def _tojson_filter(budget: Budget, value: Any, indent: Any = None) -> Any:
    width = indent if isinstance(indent, int) else len(indent) if isinstance(indent, str) else 0
    budget.check(_text_size(value, budget.max_value, indent=max(width, 0)))
    return value


def _slice_filter(budget: Budget, value: Any, slices: Any = 1, *args: Any) -> Any:
    if isinstance(slices, int):
        budget.tick(max(slices, 0))
    return value


def _sum_filter(budget: Budget, value: Any, attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, (int, float)):
        raise errors.ChatTemplateError("the chat template sums something other than numbers (not supported)")
    return value


_FILTER_CHECKS: Dict[str, Callable[..., Any]] = {
    "join": _join_filter, "replace": _replace_filter, "indent": _indent_filter, "wordwrap": _wordwrap_filter,
    "center": _center_filter, "format": _format_filter, "tojson": _tojson_filter, "slice": _slice_filter,
    "sum": _sum_filter,
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter with the limits checked around it.

    A context filter, so that Jinja never runs it at compile time (outside a
    limited render)."""
    from jinja2.utils import _PassArg

    pass_arg = _PassArg.from_obj(func)
    precheck = _FILTER_CHECKS.get(name)
    serializes = name not in _STRUCTURAL

    def guarded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        for a in (value, *args, *kwargs.values()):
            if serializes and not isinstance(a, _SCALARS):
                budget.check(_text_size(a, budget.max_value), "a text")
            if a is not value and isinstance(a, int) and abs(a) > budget.max_value:
                raise budget.fail(f"passes {a} to the {name} filter (the limit is {budget.max_value})")
        if precheck is not None:
            value = precheck(budget, value, *args, **kwargs)
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        budget.charge(_size(result))
        return result

    return pass_context(update_wrapper(guarded, func))  # last: update_wrapper copies func's own marking


class _LoopGuard:
    """What a ``{% for %}`` iterates: the items, a step each."""

    __slots__ = ("items",)

    def __init__(self, items: Any):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        budget = _budget()
        for item in self.items:
            budget.tick()
            yield item


@pass_context
def _loop_guard(context: Any, items: Any) -> _LoopGuard:
    return _LoopGuard(items)


# ------------------------------------------------------------------ globals

def _range(*args: int) -> range:
    items = range(*args)
    n = items.__len__() if abs(items.stop - items.start) < 2**62 else 2**62
    budget = _budget()
    if n > MAX_STEPS:
        raise budget.fail(f"asks for a range of {n} items (the limit is {MAX_STEPS})")
    budget.tick(n)  # its items are steps: nested loops run out of them
    return items


def _raise_exception(message: Any) -> None:
    raise errors.ChatTemplateError(f"the chat template refused the conversation: {str(message)[:1000]}")


def _strftime_now(fmt: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > 200:
        raise errors.ChatTemplateError("the chat template passes strftime_now() a format that is not a short string")
    return datetime.datetime.now().strftime(fmt)


class BudgetNamespace(Namespace):
    """``namespace()``: what its attributes hold on to is charged to the render."""

    def __setitem__(self, name: str, value: Any) -> None:
        _budget().keep(value)
        super().__setitem__(name, value)


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}``: the text it adds is charged (also inside macros)."""
    budget = _budget()
    budget.charge(len(value) if isinstance(value, str) else _text_size(value, budget.max_value))
    return value


# ------------------------------------------------------------------ the environment

class _LimitedFormatter(SandboxedFormatter):
    """``str.format`` with widths and the result size limited."""

    _produced = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._produced = 0
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: Optional[str]) -> Any:
        budget = _budget()
        budget.check(_text_size(value, budget.max_value))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = _budget()
        budget.tick()
        _check_width(budget, format_spec)
        budget.check(_text_size(value, budget.max_value))
        out = super().format_field(value, format_spec)
        self._produced += len(out)
        budget.check(self._produced)
        return out


class _LimitedEscapeFormatter(_LimitedFormatter, SandboxedEscapeFormatter):
    pass


class _CodeGenerator(CodeGenerator):
    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        # `a ~ b` goes through the environment, like the intercepted operators
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the limits of the current `Budget`."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])
    code_generator_class = _CodeGenerator

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
        self.globals.pop("lipsum", None)
        self.globals.update(range=_range, namespace=BudgetNamespace, raise_exception=_raise_exception,
                            strftime_now=_strftime_now)
        for name in _DROPPED:
            self.filters.pop(name, None)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = _loop_guard

    def _parse(self, source: str, name: Optional[str], filename: Optional[str]) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):  # every loop steps through _LoopGuard
            guard = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
            guard.set_environment(self)
            loop.iter = guard
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "+" and type(left) is str and type(right) is str:  # the common case, cheaply
            budget.charge(len(left) + len(right))
            return left + right
        _check_binop(budget, operator, left, right)
        result = self.binop_table[operator](left, right)
        budget.charge(_size(result))
        return result

    def checked_concat(self, values: tuple) -> str:
        budget = _budget()
        budget.tick()
        budget.check(sum(_text_size(v, budget.max_value) for v in values))
        result = "".join(map(str, values))
        budget.charge(len(result))
        return result

    def concat(self, parts: Any) -> str:  # type: ignore[override]
        """Joins the output of a macro, a block or ``{% set %}...{% endset %}``."""
        parts = list(parts)
        _budget().charge(sum(len(p) for p in parts))
        return "".join(parts)

    def wrap_str_format(self, value: Any) -> Optional[Callable[..., str]]:
        """``str.format``/``format_map`` through the limited formatter."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
                "format", "format_map"):
            return None
        target = value.__self__
        if not isinstance(target, str):
            return None
        str_type, is_map = type(target), value.__name__ == "format_map"
        formatter: _LimitedFormatter = (_LimitedEscapeFormatter(self, escape=target.escape)
                                        if isinstance(target, Markup) else _LimitedFormatter(self))

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return str_type(formatter.vformat(target, args, kwargs))

        return update_wrapper(wrapper, value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _budget()
        budget.tick()
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        __obj = __self.wrap_str_format(__obj) or __obj  # Jinja before 3.1.5 hands over the raw method
        args = _check_call(budget, __obj, args, kwargs)
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise budget.fail(f"nests calls more than {MAX_CALL_DEPTH} deep (the limit)")
            result = __context.call(__obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.charge(_size(result))
        return result


@lru_cache(maxsize=1)
def _environment() -> LimitedEnvironment:
    return LimitedEnvironment()


@lru_cache(maxsize=16)
def compile_template(source: str) -> Any:
    """The compiled template; ``ChatTemplateError`` if it is not valid Jinja."""
    if not isinstance(source, str):
        raise errors.ChatTemplateError(f"a chat template must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE:
        raise errors.ChatTemplateError(
            f"the chat template is {len(source)} characters long (the limit is {MAX_SOURCE})")
    try:
        return _environment().from_string(source)
    except TemplateError as e:
        raise errors.ChatTemplateError(f"the chat template is not valid Jinja: {e}") from e
    except RecursionError:
        raise errors.ChatTemplateError("the chat template nests too deeply to compile") from None
    except Exception as e:  # noqa: BLE001 - Python's compiler on generated code: too many nested blocks...
        raise errors.ChatTemplateError(f"the chat template cannot be compiled: {type(e).__name__}: {e}") from e


def render(source: str, input_size: int, **context: Any) -> str:
    """Renders a chat template within the limits (scaled by ``input_size``,
    the characters of the conversation)."""
    template = compile_template(source)
    budget = Budget(input_size)
    previous = getattr(_active, "budget", None)
    _active.budget = budget
    try:
        out: List[str] = []
        total = 0
        for chunk in template.generate(**context):
            total += len(chunk)
            budget.check(total, "an output")
            out.append(chunk)
        if budget.failure is not None:  # swallowed by something inside Jinja: still a failure
            raise budget.failure
        return "".join(out)
    except errors.ChatTemplateError:
        raise
    except RecursionError:
        raise errors.ChatTemplateError("the chat template recurses too deeply") from None
    except MemoryError:
        raise errors.ChatTemplateError("the chat template ran out of memory") from None
    except TemplateError as e:
        raise errors.ChatTemplateError(f"the chat template failed: {e.message or type(e).__name__}") from e
    except Exception as e:  # noqa: BLE001 - TypeError, ZeroDivisionError, ... inside the template
        raise errors.ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from e
    finally:
        _active.budget = previous
