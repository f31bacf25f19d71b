"""An OpenAI-compatible HTTP server over one local model (``gpt4all serve``).

Built on Starlette (routing, requests, streaming responses) under uvicorn
(the HTTP server): a small, well-kept ASGI stack, with nothing of HTTP
parsed here. Requests run on the model's conversations: every generation
runs in a worker thread, and the engine decodes the running ones together,
one batch per step (``GPT4All(n_parallel=...)``). At most ``parallel``
generate at once; up to ``queue`` more wait; beyond that a request gets 429.
A client that disconnects cancels its generation at once.

Needs the ``server`` extra: ``pip install 'gpt4all[server]'``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import _openai as oa
from . import errors
from .embeddings import Embed4All
from .gpt4all import GPT4All, _StopMatcher
from .templates import ChatFormatter

log = logging.getLogger("gpt4all.server")

MAX_BODY_BYTES = 8 << 20  # a request body larger than this is refused (413)
CHAT_PAGE = Path(__file__).with_name("chat.html")


def model_ids(gpt4all: GPT4All) -> List[str]:
    """The names a request's ``model`` may give for this model: its file name,
    with and without ``.gguf``, and its registry name."""
    filename = Path(gpt4all.config.get("filename") or gpt4all.model.model_path).name
    ids = [filename]
    if filename.endswith(".gguf"):
        ids.append(filename[: -len(".gguf")])
    if gpt4all.config.get("name"):
        ids.append(gpt4all.config["name"])
    return ids


class _Run:
    """One generation in a worker thread, its text passed to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stops: List[str]):
        self.loop = loop
        self.queue: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
        self.cancelled = threading.Event()
        self.matcher = _StopMatcher(stops)
        self.tokens: List[int] = []

    def on_token(self, token: int, text: str) -> bool:
        """The engine's callback (in the worker thread): False stops it."""
        if self.cancelled.is_set():
            return False
        if token >= 0:
            self.tokens.append(token)
        piece = self.matcher.feed(text)
        if piece:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, piece)
        return not self.matcher.stopped


