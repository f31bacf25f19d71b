"""The ``GPT4All`` class: load a local model, generate text, hold chat sessions."""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from . import errors
from ._params import GenerationParams, check_int
from ._pyllmodel import GenerationStats, LLModel, list_devices
from .templates import ChatFormatter

ConfigType = Dict[str, Any]
MessageType = Dict[str, Any]
ToolChoice = Union[str, Mapping[str, Any]]


def empty_response_callback(token_id: int, response: str) -> bool:
    """The default ``callback`` of [`GPT4All.generate`][gpt4all.GPT4All.generate]: accepts every token."""
    return True


# Names that live in models.py and are still found here, where the original
# package had them (`from gpt4all.gpt4all import default_model_dir`). They are
# looked up on first use, so that `import gpt4all` does not load models.py.
_FROM_MODELS = ("append_extension_if_missing", "default_model_dir", "DEFAULT_MODEL_DIR_ENV")


def __getattr__(name: str) -> Any:
    # DEFAULT_MODEL_DIRECTORY reads as the folder in use until a program
    # assigns it; the assignment lands in this module's globals and wins
    # (models.default_model_dir looks for it here).
    if name == "DEFAULT_MODEL_DIRECTORY" or name in _FROM_MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ChatHistory(List[MessageType]):
    """The messages of a chat session.

    A reply generated inside the session is recorded as it streams. Code
    written for the original package appends each streamed reply itself;
    such an append of the reply just recorded is recognized and not stored
    twice.
    """

    _recorded: Optional[MessageType] = None  # the reply generate() added last

    def record_reply(self) -> MessageType:
        """Adds an empty assistant message for a reply being generated."""
        reply = {"role": "assistant", "content": ""}
        super().append(reply)
        self._recorded = reply
        return reply

    def append(self, message: MessageType) -> None:  # type: ignore[override]
        recorded, self._recorded = self._recorded, None
        if (recorded is not None and self and self[-1] is recorded and isinstance(message, Mapping)
                and message.get("role") == "assistant" and message.get("content") == recorded["content"]):
            return  # the caller re-appends the reply that was already recorded
        super().append(message)


