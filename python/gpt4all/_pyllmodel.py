"""``LLModel``: one loaded model, and ``Conversation``: one conversation on it.

This is what ``GPT4All.model`` holds. It knows nothing of chats or
templates: it loads, tokenizes and generates. A model holds the weights
once; each ``Conversation`` has its own cache of evaluated tokens, so each
turn evaluates only its new tokens. Conversations that generate at the same
time, from different threads, are decoded together by the engine (one batch
per step); ctypes releases the GIL during every native call.

``LLModel.generate`` and ``LLModel.stream`` run on the model's main
conversation, or, while another thread is using that one, on a spare
conversation: so one model shared by threads generates for all of them at
once. Calls on one conversation are one at a time.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading
import weakref
from ctypes import byref, c_int32, c_size_t
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from . import _native as native
from . import errors
from ._interrupt import cancel_on_interrupt
from ._params import GenerationParams, check_int

#: ``on_token(token_id, text) -> bool``: return False to stop.
TokenCallback = Callable[[int, str], bool]
#: ``on_progress(n_done, n_total) -> bool``: return False to cancel.
ProgressCallback = Callable[[int, int], bool]

STOP_REASONS = {0: "none", 1: "eog", 2: "length", 3: "callback", 4: "context_full", 5: "cancelled",
                6: "no_allowed_token"}


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model."""

    architecture: str
    name: str
    chat_template: Optional[str]
    backend: str
    device: str
    device_description: str
    n_ctx: int
    n_ctx_train: int
    n_batch: int
    n_vocab: int
    n_embd: int
    n_layer: int
    n_gpu_layers: int
    n_params: int
    size_bytes: int
    bos: Optional[int]
    eos: Optional[int]
    eot: Optional[int]
    add_bos: bool


@dataclass(frozen=True)
class GenerationStats:
    """What one generation call did, as the native side counted it."""

    n_prompt: int
    n_reused: int
    n_evaluated: int
    n_generated: int
    n_past: int
    stop_reason: str
    prompt_ms: float
    generate_ms: float


@dataclass(frozen=True)
class Device:
    """A compute device the engine can use."""

    backend: str
    name: str
    description: str
    vendor: str
    is_gpu: bool
    memory_total: int
    memory_free: int


def list_devices() -> List[Device]:
    """Every compute device found, the CPU included."""
    lib = native.lib()
    out = []
    for i in range(lib.llmodel_device_count()):
        d = native.DeviceInfo()
        native.check(lib.llmodel_device_get(i, byref(d)))
        out.append(Device(native.decode(d.backend), native.decode(d.name), native.decode(d.description),
                          native.decode(d.vendor), bool(d.is_gpu), int(d.memory_total), int(d.memory_free)))
    return out


def resolve_device(device: Optional[str], model_path: Union[str, Path], ngl: int) -> Optional[str]:
    """The engine's name (``"CUDA0"``, ``"Vulkan1"``, ``"MTL0"``) of the device
    a ``device=`` word chooses for this model, or None for the CPU; see
    ``gpt4all._devices.select_device`` for the words.

    A model file that cannot be read keeps the word as given, so that the
    load reports the missing file first (the engine matches the word itself).
    """
    import platform
    import sys

    if device is not None and not isinstance(device, str):
        raise errors.InvalidArgumentError(f"device must be a string or None, not {type(device).__name__}")
    if device is None and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        return None  # the CPU: no need to list (and so wake) the GPUs
    if device is not None and device.strip().lower() in ("", "cpu"):
        return None
    try:
        size = os.path.getsize(model_path)
    except (OSError, TypeError, ValueError):
        return device
    from ._devices import select_device

    # fewer layers than GPT4All's default of 100 ("all") is a partial offload,
    # whose share of the file is unknown before loading: no memory check then
    chosen = select_device(device, list_devices(), model_size=size, check_memory=ngl < 0 or ngl >= 100)
    return chosen.name if chosen is not None else None


def cpu_variant() -> str:
    """The CPU backend variant in use, e.g. ``"haswell"``."""
    return native.decode(native.lib().llmodel_cpu_variant())


def physical_cores() -> int:
    return int(native.lib().llmodel_physical_cores())


def _free_handle(lib: ctypes.CDLL, handle: "ctypes._Pointer") -> None:
    lib.llmodel_model_free(handle)


