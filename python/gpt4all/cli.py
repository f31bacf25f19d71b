"""The ``gpt4all`` command (also ``python -m gpt4all``): chat in a terminal,
one completion, the models registry, embeddings, and the OpenAI-compatible
server.

A user's mistake (a missing model, a bad option) is one line on stderr and
exit status 1 (2 for a bad command line), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from . import errors

EXIT_ERROR = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the user can fix: printed as one line."""


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options")
    g.add_argument("--model-path", metavar="DIR", help="the folder that holds model files (default: the user "
                                                        "cache folder, see gpt4all.models.default_model_dir)")
    g.add_argument("--device", help='"cpu" (default; Metal on Apple silicon when the model fits), "gpu", a backend '
                                    '("cuda", "vulkan"/"kompute", "metal"), "<backend>:<name>" as '
                                    "GPT4All.list_gpus() gives it, a vendor or a device name")
    g.add_argument("--threads", type=_positive, metavar="N", help="CPU threads (default: the physical cores)")
    g.add_argument("--n-ctx", type=_positive, metavar="N", default=2048,
                   help="context length in tokens (default: %(default)s)")
    g.add_argument("--offline", action="store_true", help="never download: use models already on disk")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not 1 or more")
    return v


def parser() -> argparse.ArgumentParser:
    # no abbreviations: `--model X` must not quietly mean `--model-path X`
    ap = argparse.ArgumentParser(prog="gpt4all", description="Run language models locally.", allow_abbrev=False)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("chat", allow_abbrev=False, help="chat with a model in the terminal",
                       description="Chat in the terminal with streamed replies. Commands at the prompt: /reset "
                                   "(forget the conversation), /system TEXT (a new system prompt, and reset), "
                                   "/exit. End a line with a backslash to go on on the next line. Ctrl-C stops "
                                   "a reply; Ctrl-C at the prompt (or Ctrl-D) exits.")
    p.add_argument("model", nargs="?", help="model file or registry name (default: the registry's default)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=_positive, default=1024, help="most tokens per reply (default: %(default)s)")
    p.add_argument("--temp", type=float, default=None, help="sampling temperature (0: greedy)")
    _common(p)

    p = sub.add_parser("generate", allow_abbrev=False, help="one completion of a prompt",
                       description="Completes one prompt (the text as given, no chat template) and prints it.")
    p.add_argument("prompt", help='the prompt, or "-" to read it from standard input')
    p.add_argument("-m", "--model", help="model file or registry name (default: the registry's default)")
    p.add_argument("--max-tokens", type=_positive, default=200, help="most tokens (default: %(default)s)")
    p.add_argument("--temp", type=float, default=None, help="sampling temperature (0: greedy)")
    _common(p)

    p = sub.add_parser("models", allow_abbrev=False, help="list the models registry, or download a model",
                       description="Lists the registry's models and which are on disk; 'models download NAME' "
                                   "fetches one (with a progress bar).")
    p.add_argument("action", nargs="?", choices=["list", "download"], default="list")
    p.add_argument("name", nargs="?", help="the model to download")
    _common(p)

    p = sub.add_parser("embed", allow_abbrev=False, help="print the embeddings of texts as JSON",
                       description="Prints one JSON list of vectors, one per TEXT.")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("-m", "--model", help="embedding model (default: all-MiniLM-L6-v2.gguf2.f16.gguf)")
    p.add_argument("--prefix", help="task prefix (nomic-embed-text: search_query, search_document, ...)")
    p.add_argument("--dimensionality", type=_positive, help="Matryoshka size (nomic-embed-text-v1.5)")
    _common(p)

    p = sub.add_parser("serve", allow_abbrev=False, help="serve a model over OpenAI's HTTP API",
                       description="An OpenAI-compatible server (/v1/chat/completions, /v1/completions, "
                                   "/v1/embeddings, /v1/models) with a chat page at /. Concurrent requests are "
                                   "decoded together. SIGTERM or Ctrl-C stops taking requests and lets the "
                                   "running ones finish.")
    p.add_argument("model", nargs="?", help="model file or registry name (default: the registry's default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=4891, help="port (default: %(default)s)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on the API")
    p.add_argument("--parallel", type=_positive, default=4,
                   help="requests generated at once, decoded together (default: %(default)s)")
    p.add_argument("--queue", type=int, default=64, help="requests that may wait for a place (default: "
                                                         "%(default)s); more get 429")
    p.add_argument("--embedding-model", help="also serve /v1/embeddings with this model")
    _common(p)
    return ap


# ------------------------------------------------------------ helpers

def _model_name(name: Optional[str]) -> str:
    if name:
        return name
    from .models import default_model

    return str(default_model()["filename"])


def _load(args: argparse.Namespace, name: Optional[str], **extra: Any) -> Any:
    from .gpt4all import GPT4All

    return GPT4All(_model_name(name), model_path=args.model_path, allow_download=not args.offline,
                   n_threads=args.threads, device=args.device, n_ctx=args.n_ctx, **extra)


def _sampling(args: argparse.Namespace) -> dict:
    return {} if args.temp is None else {"temp": args.temp}


# ------------------------------------------------------------ commands

def cmd_generate(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    with _load(args, args.model) as model:
        for piece in model.generate(prompt, max_tokens=args.max_tokens, streaming=True, **_sampling(args)):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _read_message(prompt: Callable[[str], str]) -> Optional[str]:
    """One message: lines ending in a backslash go on; None at end of input."""
    lines: List[str] = []
    while True:
        try:
            line = prompt("> " if not lines else "… ")
        except EOFError:
            return None if not lines else "\n".join(lines)
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        return "\n".join(lines)


_KEEP = object()  # /reset: a new conversation with the same system prompt


def _chat_turns(model: Any, args: argparse.Namespace, prompt: Callable[[str], str]) -> Any:
    """Turns of one conversation; returns None to exit, or the system
    prompt of the next conversation (_KEEP for the same)."""
    out = sys.stdout
    while True:
        try:
            text = _read_message(prompt)
        except KeyboardInterrupt:
            out.write("\n")
            return None
        if text is None:
            out.write("\n")
            return None
        stripped = text.strip()
        if not stripped:
            continue
        if stripped in ("/exit", "/quit"):
            return None
        if stripped == "/reset":
            return _KEEP
        if stripped == "/system" or stripped.startswith("/system "):
            return stripped[len("/system"):].strip() or None
        if stripped.startswith("/"):
            print(f"unknown command {stripped.split()[0]}: /reset, /system TEXT, /exit", file=out)
            continue
        try:
            for piece in model.generate(text, max_tokens=args.max_tokens, streaming=True, **_sampling(args)):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        out.write("\n")
        out.flush()


def cmd_chat(args: argparse.Namespace, prompt: Callable[[str], str] = input) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    system = args.system
    with _load(args, args.model) as model:
        print(f"{Path(model.model.model_path).name}: /reset, /system TEXT, /exit; Ctrl-C stops a reply.")
        while True:
            with model.chat_session(system_prompt=system):
                following = _chat_turns(model, args, prompt)
            if following is None:
                return 0
            if following is not _KEEP:
                system = following
            print("(new conversation)")


def cmd_models(args: argparse.Namespace) -> int:
    from . import models

    if args.action == "download":
        if not args.name:
            raise UserError("models download: name the model (see 'gpt4all models')")
        if args.offline:
            raise UserError("models download: --offline forbids downloading")
        config = models.retrieve_model(args.name, model_path=args.model_path, allow_download=True, verbose=True)
        print(config["path"])
        return 0
    if args.name:
        raise UserError(f"models: unexpected {args.name!r} (did you mean 'models download {args.name}'?)")
    folder = Path(args.model_path).expanduser() if args.model_path else models.default_model_dir()
    entries = models.registry() if args.offline else models.list_models()
    for e in entries:
        name = str(e.get("filename", "?"))
        on_disk = (folder / name).is_file()
        size = e.get("filesize")
        gb = f"{int(size) / 1e9:5.2f} GB" if isinstance(size, str) and size.isdigit() else "       ?"
        kind = "embed" if e.get("embeddingModel") else "chat "
        print(f"{'*' if on_disk else ' '} {kind} {gb}  {name}  {e.get('name', '')}")
    print(f"(* on disk in {folder})")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .embeddings import Embed4All

    with Embed4All(args.model, model_path=args.model_path, allow_download=not args.offline, n_threads=args.threads,
                   device=args.device, n_ctx=args.n_ctx) as e:
        vectors = e.embed(list(args.texts), prefix=args.prefix, dimensionality=args.dimensionality)
    json.dump(vectors, sys.stdout)
    sys.stdout.write("\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from . import server
    except ImportError as e:
        raise UserError(f"gpt4all serve needs the server extra ({e.name} is missing): "
                        f"pip install 'gpt4all[server]'") from None
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, not {args.port}")
    if args.queue < 0:
        raise UserError("--queue must be 0 or more")
    if server.wants_warning(args.host, args.api_key):
        print(f"warning: listening on {args.host} without --api-key: anyone who can reach this machine can use "
              f"the model", file=sys.stderr)
    from .embeddings import Embed4All

    model = _load(args, args.model, n_parallel=args.parallel)
    embedder = None
    if args.embedding_model:
        embedder = Embed4All(args.embedding_model, model_path=args.model_path, allow_download=not args.offline,
                             n_threads=args.threads, device=args.device)
    # SIGTERM as SIGINT: uvicorn stops taking requests and lets the running ones finish
    try:
        server.serve(model, embedder, host=args.host, port=args.port, parallel=args.parallel, queue=args.queue,
                     api_key=args.api_key,
                     on_ready=lambda url: print(f"serving {server.model_ids(model)[0]} at {url}/v1 "
                                                f"(chat page: {url}/)", file=sys.stderr, flush=True))
    finally:
        if embedder is not None:
            embedder.close()
        model.close()
    return 0


COMMANDS = {"chat": cmd_chat, "generate": cmd_generate, "models": cmd_models, "embed": cmd_embed,
            "serve": cmd_serve}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, errors.GPT4AllError, ValueError, OSError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gpt4all {args.command}: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130