class _StopMatcher:
    """Cuts generated text at the first stop sequence; holds back text that
    may be the start of one until it is known not to be."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        text = self.pending + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending = ""
            self.stopped = True
            return text[:cut]
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.pending = text[len(text) - hold:] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class GPT4All:
    """A language model running locally.

    Args:
        model_name: the model's file name (``.gguf`` is added when missing) or
            a name from the models registry.
        model_path: the folder holding the model file; default: the user
            cache folder (see [`default_model_dir`][gpt4all.models.default_model_dir]).
        model_type: kept for compatibility; stored as ``self.model_type``.
        allow_download: fetch the model when it is not on disk.
        n_threads: CPU threads; default: the number of physical cores. More
            than this machine's logical CPUs are capped to them.
        device: where the model runs, as in the original package (case does
            not matter):

            - ``None`` (default): the CPU on Linux and Windows; on Apple
              silicon Metal, unless the model file is 53% of the RAM or
              more, then the CPU.
            - ``"cpu"``: the CPU.
            - ``"gpu"``: the best GPU (the most memory; the first listed on
              a tie).
            - a backend: ``"cuda"``, ``"vulkan"`` (``"kompute"`` is an
              alias), ``"metal"``: the best GPU of that backend.
            - ``"<backend>:<name>"`` as [`list_gpus`][gpt4all.GPT4All.list_gpus]
              returns it (``"cuda:NVIDIA H100 80GB HBM3"``,
              ``"kompute:<name>"``): that GPU.
            - a vendor: ``"nvidia"``, ``"amd"``, ``"intel"``: the best GPU of
              that vendor.
            - a GPU's exact name (``"NVIDIA H100 80GB HBM3"``, or the engine's
              ``"CUDA0"``).

            A word that matches no GPU raises ``NoDeviceError`` listing the
            GPUs there are. A GPU whose free memory is known to be less than
            the model needs (the file's size plus 10% and 256 MiB for the
            context and compute buffers; checked when every layer is
            offloaded: ``ngl`` 100 or more) raises ``DeviceMemoryError``
            naming both figures; for ``"gpu"``, a backend or a vendor the best
            GPU with room is chosen. Nothing is printed either way.
        n_ctx: the context length in tokens (prompt and reply together).
        ngl: layers to offload to the GPU device.
        verbose: log what the engine does to stderr.
        use_mmap: map the model file instead of reading it into memory:
            quicker to load, and the pages are shared with other processes
            using the same file. The file must then not change while the
            model is loaded (each generation checks and raises
            ``InvalidModelError`` if it did; a file cut short in the middle of
            a generation would still crash the process). ``False`` keeps a
            private copy in memory.
        n_parallel: the most conversations (chat sessions, and ``generate``
            calls from different threads) that the engine decodes together,
            one batch per step; more wait for a place. Each needs a cache of
            up to ``n_ctx`` tokens, allocated only when that many run at once.
        f32_weights: on the CPU, hold F16/BF16 weights as F32: matrix
            products skip converting them on every use (about 20% faster on
            x86 for an F16 model), at twice their memory and a slower load
            (the file is read, not mapped). [`Embed4All`][gpt4all.embeddings.Embed4All]
            turns it on. Ignored on a GPU.
    """

    def __init__(self, model_name: str, *, model_path: Optional[Union[str, os.PathLike]] = None,
                 model_type: Optional[str] = None, allow_download: bool = True, n_threads: Optional[int] = None,
                 device: Optional[str] = None, n_ctx: int = 2048, ngl: int = 100, verbose: bool = False,
                 use_mmap: bool = True, n_parallel: int = 8, f32_weights: bool = False):
        if verbose:
            _enable_verbose_logging()
        check_int("n_ctx", n_ctx, 1)
        check_int("ngl", ngl, 0)
        if n_threads is not None:
            check_int("n_threads", n_threads, 1)
        self.model_type = model_type
        self.config: ConfigType = self.retrieve_model(model_name, model_path=model_path,
                                                      allow_download=allow_download, verbose=verbose)
        self.model = LLModel(self.config["path"], n_ctx=n_ctx, ngl=ngl, device=device, n_threads=n_threads,
                             use_mmap=bool(use_mmap), n_parallel=n_parallel, f32_weights=bool(f32_weights))
        self._last_stats: Optional[GenerationStats] = None

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Frees the model. Using it afterwards raises ``ModelClosedError``."""
        self.model.close()

    def __enter__(self) -> "GPT4All":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ facts

    @property
    def backend(self) -> str:
        """The backend the model runs on: ``"cpu"``, ``"cuda"``, ``"vulkan"`` or ``"metal"``."""
        from ._devices import backend_word

        return backend_word(self.model.info.backend)  # the engine says "MTL" for Metal

    @property
    def device(self) -> Optional[str]:
        """The GPU the model runs on, or ``None`` on the CPU."""
        info = self.model.info
        return None if info.backend == "CPU" else info.device_description

    @property
    def last_generation(self) -> Optional[GenerationStats]:
        """Counts and timings of the last [`generate`][gpt4all.GPT4All.generate] call."""
        return self._last_stats

    @classmethod
    def list_gpus(cls) -> List[str]:
        """The GPUs this machine offers, as ``"<backend>:<name>"`` strings
        that ``device=`` accepts back: ``["cuda:NVIDIA H100 80GB HBM3",
        "vulkan:AMD Radeon Graphics (RADV GFX1103_R1)"]``.

        The backend is ``"cuda"``, ``"vulkan"`` or ``"metal"`` (``"rocm"``
        for a ROCm build); the name is the GPU's description, or the
        engine's name (``"cuda:CUDA1"``) for a second GPU of one backend
        with the same description.

        Returns an empty list when there is no GPU (or this build has no GPU
        backend); the original package raised ``ValueError`` then.
        """
        from ._devices import gpu_names

        return gpu_names(list_devices())

    # ------------------------------------------------------------ models

    @staticmethod
    def list_models(url: Optional[str] = None, timeout: Optional[float] = None) -> List[ConfigType]:
        """The models registry: every model that can be fetched by name.

        The registry bundled with the package, updated from the remote
        registry when that answers within a few seconds; offline, the
        bundled one alone.

        Args:
            url: the remote registry; default: ``$GPT4ALL_REGISTRY_URL``, else
                the original package's catalogue. ``""`` skips the remote.
            timeout: the most seconds the remote may take in all; default:
                ``$GPT4ALL_REGISTRY_TIMEOUT``, else 3.
        """
        from . import models

        return models.list_models(url=url, timeout=timeout)

    @classmethod
    def retrieve_model(cls, model_name: str, model_path: Optional[Union[str, os.PathLike]] = None,
                       allow_download: bool = True, verbose: bool = False) -> ConfigType:
        """Finds a model on disk, or fetches it, and returns its config.

        A model already on disk is used without touching the network.
        """
        from . import models

        return models.retrieve_model(model_name, model_path=model_path, allow_download=allow_download,
                                     verbose=verbose)

    @staticmethod
    def download_model(model_filename: str, model_path: Union[str, os.PathLike], verbose: bool = True,
                       url: Optional[str] = None, expected_size: Optional[int] = None,
                       expected_md5: Optional[str] = None, expected_sha256: Optional[str] = None) -> Union[str, os.PathLike]:
        """Downloads a model file into model_path and returns its path."""
        from . import models

        return models.download_model(model_filename, model_path, verbose=verbose, url=url,
                                     expected_size=expected_size, expected_md5=expected_md5,
                                     expected_sha256=expected_sha256)

    # ------------------------------------------------------------ chat sessions

    def _session(self) -> Optional["ChatSession"]:
        """The chat session open in this thread (or task) on this model, if any."""
        return _open_sessions.get().get(id(self))

    @property
    def current_chat_session(self) -> Optional[List[MessageType]]:
        """The messages of the chat session open in this thread, or ``None`` outside one."""
        session = self._session()
        return session.history if session is not None else None

    @current_chat_session.setter
    def current_chat_session(self, history: List[MessageType]) -> None:
        session = self._session()
        if session is None:
            raise errors.InvalidArgumentError("no chat session is open (use `with model.chat_session():`)")
        session.history = history  # type: ignore[assignment]

    @contextmanager
    def chat_session(self, system_prompt: Optional[str] = None, prompt_template: Optional[str] = None, *,
                     tools: Optional[Sequence[Mapping[str, Any]]] = None,
                     tool_choice: ToolChoice = "auto") -> Iterator["ChatSession"]:
        """A context in which [`generate`][gpt4all.GPT4All.generate] holds a conversation.

        Each session is a conversation of its own, with its own history and
        its own cache on the model: sessions in different threads (or tasks)
        run at the same time, batched by the engine, and sessions nested in
        one thread can be used in turn through the
        [`ChatSession`][gpt4all.gpt4all.ChatSession] each ``with`` gives.
        Inside the ``with``, ``generate`` uses the innermost session of the
        calling thread.

        Args:
            system_prompt: instructions placed before the conversation;
                default: the one in the model's config, if any.
            prompt_template: a template with ``{0}`` where each user message
                goes, instead of the chat template stored in the model.
            tools: functions the model may call, in OpenAI's shape
                (``{"type": "function", "function": {"name", "description",
                "parameters"}}``). They reach the model through its chat
                template where the template takes ``tools``, else as
                instructions added to the system prompt. A reply that calls
                tools is recorded in the history with ``"tool_calls"``
                (each with an ``id``, a ``name`` and the parsed
                ``arguments``); answer it by passing the results to
                ``generate`` as ``{"role": "tool", "tool_call_id", "content"}``
                messages. See docs/structured-output.md.
            tool_choice: ``"auto"`` (the model decides), ``"none"`` (no call
                is looked for), ``"required"`` (every reply is a call to one
                of the tools, forced by a grammar), or a tool's name (or
                ``{"type": "function", "function": {"name": ...}}``) to force
                a call to that tool. ``generate(tool_choice=...)`` overrides
                it for one turn.
        """
        session = ChatSession(self, system_prompt, prompt_template, tools=tools, tool_choice=tool_choice)
        sessions = _open_sessions.get()
        token = _open_sessions.set({**sessions, id(self): session})
        try:
            yield session
        finally:
            try:
                _open_sessions.reset(token)
            except ValueError:  # left in another context (a generator finished elsewhere)
                rest = dict(_open_sessions.get())
                if rest.get(id(self)) is session:
                    rest.pop(id(self))
                _open_sessions.set(rest)
            session.close()

    # ------------------------------------------------------------ generation

    # the sampling defaults are GenerationParams' (one definition for the
    # package and the C library); n_batch's 8 is the original's
    def generate(self, prompt: Union[str, Mapping[str, Any], Sequence[Mapping[str, Any]]], *,
                 max_tokens: int = GenerationParams.n_predict,
                 temp: float = GenerationParams.temp, top_k: int = GenerationParams.top_k,
                 top_p: float = GenerationParams.top_p, min_p: float = GenerationParams.min_p,
                 repeat_penalty: float = GenerationParams.repeat_penalty,
                 repeat_last_n: int = GenerationParams.repeat_last_n, n_batch: int = 8,
                 n_predict: Optional[int] = None, streaming: bool = False,
                 callback: Callable[[int, str], bool] = empty_response_callback,
                 stop: Optional[Union[str, Sequence[str]]] = None,
                 seed: Optional[int] = GenerationParams.seed, grammar: Optional[str] = None,
                 json_schema: Optional[Mapping[str, Any]] = None,
                 tool_choice: Optional[ToolChoice] = None,
                 logit_bias: Optional[Mapping[int, float]] = None) -> Union[str, Iterable[str]]:
        """Generates a reply to a prompt.

        Args:
            prompt: the prompt. Outside a chat session it goes to the model as
                it is; inside one it becomes the next user message and the
                whole conversation is formatted with the chat template. In a
                session it may also be a message dict, or a list of them:
                ``{"role": "tool", "tool_call_id": ..., "content": ...}``
                answers a tool call (see ``chat_session(tools=...)``).
            max_tokens: the most tokens to generate.
            temp: randomness; 0 always picks the most likely token (greedy).
            top_k: sample only from the k most likely tokens (0: no limit).
            top_p: sample only from the most likely tokens whose probabilities
                add up to top_p.
            min_p: drop tokens less likely than min_p times the most likely one.
            repeat_penalty: how strongly to avoid repeating recent tokens (1: not at all).
            repeat_last_n: how many recent tokens the penalty looks at (-1:
                the whole context; more than the context is the context).
            n_batch: kept for compatibility with the original package.
                The prompt is always evaluated in batches as large as the
                model's context allows (512 tokens), which is many times
                faster than 8 at a time and gives the same replies.
            n_predict: an older name for max_tokens; when given, it wins.
            streaming: return a generator of text pieces instead of a string.
            callback: called as ``callback(token_id, text)`` for each token;
                returning False stops generation.
            stop: a string or strings that end the reply when generated (they
                are not part of the output).
            seed: a seed for reproducible sampling (any integer from 0 to
                2**64); default: a fresh one.
            grammar: a grammar in llama.cpp's GBNF syntax (start rule
                ``root``) that the reply must follow.
            json_schema: a JSON Schema (a dict) that the reply must be a JSON
                document of. Only one of ``grammar`` and ``json_schema``.
                With either, a reply that ends on its own is complete and
                valid; one cut short (by ``max_tokens``, a stop string or the
                callback) says so in ``last_generation.stop_reason``
                (``"length"``, ``"callback"``) instead of ``"eog"``. A grammar
                or schema that cannot be used raises ``GrammarError`` (a
                ``ValueError``) naming where and why, before anything is
                generated. See docs/structured-output.md.
            tool_choice: in a session with tools, this turn's choice (see
                ``chat_session``).
            logit_bias: ``{token_id: bias}`` added to those tokens' logits
                before sampling; ``float("-inf")`` bans a token (an addition
                to the original API, as OpenAI's ``logit_bias``).

        Returns:
            The reply, or a generator of its pieces when ``streaming``.
        """
        session = self._session()
        if not isinstance(prompt, str) and (session is None or not isinstance(prompt, (Mapping, list, tuple))):
            raise errors.InvalidArgumentError(
                f"prompt must be a str{' or message dicts' if session is not None else ''}, "
                f"not {type(prompt).__name__}")
        n = n_predict if n_predict is not None else max_tokens
        check_int("max_tokens" if n_predict is None else "n_predict", n, 0)  # -1 (no limit) is not offered here
        # every other check, naming the parameter; outside a session the
        # prompt is text, as in the original: special-token text typed into
        # it ("<|im_end|>") is those characters, never a control token (a
        # session's prompt is tokens, so special plays no part)
        params = GenerationParams(n_predict=n, temp=temp, top_k=top_k, top_p=top_p, min_p=min_p,
                                  repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed,
                                  special=False, logit_bias=logit_bias)
        messages = _turn_messages(prompt) if session is not None else None
        check_int("n_batch", n_batch, 1)  # accepted for compatibility; the engine's batches are used
        if not callable(callback):
            raise errors.InvalidArgumentError("callback must be callable")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) for s in stops):
            raise errors.InvalidArgumentError("stop must be a string or a list of strings")
        if self.model.closed:
            raise errors.ModelClosedError("the model is closed")
        calls = session._tool_mode(tool_choice) if session is not None else None
        if tool_choice is not None and session is None:
            raise errors.InvalidArgumentError("tool_choice needs a chat session with tools")
        gbnf = self._constraint(session, grammar, json_schema, calls)
        if gbnf is not None:
            params = dataclasses.replace(params, grammar=gbnf)

        return self._generate(session, messages if messages is not None else prompt, params, callback, stops,
                              streaming, calls)

    def _constraint(self, session: Optional["ChatSession"], grammar: Optional[str],
                    json_schema: Optional[Mapping[str, Any]], calls: Optional[str]) -> Optional[str]:
        """The GBNF grammar that constrains this reply, checked, or None."""
        given = [name for name, v in (("grammar", grammar), ("json_schema", json_schema)) if v is not None]
        if len(given) > 1:
            raise errors.InvalidArgumentError("give grammar or json_schema, not both")
        if given and calls not in (None, "none", "auto"):
            raise errors.InvalidArgumentError(f"{given[0]} cannot be combined with a required tool call")
        gbnf: Optional[str] = None
        if grammar is not None:
            if not isinstance(grammar, str):
                raise errors.InvalidArgumentError(f"grammar must be a str, not {type(grammar).__name__}")
            gbnf = grammar
        elif json_schema is not None:
            gbnf = schema_grammar(json_schema)
        elif session is not None and calls not in (None, "none", "auto"):
            gbnf = session._call_grammar(calls)
        if gbnf is not None:
            self.model.check_grammar(gbnf)
        return gbnf

    def _generate(self, session: Optional["ChatSession"], prompt: Union[str, List[MessageType]],
                  params: GenerationParams, callback: Callable[[int, str], bool], stops: List[str],
                  streaming: bool, calls: Optional[str] = None) -> Union[str, Iterable[str]]:
        """generate() once its arguments are checked: in session, or plain."""
        n = params.n_predict
        history = session.history if session is not None else None
        if session is not None and history is not None:
            added = [prompt] if isinstance(prompt, str) else prompt
            for message in added:
                history.append({"role": "user", "content": message} if isinstance(message, str) else message)
            try:
                model_prompt, n_keep = session._prompt(n)
            except BaseException:
                del history[len(history) - len(added):]
                raise
            add_special = False
            target: Any = session.conversation
        else:
            model_prompt, n_keep, add_special = prompt, 1, True
            target = self.model

        # in a session, a turn whose oldest messages were dropped to fit the
        # context shifts the cached rest into place instead of re-reading it
        params = dataclasses.replace(params, n_keep=n_keep, add_special=add_special,
                                     reuse_shifted=history is not None)
        kwargs = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
        reply: Optional[MessageType] = None
        if history is not None:
            reply = history.record_reply()

        n_added = len(added) if session is not None else 0
        finish = session._finish_reply if session is not None and calls not in (None, "none") else None
        if streaming:
            return self._stream(target, session, model_prompt, kwargs, callback, stops, history, reply, n_added,
                                finish)
        pieces: List[str] = []
        matcher = _StopMatcher(stops)

        def on_token(token: int, text: str) -> bool:
            out = matcher.feed(text)
            if out:
                pieces.append(out)
                if reply is not None:
                    reply["content"] += out
            if matcher.stopped:
                return False
            return callback(token, out) is not False

        try:
            self._last_stats = target.generate(model_prompt, on_token=on_token, **kwargs)
            if session is not None:
                session.last_generation = self._last_stats
        except BaseException:
            _rollback(history, reply, n_added)
            raise
        tail = matcher.flush()
        if tail:
            pieces.append(tail)
            if reply is not None:
                reply["content"] += tail
        if finish is not None and reply is not None:
            finish(reply)
        return "".join(pieces)

    def _stream(self, target: Any, session: Optional["ChatSession"], model_prompt: Any, kwargs: Dict[str, Any], callback: Callable[[int, str], bool],
                stops: List[str], history: Optional[ChatHistory], reply: Optional[MessageType], n_added: int = 0,
                finish: Optional[Callable[[MessageType], None]] = None) -> Iterator[str]:
        """Yields the reply's pieces as the model generates them.

        The generator drives the model itself, a token per step, on the
        consumer's thread: leaving the loop early (break, an exception, the
        generator being garbage-collected) generates nothing more, and a new
        call on the model ends a stream left unfinished.
        """
        matcher = _StopMatcher(stops)

        def generator() -> Iterator[str]:
            stream = None
            try:
                stream = target.stream(model_prompt, **kwargs)
                while True:
                    item = stream.next()
                    if item is None:
                        break
                    token, text = item
                    out = matcher.feed(text)
                    if out:
                        if reply is not None:
                            reply["content"] += out
                        yield out
                    if matcher.stopped or (token >= 0 and callback(token, out) is False):
                        break
                tail = matcher.flush()
                if tail:
                    if reply is not None:
                        reply["content"] += tail
                    yield tail
                if finish is not None and reply is not None:
                    finish(reply)
            except GeneratorExit:
                raise
            except BaseException:
                _rollback(history, reply, n_added)
                raise
            finally:
                # a stream that a later call ended is that call's business
                if stream is not None and not stream.closed:
                    self._last_stats = stream.close()
                    if session is not None:
                        session.last_generation = self._last_stats

        return generator()