def logical_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_count(n_threads: Optional[int]) -> int:
    """The threads to use for a requested count: None (0) is the physical
    cores; more than this machine's logical CPUs is capped to them (more
    never helps, and the original accepted any number)."""
    if n_threads is None:
        return 0
    check_int("n_threads", n_threads, 1)
    return min(n_threads, logical_cpus(), native.MAX_THREADS)


# Models alive in this process: at exit each one's running call is cancelled
# and the model freed after it returns, before the interpreter goes away.
_live_models: "weakref.WeakSet[LLModel]" = weakref.WeakSet()


_exiting = False


def _freeze_if_exiting(model: "LLModel") -> None:
    """A call that the interpreter's exit cancelled does not return into its
    (daemon) thread: it waits to be frozen like the thread's other code,
    instead of surfacing an error nobody asked for on the way out."""
    if model._exit_cancelled:
        threading.Event().wait()


def _close_all_at_exit() -> None:
    global _exiting
    for model in list(_live_models):
        model._close_at_exit()
    # from here on nothing native is called: a stream collected during the
    # interpreter's teardown must not wait for a lock a frozen thread holds
    _exiting = True


atexit.register(_close_all_at_exit)


def _opt_token(t: int) -> Optional[int]:
    return None if t < 0 else int(t)