class Server:
    """The model, its conversations, and the routes that use them.

    Args:
        gpt4all: the loaded chat model (its ``n_parallel`` at least ``parallel``).
        embedder: the embedding model, or None (``/v1/embeddings`` then says so).
        parallel: the most generations running at once.
        queue: the most requests waiting for a place.
        api_key: the key clients must send (``Authorization: Bearer KEY``), or None.
    """

    def __init__(self, gpt4all: GPT4All, embedder: Optional[Embed4All] = None, *, parallel: int = 4,
                 queue: int = 64, api_key: Optional[str] = None):
        self.gpt4all = gpt4all
        self.embedder = embedder
        self.parallel = parallel
        self.queue_size = queue
        self.api_key = api_key
        self.ids = model_ids(gpt4all)
        self.embedding_ids = (model_ids(embedder.gpt4all) if embedder else [])
        model = gpt4all.model
        info = model.info
        jinja = info.chat_template or gpt4all.config.get("chatTemplate")
        template = None if jinja else gpt4all.config.get("promptTemplate")
        self.formatter: Optional[ChatFormatter] = None
        if jinja or template:
            self.formatter = ChatFormatter(jinja, template, bos_token=model.token_text(info.bos),
                                           eos_token=model.token_text(info.eos), tokenizer=model)
        self._format_lock = threading.Lock()
        self._conversations = [model.conversation() for _ in range(parallel)]
        self._free = list(self._conversations)
        # what each conversation's cache holds, as far as we know (asking the
        # engine would wait for its running step)
        self._holds: Dict[int, List[int]] = {id(c): [] for c in self._conversations}
        self._slots: Optional[asyncio.Semaphore] = None
        self._waiting = 0
        self._embed_lock: Optional[asyncio.Lock] = None
        self.created = int(time.time())
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_allowed})

    # ------------------------------------------------------------ plumbing

    @staticmethod
    async def _not_found(request: Request, exc: Exception) -> Response:
        return _error(oa.APIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    @staticmethod
    async def _not_allowed(request: Request, exc: Exception) -> Response:
        return _error(oa.APIError(405, f"{request.method} is not allowed on {request.url.path}",
                                  code="method_not_allowed"))

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            raise oa.APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                              type="invalid_request_error", code="invalid_api_key")

    async def _body(self, request: Request) -> Dict[str, Any]:
        self._check_key(request)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            raise oa.APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise oa.APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise oa.bad(None, f"the request body is not JSON: {e}") from None
        except RecursionError:
            raise oa.bad(None, "the request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise oa.bad(None, "the request body must be a JSON object")
        return body

    def _check_model(self, body: Dict[str, Any], ids: List[str]) -> str:
        name = oa.model_name(body)
        if name is None:
            return ids[0]
        if name not in ids:
            raise oa.APIError(404, f"The model '{name}' does not exist on this server; it serves "
                                   f"{', '.join(repr(i) for i in (self.ids + self.embedding_ids)[:6])}",
                              param="model", code="model_not_found")
        return name

    def _format(self, messages: List[Dict[str, Any]], tools: Optional[List[Dict[str, Any]]] = None) -> List[int]:
        """The prompt's tokens (in a worker thread: the formatter is not shared between threads)."""
        assert self.formatter is not None
        with self._format_lock:
            return self.formatter.tokens(messages, tools=tools)

    def _constraint(self, req: oa.ChatRequest, tools: Optional[List[Dict[str, Any]]]) -> Optional[str]:
        """The request's grammar (response_format, or a required tool call),
        checked against the model (in a worker thread)."""
        gbnf, param = req.grammar, "response_format"
        if tools and req.tool_choice not in ("auto", "none"):
            from ._tool_calls import call_grammar, forced_tool

            assert self.formatter is not None
            gbnf = call_grammar(tools, self.formatter.tool_format, name=forced_tool(req.tool_choice))
            param = "tools"
        if gbnf is not None:
            try:
                self.gpt4all.model.check_grammar(gbnf)
            except errors.GrammarError as e:
                raise oa.bad(param, str(e)) from None
        return gbnf

    def _take_conversation(self, prompt: List[int]) -> Any:
        """The free conversation whose cache shares the longest start with prompt."""
        def shared(conv: Any) -> int:
            cached = self._holds[id(conv)]
            n = 0
            for a, b in zip(cached, prompt):
                if a != b:
                    break
                n += 1
            return n
        best = max(self._free, key=shared)
        self._free.remove(best)
        return best

    # ------------------------------------------------------------ routes

    async def page(self, request: Request) -> Response:
        return HTMLResponse(CHAT_PAGE.read_text(encoding="utf-8"))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "running": self.parallel - len(self._free), "waiting": self._waiting})

    def _model_object(self, model_id: str) -> Dict[str, Any]:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "local"}

    async def models(self, request: Request) -> Response:
        try:
            self._check_key(request)
        except oa.APIError as e:
            return _error(e)
        data = [self._model_object(self.ids[0])]
        if self.embedding_ids:
            data.append(self._model_object(self.embedding_ids[0]))
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        try:
            self._check_key(request)
            model_id = request.path_params["model_id"]
            if model_id not in self.ids + self.embedding_ids:
                raise oa.APIError(404, f"The model '{model_id}' does not exist on this server",
                                  param="model", code="model_not_found")
        except oa.APIError as e:
            return _error(e)
        return JSONResponse(self._model_object(model_id))

    async def chat(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            name = self._check_model(body, self.ids)
            req = oa.chat_request(body, self.gpt4all.model.info.n_ctx)
            if self.formatter is None:
                raise oa.bad("messages", "this model has no chat template; use /v1/completions")
            tools = req.tools if req.tool_choice != "none" else None
            try:
                prompt = await run_in_threadpool(self._format, req.messages, tools)
            except errors.ChatTemplateError as e:
                raise oa.bad("messages", f"the model's chat template failed on these messages: {e}") from None
            grammar = await run_in_threadpool(self._constraint, req, tools)
        except oa.APIError as e:
            return _error(e)
        calls = (tools, self.formatter.tool_format) if tools else None
        return await self._complete(request, "chat.completion", name, prompt, req.sampling, "", grammar, calls)

    async def completions(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            name = self._check_model(body, self.ids)
            req = oa.text_request(body, self.gpt4all.model.info.n_ctx)
            prompt = await run_in_threadpool(self.gpt4all.model.tokenize, req.prompt, True, False)
        except oa.APIError as e:
            return _error(e)
        return await self._complete(request, "text_completion", name, prompt, req.sampling,
                                    req.prompt if req.echo else "")

    async def embeddings(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            if self.embedder is None:
                raise oa.APIError(404, "this server has no embedding model: start it with --embedding-model",
                                  param="model", code="model_not_found")
            name = self._check_model(body, self.embedding_ids)
            req = oa.embedding_request(body)
            if self._embed_lock is None:
                self._embed_lock = asyncio.Lock()
            async with self._embed_lock:
                try:
                    result = await run_in_threadpool(self.embedder.embed, req.texts, dimensionality=req.dimensions,
                                                     return_dict=True)
                except ValueError as e:
                    raise oa.bad("dimensions" if req.dimensions else "input", str(e)) from None
        except oa.APIError as e:
            return _error(e)
        data = []
        for i, v in enumerate(result["embeddings"]):
            value: Any = v
            if req.base64:
                value = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        n = result["n_prompt_tokens"]
        return JSONResponse({"object": "list", "data": data, "model": name,
                             "usage": {"prompt_tokens": n, "total_tokens": n}})

    # ------------------------------------------------------------ generation

    async def _complete(self, request: Request, kind: str, name: str, prompt: List[int], s: oa.Sampling,
                        echo: str, grammar: Optional[str] = None,
                        calls: Optional[Tuple[List[Dict[str, Any]], str]] = None) -> Response:
        n_ctx = self.gpt4all.model.info.n_ctx
        if len(prompt) >= n_ctx:
            return _error(oa.bad("messages" if kind == "chat.completion" else "prompt",
                                 f"This model's context holds {n_ctx} tokens; the prompt has {len(prompt)}. "
                                 f"Shorten it, or start the server with a larger --n-ctx.",
                                 code="context_length_exceeded"))
        max_tokens = n_ctx - len(prompt) if s.max_tokens is None else s.max_tokens
        n_vocab = self.gpt4all.model.info.n_vocab
        bad_ids = [t for t in s.params.get("logit_bias", {}) if not 0 <= t < n_vocab]
        if bad_ids:
            return _error(oa.bad("logit_bias", f"token id {bad_ids[0]} is not in the model's vocabulary "
                                               f"(0 to {n_vocab - 1})"))
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.parallel)
            # every running generation holds a worker thread: leave room for the short jobs beside them
            import anyio.to_thread

            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.parallel + 16)
        if self._slots.locked() and self._waiting >= self.queue_size:
            return _error(oa.APIError(429, f"the server is busy: {self.parallel} requests running and "
                                           f"{self._waiting} waiting; try again later",
                                      type="server_error", code="queue_full"))
        rid = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        run = _Run(asyncio.get_running_loop(), s.stops)
        params = dict(s.params, n_predict=max_tokens, context_shift=False, grammar=grammar)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        conversation = self._take_conversation(prompt)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._free.append(conversation)
                self._slots.release()

        def work() -> Any:
            self._holds[id(conversation)] = []  # unknown until the generation ends well
            try:
                stats = conversation.generate(prompt, on_token=run.on_token, **params)
                # the cache holds the prompt and every token sampled but the last
                self._holds[id(conversation)] = prompt + run.tokens[:-1]
                return stats
            finally:
                run.loop.call_soon_threadsafe(run.queue.put_nowait, None)

        task = asyncio.ensure_future(run_in_threadpool(work))
        task.add_done_callback(lambda _t: release())

        if s.stream:
            return StreamingResponse(self._events(run, task, kind, rid, created, name, len(prompt), s, echo, calls),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        watcher = asyncio.ensure_future(_wait_disconnect(request, run))
        try:
            pieces = [echo] if echo else []
            while True:
                piece = await run.queue.get()
                if piece is None:
                    break
                pieces.append(piece)
            try:
                stats = await task
            except Exception as e:  # noqa: BLE001 (sent as an error)
                return _error(_from_native(e))
        finally:
            watcher.cancel()
        pieces.append(run.matcher.flush())
        text = "".join(pieces)
        reason = oa.finish_reason(stats.stop_reason, run.matcher.stopped)
        if kind == "chat.completion":
            message: Dict[str, Any] = {"role": "assistant", "content": text}
            found = _parse_calls(text, calls) if reason == "stop" else None
            if found:
                message = {"role": "assistant", "content": found[0] or None, "tool_calls": found[1]}
                reason = "tool_calls"
            choice: Dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return JSONResponse({"id": rid, "object": kind, "created": created, "model": name, "choices": [choice],
                             "usage": oa.usage(len(prompt), stats.n_generated)})

    async def _events(self, run: _Run, task: "asyncio.Future[Any]", kind: str, rid: str, created: int, name: str,
                      n_prompt: int, s: oa.Sampling, echo: str,
                      calls: Optional[Tuple[List[Dict[str, Any]], str]] = None) -> AsyncIterator[str]:
        chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"

        def chunk(delta: Optional[str], reason: Optional[str] = None, first: bool = False,
                  tool_calls: Optional[List[Dict[str, Any]]] = None) -> str:
            if kind == "chat.completion":
                d: Dict[str, Any] = {}
                if first:
                    d["role"] = "assistant"
                if delta is not None:
                    d["content"] = delta
                if tool_calls is not None:
                    d["tool_calls"] = tool_calls
                choice: Dict[str, Any] = {"index": 0, "delta": d, "finish_reason": reason, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
            obj: Dict[str, Any] = {"id": rid, "object": chunk_kind, "created": created, "model": name,
                                   "choices": [choice]}
            if s.include_usage:
                obj["usage"] = None
            return f"data: {json.dumps(obj)}\n\n"

        from ._tool_calls import content_end

        text, sent = "", 0  # with tools: the reply so far, and how much of it went out as content
        try:
            yield chunk("" if kind == "chat.completion" else echo, first=True)
            while True:
                piece = await run.queue.get()
                if piece is None:
                    break
                if calls is None:
                    yield chunk(piece)
                    continue
                # text that is or may become a tool call is held until the reply is complete
                text += piece
                end = content_end(text, calls[1])
                if end > sent:
                    yield chunk(text[sent:end])
                    sent = end
            try:
                stats = await task
            except Exception as e:  # noqa: BLE001 (sent as an error event)
                err = _from_native(e)
                yield f"data: {json.dumps(err.body())}\n\n"
                return
            tail = run.matcher.flush()
            reason = oa.finish_reason(stats.stop_reason, run.matcher.stopped)
            if calls is not None:
                text += tail
                found = _parse_calls(text, calls) if reason == "stop" else None
                if found:
                    deltas = [dict(c, index=i) for i, c in enumerate(found[1])]
                    yield chunk(None, tool_calls=deltas)
                    reason = "tool_calls"
                else:
                    tail = text[sent:]
            if tail and not (calls is not None and reason == "tool_calls"):
                yield chunk(tail)
            yield chunk(None, reason)
            if s.include_usage:
                obj = {"id": rid, "object": chunk_kind, "created": created, "model": name, "choices": [],
                       "usage": oa.usage(n_prompt, stats.n_generated)}
                yield f"data: {json.dumps(obj)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            # the client went away (or the reply is complete): stop generating now
            run.cancelled.set()


def _parse_calls(text: str, calls: Optional[Tuple[List[Dict[str, Any]], str]]
                 ) -> Optional[Tuple[str, List[Dict[str, Any]]]]:
    """The content and OpenAI-shaped tool calls of a complete reply, or None
    when it calls no tool."""
    if calls is None:
        return None
    from ._tool_calls import parse_tool_calls

    content, found = parse_tool_calls(text, calls[1], calls[0])
    if not found:
        return None
    return content.strip(), [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments_json}} for c in found]


async def _wait_disconnect(request: Request, run: _Run) -> None:
    """Cancels the run when the client disconnects before its reply."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            run.cancelled.set()
            return


def _from_native(e: BaseException) -> oa.APIError:
    if isinstance(e, errors.ContextOverflowError):
        return oa.bad(None, str(e), code="context_length_exceeded")
    if isinstance(e, (errors.InvalidArgumentError, ValueError)):
        return oa.bad(None, str(e))
    log.exception("generation failed", exc_info=e)
    return oa.APIError(500, f"generation failed: {e}", type="server_error", code="internal_error")


def _error(e: oa.APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def serve(gpt4all: GPT4All, embedder: Optional[Embed4All] = None, *, host: str = "127.0.0.1", port: int = 4891,
          parallel: int = 4, queue: int = 64, api_key: Optional[str] = None,
          on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Serves the model until SIGINT or SIGTERM; then stops taking requests,
    lets the running ones finish, and returns."""
    import uvicorn

    server = Server(gpt4all, embedder, parallel=parallel, queue=queue, api_key=api_key)
    config = uvicorn.Config(server.app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=300, lifespan="off")
    uv = uvicorn.Server(config)
    if on_ready is not None:
        original_startup = uv.startup

        async def startup(sockets: Any = None) -> None:
            await original_startup(sockets=sockets)
            if uv.started:
                on_ready(f"http://{host}:{port}")

        uv.startup = startup  # type: ignore[method-assign]
    # uvicorn drains on SIGTERM, then raises the signal again for the handler
    # it found: ours ends the serve() call instead of the process (so the
    # caller closes the model and exits with status 0)
    previous = signal.signal(signal.SIGTERM, _stop_serving)
    try:
        uv.run()
    except _StopServing:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


class _StopServing(Exception):
    pass


def _stop_serving(signum: int, frame: Any) -> None:
    raise _StopServing()


def wants_warning(host: str, api_key: Optional[str]) -> bool:
    """Whether to warn that anyone on the network can use the server."""
    return api_key is None and host not in ("127.0.0.1", "localhost", "::1")