#: The chat sessions open in this thread (or task), by id of their GPT4All.
_open_sessions: "ContextVar[Dict[int, ChatSession]]" = ContextVar("gpt4all_open_sessions", default={})


class ChatSession:
    """One conversation with a model: its messages, and a cache of its own on
    the model (see [`GPT4All.chat_session`][gpt4all.GPT4All.chat_session],
    which makes it).

    Each turn is the whole conversation formatted with the chat template;
    only its new tokens are evaluated, whatever other sessions on the same
    model did meanwhile.
    """

    def __init__(self, gpt4all: "GPT4All", system_prompt: Optional[str], prompt_template: Optional[str], *,
                 tools: Optional[Sequence[Mapping[str, Any]]] = None, tool_choice: ToolChoice = "auto"):
        if system_prompt is None:
            system_prompt = gpt4all.config.get("systemPrompt") or None
        model = gpt4all.model
        info = model.info
        jinja = info.chat_template or gpt4all.config.get("chatTemplate")
        if prompt_template is None and not jinja:
            prompt_template = gpt4all.config.get("promptTemplate")
        self._gpt4all = gpt4all
        self._formatter = ChatFormatter(jinja, prompt_template, bos_token=model.token_text(info.bos),
                                        eos_token=model.token_text(info.eos), tokenizer=model)
        self._history = ChatHistory([{"role": "system", "content": system_prompt}] if system_prompt else [])
        self._skip = 0  # oldest turns dropped from the model's view to fit the context
        #: The tools the model may call (checked copies), or None.
        self.tools: Optional[List[Dict[str, Any]]] = None
        if tools is not None:
            from . import _tool_calls

            try:
                self.tools = _tool_calls.check_tools(tools) or None
            except errors.GPT4AllError:
                raise
            except ValueError as e:
                raise errors.InvalidArgumentError(f"tools: {e}") from None
        self.tool_choice = self._tool_mode(tool_choice) if self.tools else "none"
        self.conversation = model.conversation()
        #: Counts and timings of this session's last turn.
        self.last_generation: Optional[GenerationStats] = None

    @property
    def history(self) -> ChatHistory:
        """The messages so far (a list of ``{"role", "content"}`` dicts)."""
        return self._history

    @history.setter
    def history(self, messages: List[MessageType]) -> None:
        self._history = ChatHistory(messages)
        self._skip = 0

    def generate(self, prompt: Union[str, Mapping[str, Any], Sequence[Mapping[str, Any]]],
                 **kwargs: Any) -> Union[str, Iterable[str]]:
        """The next turn: as [`GPT4All.generate`][gpt4all.GPT4All.generate]
        in this session, whichever session is current."""
        token = _open_sessions.set({**_open_sessions.get(), id(self._gpt4all): self})
        try:
            return self._gpt4all.generate(prompt, **kwargs)
        finally:
            _open_sessions.reset(token)

    def close(self) -> None:
        """Frees the session's cache; its history stays readable."""
        self.conversation.close()

    @property
    def tool_format(self) -> str:
        """How this model writes tool calls: ``"hermes"``, ``"llama3"``,
        ``"mistral"`` (read from its chat template), or ``"generic"``
        (``<tool_call>`` blocks that the system prompt asks for, for
        templates that know nothing of tools)."""
        return self._formatter.tool_format

    def _tool_mode(self, choice: Optional[ToolChoice]) -> Optional[str]:
        """A tool_choice as "auto", "none", "required" or "function:NAME";
        None: the session's own choice (or no tools at all)."""
        if choice is None:
            return getattr(self, "tool_choice", None) if self.tools else None
        if not self.tools:
            if choice == "none":
                return None
            raise errors.InvalidArgumentError("tool_choice needs a chat session with tools")
        from . import _tool_calls

        return _tool_calls.tool_choice_mode(choice, self.tools)

    def _call_grammar(self, calls: str) -> str:
        """The grammar that forces a call ("required", or "function:NAME")."""
        from . import _tool_calls

        assert self.tools
        return _tool_calls.call_grammar(self.tools, self.tool_format, name=_tool_calls.forced_tool(calls))

    def _finish_reply(self, reply: MessageType) -> None:
        """Turns the tool calls in a finished reply into structured calls."""
        from . import _tool_calls

        if not self.tools:
            return
        content, calls = _tool_calls.parse_tool_calls(reply.get("content", ""), self.tool_format, self.tools)
        if calls:
            reply["content"] = content
            reply["tool_calls"] = [c.to_message_dict() for c in calls]

    @property
    def last_tool_calls(self) -> List[Dict[str, Any]]:
        """The tool calls of the last reply (``[]`` when it called none)."""
        for m in reversed(self._history):
            if m.get("role") == "assistant":
                return list(m.get("tool_calls") or [])
        return []

    def _prompt(self, max_tokens: int) -> tuple:
        """The token ids of the conversation, ready for a reply, and how many
        leading tokens (the system prompt) a shift must keep.

        Drops the oldest turns from the model's view when the conversation
        and the reply would not fit in the context; the system prompt stays.
        """
        msgs = list(self._history)
        system = msgs[:1] if msgs and msgs[0].get("role") == "system" else []
        turns = msgs[len(system):]
        n_ctx = self._gpt4all.model.info.n_ctx
        while True:
            view = system + turns[self._skip:]
            tokens = self._formatter.tokens(view, tools=self.tools)  # message text never becomes control tokens
            user_starts = [i for i, m in enumerate(turns) if m["role"] == "user" and i > self._skip]
            if len(tokens) + min(max_tokens, n_ctx // 4) <= n_ctx or not user_starts:
                break
            self._skip = user_starts[0]
        if len(tokens) > n_ctx:
            raise errors.ContextOverflowError(
                f"the prompt has {len(tokens)} tokens but the context holds only {n_ctx}: shorten the message "
                f"or the system prompt, or load the model with a larger n_ctx")
        n_keep = 0
        if system:
            head = self._formatter.tokens(system, tools=self.tools)
            while n_keep < min(len(head), len(tokens)) and head[n_keep] == tokens[n_keep]:
                n_keep += 1
        return tokens, n_keep


def _rollback(history: Optional[ChatHistory], reply: Optional[MessageType], n_added: int = 1) -> None:
    """Takes a failed turn (the messages it added and its empty reply) out of the history."""
    if history is None or reply is None:
        return
    if history and history[-1] is reply:
        history.pop()
        if n_added > 0 and len(history) >= n_added:
            del history[len(history) - n_added:]


def _turn_messages(prompt: Union[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]) -> List[MessageType]:
    """A turn's new messages, checked: the prompt as a user message, or the
    message dicts given (user messages and tool results)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    items = [prompt] if isinstance(prompt, Mapping) else list(prompt)
    if not items:
        raise errors.InvalidArgumentError("the prompt has no messages")
    out = []
    for n, m in enumerate(items, 1):
        if not isinstance(m, Mapping):
            raise errors.InvalidArgumentError(f"prompt message {n} must be a dict, not {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "tool"):
            raise errors.InvalidArgumentError(f"prompt message {n} has role {role!r}; a turn adds 'user' or 'tool' messages")
        if not isinstance(content, str):
            if role == "tool" and content is not None:
                import json

                try:
                    content = json.dumps(content, ensure_ascii=False)  # a tool's result given as data
                except (TypeError, ValueError) as e:
                    raise errors.InvalidArgumentError(f"prompt message {n}: the content is not JSON data: {e}") from None
            else:
                raise errors.InvalidArgumentError(f"prompt message {n} needs a string 'content'")
        msg = {k: v for k, v in m.items() if k in ("role", "content", "tool_call_id", "name")}
        msg["content"] = content
        for key in ("tool_call_id", "name"):
            if key in msg and not isinstance(msg[key], str):
                raise errors.InvalidArgumentError(f"prompt message {n}: {key} must be a string")
        out.append(msg)
    return out


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of a JSON schema; ``GrammarError`` naming where and why
    when the schema cannot be used."""
    from . import _json_schema  # on first use: keeps `import gpt4all` cheap

    if not isinstance(schema, (Mapping, bool)):
        raise errors.GrammarError(f"json_schema must be a dict, not {type(schema).__name__}")
    try:
        return _json_schema.json_schema_to_gbnf(schema)
    except errors.GPT4AllError:
        raise
    except (ValueError, RecursionError) as e:
        raise errors.GrammarError(f"json_schema cannot be used: {e}") from None


_verbose_handler = None


def _enable_verbose_logging() -> None:
    """verbose=True: the engine's log goes to stderr."""
    import logging

    global _verbose_handler
    if _verbose_handler is None:
        _verbose_handler = logging.StreamHandler()
        _verbose_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger = logging.getLogger("gpt4all")
        logger.addHandler(_verbose_handler)
        logger.setLevel(logging.INFO)