class _Users:
    """Counts the calls in flight on a model's handle, so that it is freed
    only when none can still be entering it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.closing = False
        self.local = threading.local()  # this thread's depth of calls (callbacks nest)

    def depth(self) -> int:
        return getattr(self.local, "depth", 0)


class LLModel:
    """A loaded GGUF model.

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: context length of one conversation, in tokens.
        ngl: layers to offload to the GPU (only with a GPU ``device``).
        device: as for [`GPT4All`][gpt4all.GPT4All]: ``None``, ``"cpu"``,
            ``"gpu"``, a backend, ``"<backend>:<name>"``, a vendor or a
            device name (see ``resolve_device``).
        n_threads: CPU threads; ``None`` means the number of physical cores;
            more than this machine's logical CPUs are capped to them.
        n_batch: most prompt tokens evaluated in one step.
        use_mmap: map the file instead of reading it.
        n_parallel: the most conversations decoded together (1 to 64); the
            cache grows to ``n_ctx * n_parallel`` tokens only as far as
            conversations running at the same time need it.
        f32_weights: on the CPU, hold F16/BF16 weights as F32 (faster
            matrix products, twice their memory, read instead of mapped).
    """

    def __init__(self, model_path: Union[str, Path], n_ctx: int = 2048, ngl: int = 100,
                 device: Optional[str] = None, n_threads: Optional[int] = None, n_batch: int = 512,
                 use_mmap: bool = True, n_parallel: int = 8, f32_weights: bool = False):
        self._handle = None
        check_int("n_ctx", n_ctx, 0)
        check_int("n_batch", n_batch, 1)
        check_int("ngl", ngl, -1)
        check_int("n_parallel", n_parallel, 1, native.MAX_PARALLEL)
        lib = native.lib()
        params = lib.llmodel_load_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_threads = thread_count(n_threads)
        params.n_gpu_layers = ngl
        engine_device = resolve_device(device, model_path, ngl)
        params.device = engine_device.encode() if engine_device else None
        params.use_mmap = use_mmap
        params.n_parallel = n_parallel
        params.f32_weights = bool(f32_weights)
        handle = native.ModelPtr()
        path = str(model_path)
        native.check(lib.llmodel_model_load(path.encode(), byref(params), byref(handle)))
        self._lib = lib
        self._handle = handle
        self._users = _Users()
        self._finalizer = weakref.finalize(self, _free_handle, lib, handle)
        self._finalizer.atexit = False  # _close_all_at_exit does it, after the calls in flight
        self._exit_cancelled = False
        self.n_parallel = n_parallel
        _live_models.add(self)
        self.model_path = path
        self.info = self._read_info()
        self._special_text: dict = {}
        self._main = Conversation(self)
        self._spares: List[Conversation] = []
        self._spares_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def _enter(self) -> "ctypes._Pointer":
        """Counts a call in flight and returns the handle to make it with."""
        users = self._users
        with users.cond:
            if self._handle is None or users.closing or _exiting:
                raise errors.ModelClosedError("the model is closed")
            users.count += 1
            users.local.depth = users.depth() + 1
            return self._handle

    def _leave(self) -> None:
        users = self._users
        with users.cond:
            users.count -= 1
            users.local.depth = users.depth() - 1
            if users.count == 0:
                users.cond.notify_all()
                if users.closing and self._handle is not None:
                    self._free_now()  # closed from inside a call: the last one out frees it

    def _using(self) -> "_Using":
        return _Using(self)

    def _free_now(self) -> None:
        self._handle = None
        # weakref.finalize no longer calls finalizers once its own exit hook has run: detach and call
        found = self._finalizer.detach()
        if found is not None:
            _, free, args, _ = found
            free(*args)

    def close(self) -> None:
        """Frees the weights and every conversation's cache. Safe to call
        more than once.

        Calls running on the model, on any thread, are stopped (prompt
        processing raises ``CancellationError``, generation ends early) and
        closing waits for them to return. From inside a callback of a call
        on this model, the model is freed as the last call returns.
        """
        users = self._users
        with users.cond:
            if self._handle is None or users.closing:
                return
            users.closing = True
            handle = self._handle
        # stops every native call and waits for them (not for this thread's own)
        self._lib.llmodel_model_close(handle)
        with users.cond:
            if users.depth() > 0:
                return  # _leave frees it as the last call returns
            users.cond.wait_for(lambda: users.count == 0)
            if self._handle is not None:
                self._free_now()

    def cancel(self) -> None:
        """Stops every call running on this model, from any thread: prompt
        processing raises ``CancellationError``, generation ends early.
        Nothing happens when no call is running."""
        handle = self._handle
        if handle is not None:
            self._lib.llmodel_cancel(handle)

    def _close_at_exit(self) -> None:
        """At interpreter exit: cancel the calls in flight, free after they
        return. Calls that do not return in time are left alone (and the
        model with them)."""
        if self._handle is None:
            return
        self._exit_cancelled = True
        self.cancel()
        users = self._users
        with users.cond:
            users.closing = True
            if users.cond.wait_for(lambda: users.count == 0, timeout=5) and self._handle is not None:
                self._free_now()

    @property
    def closed(self) -> bool:
        return self._handle is None or self._users.closing

    def _h(self) -> "ctypes._Pointer":
        if self._handle is None or _exiting:
            raise errors.ModelClosedError("the model is closed")
        return self._handle

    def __enter__(self) -> "LLModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_info(self) -> ModelInfo:
        i = native.ModelInfo()
        with self._using() as h:
            native.check(self._lib.llmodel_model_get_info(h, byref(i)))
        return ModelInfo(
            architecture=native.decode(i.architecture), name=native.decode(i.name),
            chat_template=i.chat_template.decode("utf-8", "replace") if i.chat_template else None,
            backend=native.decode(i.backend), device=native.decode(i.device),
            device_description=native.decode(i.device_description), n_ctx=i.n_ctx, n_ctx_train=i.n_ctx_train,
            n_batch=i.n_batch, n_vocab=i.n_vocab, n_embd=i.n_embd, n_layer=i.n_layer,
            n_gpu_layers=i.n_gpu_layers, n_params=int(i.n_params), size_bytes=int(i.size_bytes),
            bos=_opt_token(i.bos), eos=_opt_token(i.eos), eot=_opt_token(i.eot), add_bos=bool(i.add_bos))

    # ------------------------------------------------------------ threads

    def set_thread_count(self, n_threads: int) -> None:
        """Sets the CPU threads used for generation and prompt processing
        (more than this machine's logical CPUs are capped to them)."""
        count = thread_count(n_threads)
        with self._using() as h:
            native.check(self._lib.llmodel_set_threads(h, count))

    def thread_count(self) -> int:
        """The CPU threads in use."""
        with self._using() as h:
            return int(self._lib.llmodel_get_threads(h))

    # ------------------------------------------------------------ tokens

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> List[int]:
        """The token ids of text."""
        data = text.encode("utf-8")
        with self._using() as h:
            cap = len(data) + 8
            for _ in range(2):
                buf = (c_int32 * cap)()
                n = c_size_t()
                status = self._lib.llmodel_tokenize(h, data, len(data), add_special, parse_special, buf, cap, byref(n))
                if status == native.ERR_BUFFER_TOO_SMALL:
                    cap = n.value
                    continue
                native.check(status)
                return list(buf[: n.value])
        raise errors.NativeError("tokenization did not converge")

    def detokenize(self, tokens: Sequence[int], render_special: bool = False) -> str:
        """The text of token ids."""
        arr = (c_int32 * len(tokens))(*tokens)
        with self._using() as h:
            cap = len(tokens) * 8 + 16
            for _ in range(2):
                buf = ctypes.create_string_buffer(cap)
                n = c_size_t()
                status = self._lib.llmodel_detokenize(h, arr, len(tokens), render_special, buf, cap, byref(n))
                if status == native.ERR_BUFFER_TOO_SMALL:
                    cap = n.value
                    continue
                native.check(status)
                return buf.raw[: n.value].decode("utf-8", "replace")
        raise errors.NativeError("detokenization did not converge")

    def meta(self, key: str) -> Optional[str]:
        """One metadata value of the model file as text, or None if absent."""
        with self._using() as h:
            cap = 256
            for _ in range(2):
                buf = ctypes.create_string_buffer(cap)
                n = c_size_t()
                status = self._lib.llmodel_model_meta(h, key.encode(), buf, cap, byref(n))
                if status == native.ERR_BUFFER_TOO_SMALL:
                    cap = n.value + 1
                    continue
                if status != native.OK:
                    return None
                return buf.raw[: n.value].decode("utf-8", "replace")
        return None

    def check_grammar(self, grammar: str, root: str = "root") -> None:
        """Raises ``GrammarError`` (a ``ValueError``), with the line, column
        and reason, if the GBNF grammar cannot constrain this model's
        generation (see ``llmodel_grammar_check``)."""
        if not isinstance(grammar, str):
            raise errors.InvalidArgumentError(f"grammar must be a str, not {type(grammar).__name__}")
        with self._using() as h:
            status = self._lib.llmodel_grammar_check(h, grammar.encode("utf-8", "surrogatepass"), root.encode())
            if status == native.ERR_INVALID_ARGUMENT:
                raise errors.GrammarError(native.last_error())
            native.check(status)

    def token_bytes(self, token: int, render_special: bool = True) -> bytes:
        """The raw bytes of one token as the vocabulary stores it (possibly
        part of a UTF-8 character)."""
        with self._using() as h:
            buf = ctypes.create_string_buffer(64)
            n = c_size_t()
            status = self._lib.llmodel_token_to_piece(h, token, render_special, buf, len(buf), byref(n))
            if status == native.ERR_BUFFER_TOO_SMALL:
                buf = ctypes.create_string_buffer(n.value)
                status = self._lib.llmodel_token_to_piece(h, token, render_special, buf, len(buf), byref(n))
            native.check(status)
            return buf.raw[: n.value]

    def token_text(self, token: Optional[int]) -> str:
        """The text of one special token such as BOS ("" for None)."""
        if token is None:
            return ""
        if token not in self._special_text:
            self._special_text[token] = self.detokenize([token], render_special=True)
        return self._special_text[token]

    # ------------------------------------------------------------ conversations

    def conversation(self) -> "Conversation":
        """A new conversation on this model, with a cache of its own."""
        return Conversation(self)

    def _borrow(self) -> Tuple["Conversation", bool]:
        """The conversation for a call of generate()/stream(): the main one
        when it is free (or holds only this thread's own abandoned stream),
        else a spare. The bool says whether it is a spare to give back."""
        if self._main._free_for_this_thread():
            return self._main, False
        with self._spares_lock:
            if self._spares:
                return self._spares.pop(), True
        return Conversation(self), True

    def _give_back(self, conv: "Conversation") -> None:
        with self._spares_lock:
            if len(self._spares) < self.n_parallel and not conv.closed:
                self._spares.append(conv)
                return
        conv.close()

    def cached_token_count(self) -> int:
        """Tokens held in the main conversation's cache."""
        return self._main.cached_token_count()

    def reset(self) -> None:
        """Forgets the main conversation's cache."""
        self._main.reset()

    def save_state(self) -> bytes:
        """The main conversation's cache and its tokens, for ``load_state``."""
        return self._main.save_state()

    def load_state(self, state: bytes) -> None:
        self._main.load_state(state)

    # ------------------------------------------------------------ generation

    def _params(self, **params: Any) -> "native.GenerateParams":
        """The native struct for generate()'s and stream()'s keyword
        arguments: the fields of GenerationParams, checked there."""
        return GenerationParams(**params).to_native(self._lib)

    def generate(self, prompt: Union[str, Sequence[int]], *, on_token: Optional[TokenCallback] = None,
                 on_progress: Optional[ProgressCallback] = None, **params: Any) -> GenerationStats:
        """Evaluates a prompt (text or token ids) and generates a reply, on
        the main conversation, or on a spare one while another thread uses
        the main one (see :meth:`Conversation.generate`)."""
        conv, spare = self._borrow()
        try:
            return conv.generate(prompt, on_token=on_token, on_progress=on_progress, **params)
        finally:
            if spare:
                self._give_back(conv)

    def stream(self, prompt: Union[str, Sequence[int]], *, on_progress: Optional[ProgressCallback] = None,
               **params: Any) -> "TokenStream":
        """Evaluates a prompt and returns a stream of the reply, on the main
        conversation or a spare one (see :meth:`Conversation.stream`)."""
        conv, spare = self._borrow()
        try:
            stream = conv.stream(prompt, on_progress=on_progress, **params)
        except BaseException:
            if spare:
                self._give_back(conv)
            raise
        if spare:
            stream._on_close = lambda: self._give_back(conv)
        return stream


class _Using:
    """``with model._using() as handle:``: a call in flight on the model."""

    def __init__(self, model: LLModel):
        self.model = model

    def __enter__(self) -> "ctypes._Pointer":
        return self.model._enter()

    def __exit__(self, *exc: object) -> None:
        self.model._leave()


def _free_conversation(lib: ctypes.CDLL, handle: "ctypes._Pointer") -> None:
    if not _exiting:
        lib.llmodel_conversation_free(handle)


class Conversation:
    """One conversation on a model: its own cache of evaluated tokens, so
    that each turn evaluates only what is new, and its own sampler state.

    Calls on one conversation are one at a time (a second thread waits);
    conversations of one model generate at the same time, batched.
    """

    def __init__(self, model: LLModel):
        self._model = model
        self._lib = model._lib
        handle = native.ConversationPtr()
        with model._using() as h:
            native.check(self._lib.llmodel_conversation_new(h, byref(handle)))
        self._handle: Optional["ctypes._Pointer"] = handle
        self._finalizer = weakref.finalize(self, _free_conversation, self._lib, handle)
        self._finalizer.atexit = False
        self._lock = threading.RLock()
        self._stream_ended = threading.Condition(self._lock)
        self._stream: Optional["weakref.ref[TokenStream]"] = None
        self._stream_thread: Optional[int] = None

    @property
    def model(self) -> LLModel:
        return self._model

    @property
    def closed(self) -> bool:
        return self._handle is None or self._model.closed

    def close(self) -> None:
        """Frees the conversation's cache. Safe to call more than once."""
        if not self._lock.acquire(blocking=False):
            self.cancel()  # another thread's call: have it stop, then take the lock
            self._lock.acquire()
        try:
            if self._handle is not None:
                self._end_stream()
                self._handle = None
                self._finalizer()
                self._stream_ended.notify_all()
        finally:
            self._lock.release()

    def cancel(self) -> None:
        """Stops the call running on this conversation, if any, from any
        thread; other conversations go on."""
        handle = self._handle
        if handle is not None:
            self._lib.llmodel_conversation_cancel(handle)

    def _h(self) -> "ctypes._Pointer":
        if self._handle is None:
            raise errors.ModelClosedError("the conversation is closed")
        return self._handle

    def _free_for_this_thread(self) -> bool:
        """Whether a call from this thread could start on it now without waiting."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            stream = self._stream() if self._stream is not None else None
            return stream is None or stream.closed or self._stream_thread == threading.get_ident()
        finally:
            self._lock.release()

    def __enter__(self) -> "Conversation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ state

    def cached_token_count(self) -> int:
        """Tokens currently held in this conversation's cache."""
        with self._lock, self._model._using():
            n = c_size_t()
            status = self._lib.llmodel_conversation_cached_tokens(self._h(), None, 0, byref(n))
            if status not in (native.OK, native.ERR_BUFFER_TOO_SMALL):
                native.check(status)
            return int(n.value)

    def cached_tokens(self) -> List[int]:
        """The token ids held in this conversation's cache, in order."""
        with self._lock, self._model._using():
            for _ in range(3):
                n = c_size_t()
                status = self._lib.llmodel_conversation_cached_tokens(self._h(), None, 0, byref(n))
                if status not in (native.OK, native.ERR_BUFFER_TOO_SMALL):
                    native.check(status)
                buf = (c_int32 * max(int(n.value), 1))()
                status = self._lib.llmodel_conversation_cached_tokens(self._h(), buf, len(buf), byref(n))
                if status == native.OK:
                    return list(buf[: n.value])
                if status != native.ERR_BUFFER_TOO_SMALL:
                    native.check(status)
        raise errors.NativeError("the cache changed while it was read")

    def reset(self) -> None:
        """Forgets the cached context."""
        with self._lock, self._model._using():
            self._take_over()
            native.check(self._lib.llmodel_conversation_reset(self._h()))

    def save_state(self) -> bytes:
        """The cache and its tokens, to restore later with ``load_state``."""
        with self._lock, self._model._using():
            h = self._h()
            size = c_size_t()
            native.check(self._lib.llmodel_conversation_state_size(h, byref(size)))
            buf = ctypes.create_string_buffer(size.value)
            n = c_size_t()
            native.check(self._lib.llmodel_conversation_state_save(h, buf, size.value, byref(n)))
            return buf.raw[: n.value]

    def load_state(self, state: bytes) -> None:
        with self._lock, self._model._using():
            self._take_over()
            native.check(self._lib.llmodel_conversation_state_load(self._h(), state, len(state)))

    # ------------------------------------------------------------ generation

    def _end_stream(self, why: str = "closed") -> None:
        """Ends the open stream, if any."""
        stream = self._stream() if self._stream is not None else None
        if stream is not None:
            stream._end(why)
        self._stream = None

    def _take_over(self) -> None:
        """Readies the conversation for a call that uses its cache (lock held).

        Another thread's open stream is waited for: a call never ends another
        caller's stream. This thread's own unfinished stream was abandoned
        (nothing reads two streams of one conversation at once): it is ended,
        and reading it further raises an error that says so.
        """
        while True:
            stream = self._stream() if self._stream is not None else None
            if stream is None or stream.closed:
                self._stream = None
                return
            if self._stream_thread == threading.get_ident():
                self._end_stream("ended by a later call on the model from the same thread")
                return
            self._stream_ended.wait()

    def generate(self, prompt: Union[str, Sequence[int]], *, on_token: Optional[TokenCallback] = None,
                 on_progress: Optional[ProgressCallback] = None, **params: Any) -> GenerationStats:
        """Evaluates a prompt (text or token ids) and generates a reply.

        The cached tokens that the prompt starts with are not evaluated
        again. Each generated token goes to ``on_token(token_id, text)``;
        the text of a character split over tokens arrives with the token
        that completes it. An exception raised by a callback stops
        generation and is raised here, after the native call has returned;
        the conversation stays usable. ``params`` are the fields of
        ``GenerationParams`` (gpt4all._params), with its defaults and checks.
        """
        p = self._model._params(**params)
        failure: List[BaseException] = []

        def response(token: int, piece: Optional[int], length: int, _ud: object) -> bool:
            if failure:
                return False
            try:
                text = ctypes.string_at(piece, length).decode("utf-8", "replace") if length else ""
                return bool(on_token(token, text)) if on_token is not None else True
            except BaseException as e:  # noqa: BLE001 (re-raised after the native call)
                failure.append(e)
                return False

        # Both callback objects stay referenced here until the call returns.
        c_response = native.ResponseCallback(response)
        c_progress = _progress_callback(on_progress, failure)
        result = native.GenerateResult()
        with self._lock, self._model._using():
            self._take_over()
            is_text, data, n = _native_prompt(prompt)
            fn = self._lib.llmodel_conversation_generate if is_text else self._lib.llmodel_conversation_generate_tokens
            with cancel_on_interrupt(self.cancel):
                status = fn(self._h(), data, n, byref(p), c_progress, c_response, None, byref(result))
        _freeze_if_exiting(self._model)
        if failure:
            raise failure[0]
        native.check(status)
        return _stats(result)

    def stream(self, prompt: Union[str, Sequence[int]], *, on_progress: Optional[ProgressCallback] = None,
               **params: Any) -> "TokenStream":
        """Evaluates a prompt and returns a stream that generates the reply
        one token per ``next()`` on the calling thread, with no thread and no
        callback in between. It holds the conversation's cache until closed:
        calls on this conversation from other threads wait for it; a new
        call from this thread (which can no longer be reading it) ends it,
        and so does ``close()``; reading an ended stream raises an error that
        says why."""
        p = self._model._params(**params)
        failure: List[BaseException] = []
        c_progress = _progress_callback(on_progress, failure)
        ptr = native.StreamPtr()
        with self._lock, self._model._using():
            self._take_over()
            is_text, data, n = _native_prompt(prompt)
            fn = (self._lib.llmodel_conversation_stream_begin if is_text
                  else self._lib.llmodel_conversation_stream_begin_tokens)
            with cancel_on_interrupt(self.cancel):
                status = fn(self._h(), data, n, byref(p), c_progress, None, byref(ptr))
            if self._model._exit_cancelled:
                self._lock.release()  # the exit waits for it
                _freeze_if_exiting(self._model)
            if failure:
                self._lib.llmodel_stream_end(ptr, None)
                raise failure[0]
            native.check(status)
            stream = TokenStream(self, ptr)
            self._stream = weakref.ref(stream)
            self._stream_thread = threading.get_ident()
        return stream


def _native_prompt(prompt: Union[str, Sequence[int]]) -> Tuple[bool, Any, int]:
    """(is it text, the bytes or token array, its length) for the C calls."""
    if isinstance(prompt, str):
        data = prompt.encode("utf-8")
        return True, data, len(data)
    return False, (c_int32 * len(prompt))(*prompt), len(prompt)


def _progress_callback(on_progress: Optional[ProgressCallback], failure: List[BaseException]) -> Any:
    if on_progress is None:
        return native.PromptCallback()

    def progress(done: int, total: int, _ud: object) -> bool:
        try:
            return bool(on_progress(done, total))
        except BaseException as e:  # noqa: BLE001 (re-raised after the native call)
            failure.append(e)
            return False

    return native.PromptCallback(progress)


def _stats(result: "native.GenerateResult") -> GenerationStats:
    return GenerationStats(result.n_prompt, result.n_reused, result.n_evaluated, result.n_generated,
                           result.n_past, STOP_REASONS.get(result.stop_reason, "none"),
                           result.prompt_ms, result.generate_ms)


def _end_native_stream(lib: ctypes.CDLL, ptr: "ctypes._Pointer", ended: threading.Condition) -> None:
    if _exiting:
        return  # the process is going away; the lock may be held by a frozen thread
    with ended:  # never while another thread is in a call on the conversation (that would fail as busy)
        lib.llmodel_stream_end(ptr, None)
        ended.notify_all()


class TokenStream:
    """One generation, a token per :meth:`next` (see :meth:`Conversation.stream`)."""

    def __init__(self, conversation: Conversation, ptr: "ctypes._Pointer"):
        self._conv = conversation
        self._ptr: Optional["ctypes._Pointer"] = ptr
        self._finalizer = weakref.finalize(self, _end_native_stream, conversation._lib, ptr,
                                           conversation._stream_ended)
        self._finalizer.atexit = False
        self._ended_why: Optional[str] = None  # set when something other than its reader ended it
        self._on_close: Optional[Callable[[], None]] = None  # a spare conversation goes back to the model
        self.stats: Optional[GenerationStats] = None
        self._token = c_int32()
        self._text = ctypes.c_void_p()
        self._len = c_size_t()
        self._done = ctypes.c_bool()

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def next(self) -> Optional[Tuple[int, str]]:
        """The next token and its text; ``None`` when the reply is over or
        the stream was closed by its reader. The token is ``-1`` for a last
        text with no token of its own.

        Raises:
            ModelClosedError: the model was closed while the stream was open.
            ModelBusyError: a later call from this thread ended the stream.
        """
        conv = self._conv
        with conv._lock:
            if self._ended_why is not None:
                cls = errors.ModelClosedError if self._ended_why == "closed" else errors.ModelBusyError
                raise cls(f"the stream was {self._ended_why} before the reply was complete")
            if self._ptr is None:
                return None
            with conv._model._using():
                status = conv._lib.llmodel_stream_next(self._ptr, byref(self._token), byref(self._text),
                                                       byref(self._len), byref(self._done))
            native.check(status)
            if self._done.value:
                return None
            n = self._len.value
            text = ctypes.string_at(self._text.value, n).decode("utf-8", "replace") if n else ""
            return int(self._token.value), text

    def close(self) -> Optional[GenerationStats]:
        """Ends the stream (what was not taken is dropped); returns its stats
        (``None`` at interpreter exit, when nothing native runs any more)."""
        if _exiting:
            return self.stats
        conv = self._conv
        with conv._stream_ended:
            # detach() says whether the finalizer still owned the native
            # stream: it may have ended it already (gc of a cycle)
            if self._ptr is not None and self._finalizer.detach() is not None:
                result = native.GenerateResult()
                status = conv._lib.llmodel_stream_end(self._ptr, byref(result))
                self._ptr = None
                conv._stream_ended.notify_all()
                native.check(status)
                self.stats = _stats(result)
            self._ptr = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        return self.stats

    def _end(self, why: str) -> None:
        """Ended by something other than its reader, which is told on its next read."""
        self.close()
        self._ended_why = why


__all__ = ["LLModel", "Conversation", "TokenStream", "ModelInfo", "GenerationStats", "Device", "list_devices",
           "resolve_device", "cpu_variant", "physical_cores"]


def _free_embedder(lib: ctypes.CDLL, handle: "ctypes._Pointer") -> None:
    if not _exiting:
        lib.llmodel_embedder_free(handle)


POOLINGS = {"mean": native.POOLING_MEAN, "cls": native.POOLING_CLS, "last": native.POOLING_LAST}


@dataclass(frozen=True)
class EmbedderInfo:
    n_embd: int  #: floats per vector
    n_ctx: int  #: the most tokens of one text
    pooling: str  #: ``"mean"``, ``"cls"`` or ``"last"``
    causal: bool  #: whether the model's attention is causal


class Embedder:
    """An embedding context on a model (the weights are shared with it):
    turns token lists into one vector each, several texts per engine step.

    Args:
        model: the loaded model.
        n_ctx: the most tokens of one text; 0: the model's training context
            (at most 8192).
        n_batch: the most tokens of one step; 0: ``n_ctx``.
        n_seq_max: the most texts of one step.
        pooling: ``None`` (as the model says), ``"mean"``, ``"cls"`` or ``"last"``.
        normalize: scale each vector to length 1.
    """

    def __init__(self, model: LLModel, *, n_ctx: int = 0, n_batch: int = 0, n_seq_max: int = 8,
                 pooling: Optional[str] = None, normalize: bool = True):
        check_int("n_ctx", n_ctx, 0)
        check_int("n_batch", n_batch, 0)
        check_int("n_seq_max", n_seq_max, 1, native.MAX_PARALLEL)
        if pooling is not None and pooling not in POOLINGS:
            raise errors.InvalidArgumentError(f"pooling must be None or one of {sorted(POOLINGS)}, got {pooling!r}")
        self._model = model
        self._lib = lib = model._lib
        p = lib.llmodel_embedder_default_params()
        p.n_ctx, p.n_batch, p.n_seq_max, p.normalize = n_ctx, n_batch, n_seq_max, bool(normalize)
        p.pooling = native.POOLING_MODEL if pooling is None else POOLINGS[pooling]
        handle = native.EmbedderPtr()
        with model._using() as h:
            native.check(lib.llmodel_embedder_new(h, byref(p), byref(handle)))
        self._handle: Optional["ctypes._Pointer"] = handle
        self._finalizer = weakref.finalize(self, _free_embedder, lib, handle)
        self._finalizer.atexit = False
        self._lock = threading.Lock()
        i = native.EmbedderInfo()
        native.check(lib.llmodel_embedder_get_info(handle, byref(i)))
        names = {v: k for k, v in POOLINGS.items()}
        self.info = EmbedderInfo(i.n_embd, i.n_ctx, names.get(i.pooling, "mean"), bool(i.causal))
        self.n_batch = n_batch or i.n_ctx
        self.n_seq_max = n_seq_max

    @property
    def closed(self) -> bool:
        return self._handle is None or self._model.closed

    def close(self) -> None:
        """Frees the embedding context. Safe to call more than once."""
        with self._lock:
            if self._handle is not None:
                self._handle = None
                self._finalizer()

    def embed_tokens(self, texts: Sequence[Sequence[int]],
                     on_progress: Optional[ProgressCallback] = None) -> List[List[float]]:
        """One vector per token list (each at most ``info.n_ctx`` tokens).

        ``on_progress(n_done, n_total)`` is called after each engine step;
        returning False raises ``CancellationError``, and so does
        ``model.cancel()`` or Ctrl-C.
        """
        n = len(texts)
        if n == 0:
            return []
        d = self.info.n_embd
        arrays = [(c_int32 * len(t))(*t) for t in texts]
        ptrs = (ctypes.POINTER(c_int32) * n)(*(ctypes.cast(a, ctypes.POINTER(c_int32)) for a in arrays))
        sizes = (c_size_t * n)(*(len(t) for t in texts))
        out = (ctypes.c_float * (n * d))()
        failure: List[BaseException] = []
        c_progress = _progress_callback(on_progress, failure)  # referenced until the call returns
        with self._lock, self._model._using():
            if self._handle is None:
                raise errors.ModelClosedError("the embedder is closed")
            with cancel_on_interrupt(self._model.cancel):
                status = self._lib.llmodel_embed_tokens(self._handle, ptrs, sizes, n, out, n * d, c_progress,
                                                        None)
        _freeze_if_exiting(self._model)
        if failure:
            raise failure[0]
        native.check(status)
        flat = memoryview(out).cast("B").cast("f").tolist()
        return [flat[i * d:(i + 1) * d] for i in range(n)]

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
