"""The OpenAI-compatible server (``gpt4all serve``), run as a subprocess on a
free loopback port and driven with OpenAI's own Python client (and raw HTTP
where the client would hide what is tested)."""
from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import openai  # the test command installs it, and langchain-openai (scripts/test.sh)
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the process checks are written for Linux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(smollm2_path: Path, *extra: str, embedding: Path | None = None):
    port = free_port()
    cmd = [sys.executable, "-m", "gpt4all", "serve", smollm2_path.name, "--model-path", str(smollm2_path.parent),
           "--offline", "--port", str(port), *extra]
    if embedding is not None:
        cmd += ["--embedding-model", str(embedding)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("serving "), line + (proc.stderr.read() if proc.poll() is not None else "")
        proc.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        proc.port = port  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(smollm2_path, minilm_path):
    with running_server(smollm2_path, "--parallel", "4", embedding=minilm_path) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)


MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
HELLO = [{"role": "user", "content": "Name three colors."}]


def raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else None


# ------------------------------------------------------------ the API

def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, "all-MiniLM-L6-v2.f16.gguf"]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_completion_and_its_stream_agree(client):
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant" and text.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same reply, streamed or not
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens and not chunks[-1].choices


def test_length_and_stop(client):
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0)
    text = full.choices[0].message.content
    words = text.split()
    assert len(words) > 3
    stop = words[2]
    cut = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    for stream in (False, True):
        if stream:
            got = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=40, temperature=0, stop=stop, stream=True) if c.choices)
            assert got == cut.choices[0].message.content


def test_sampling_is_seeded(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=20,
              temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b
    c = client.chat.completions.create(**dict(kw, seed=99)).choices[0].message.content
    d = client.chat.completions.create(**dict(kw, seed=7)).choices[0].message.content
    assert len({a, c, d}) > 1


def test_text_completions(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and "Paris" in r.choices[0].text
    assert r.usage.completion_tokens <= 8
    echoed = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8,
                                       temperature=0, echo=True)
    assert echoed.choices[0].text == "The capital of France is" + r.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_embeddings(client, minilm_path):
    from gpt4all import Embed4All

    texts = ["The cat sat on the mat.", "Stocks fell on Monday."]
    r = client.embeddings.create(model="all-MiniLM-L6-v2.f16.gguf", input=texts)  # the client asks for base64
    got = [d.embedding for d in r.data]
    plain = client.embeddings.create(model="all-MiniLM-L6-v2.f16.gguf", input=texts, encoding_format="float")
    with Embed4All(minilm_path.name, model_path=minilm_path.parent, allow_download=False) as e:
        expected = e.embed(texts)
    for a, b, c in zip(got, [d.embedding for d in plain.data], expected):
        assert len(a) == 384
        assert sum(x * y for x, y in zip(a, c)) > 0.99999 and sum(x * y for x, y in zip(b, c)) > 0.99999
    assert r.usage.prompt_tokens == 7 + 5
    one = client.embeddings.create(model="all-MiniLM-L6-v2.f16.gguf", input="hello", encoding_format="float")
    assert len(one.data) == 1 and math.isclose(sum(x * x for x in one.data[0].embedding), 1, rel_tol=1e-5)


def test_langchain_chat_openai(server, client):
    """LangChain's ChatOpenAI, pointed at the server: invoke, stream."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.base + "/v1", api_key="unused", model=MODEL, temperature=0, max_tokens=16,
                     max_retries=0)
    messages = [("system", "You answer questions."), ("human", "What is the capital of France?")]
    reply = llm.invoke(messages)
    # greedy: what the server answers OpenAI's own client for the same messages
    direct = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=16, messages=[
        {"role": "system", "content": "You answer questions."},
        {"role": "user", "content": "What is the capital of France?"}])
    assert reply.content == direct.choices[0].message.content and reply.content.strip()
    assert reply.response_metadata["finish_reason"] == direct.choices[0].finish_reason
    assert reply.usage_metadata["output_tokens"] == direct.usage.completion_tokens
    assert "".join(c.content for c in llm.stream(messages)) == reply.content


# ------------------------------------------------------------ errors

def test_errors_in_openais_shape(server, client):
    def status(body, path="/v1/chat/completions"):
        code, reply = raw(server, "POST", path, body if isinstance(body, bytes) else json.dumps(body).encode())
        assert set(reply) == {"error"} and {"message", "type", "param", "code"} <= set(reply["error"]), reply
        return code, reply["error"]

    assert status(b"{not json")[0] == 400
    assert status(b"[1, 2]")[0] == 400
    code, err = status({"messages": HELLO, "temperature": "hot"})
    assert code == 400 and err["param"] == "temperature"
    code, err = status({"messages": HELLO, "n": 2})
    assert code == 400 and err["param"] == "n"
    code, err = status({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "bad name"}}]})
    assert code == 400 and err["param"] == "tools"
    code, err = status({"messages": HELLO, "tool_choice": "required"})
    assert code == 400 and err["param"] == "tool_choice"
    code, err = status({"messages": HELLO, "tools": [WEATHER],
                        "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    assert code == 400 and err["param"] == "tool_choice" and "get_weather" in err["message"]
    code, err = status({"messages": HELLO, "functions": [{"name": "f"}]})
    assert code == 400 and err["code"] == "unsupported_parameter"
    code, err = status({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 3}}}}}})
    assert code == 400 and err["param"] == "response_format.json_schema.schema" and "multipleOf" in err["message"]
    code, err = status({"messages": HELLO, "response_format": {"type": "yaml"}})
    assert code == 400 and err["param"] == "response_format"
    code, err = status({"messages": []})
    assert code == 400 and err["param"] == "messages"
    code, err = status({"messages": [{"role": "wizard", "content": "x"}]})
    assert code == 400 and "role" in err["param"]
    code, err = status({"messages": [{"role": "user", "content": "word " * 3000}]})
    assert code == 400 and err["code"] == "context_length_exceeded"
    code, err = status({"messages": HELLO, "logit_bias": {"99999999": 5}})
    assert code == 400 and err["param"] == "logit_bias"
    assert status(b"[" * 100000 + b"]" * 100000)[0] == 400  # nested too deeply for the JSON parser
    code, err = status({"input": ""}, "/v1/embeddings")
    assert code == 400
    code, err = status({"model": "gpt-4", "messages": HELLO})
    assert code == 404 and err["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=5)
    code, reply = raw(server, "POST", "/v1/chat/completions", b"x" * (9 << 20))
    assert code == 413
    assert raw(server, "GET", "/v1/nowhere")[0] == 404
    # and the server keeps serving
    assert client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).usage.completion_tokens <= 2


# ------------------------------------------------------------ structured output

CAT = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                        "age": {"type": "integer", "minimum": 0, "maximum": 30},
                                        "colors": {"type": "array", "items": {"enum": ["black", "white", "orange"]},
                                                   "minItems": 1, "maxItems": 3}},
       "required": ["name", "age", "colors"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"]}}}


def test_response_formats(client):
    import jsonschema

    ask = [{"role": "user", "content": "Describe a cat as JSON."}]
    r = client.chat.completions.create(model=MODEL, messages=ask, response_format={"type": "json_object"},
                                       max_tokens=300, seed=1)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    fmt = {"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT, "strict": True}}
    for seed in range(3):
        r = client.chat.completions.create(model=MODEL, messages=ask, response_format=fmt, max_tokens=300, seed=seed)
        jsonschema.validate(json.loads(r.choices[0].message.content), CAT)
    stream = client.chat.completions.create(model=MODEL, messages=ask, response_format=fmt, max_tokens=300, seed=7,
                                            stream=True)
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)), CAT)


def test_tool_calls_round_trip_with_the_openai_client(client):
    import jsonschema

    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required",
                                       max_tokens=100, seed=1)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], max_tokens=40, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.content.strip()
    # tool_choice none: plain text, whatever the model writes
    r = client.chat.completions.create(model=MODEL, messages=messages[:1], tools=[WEATHER], tool_choice="none",
                                       max_tokens=20, temperature=0)
    assert r.choices[0].message.tool_calls is None


def test_streamed_tool_call_deltas(client):
    import jsonschema

    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is it cold in Oslo?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=100, seed=3, stream=True)
    calls: dict = {}
    reasons, content = [], ""
    for c in stream:
        delta = c.choices[0].delta
        content += delta.content or ""
        for d in delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
        if c.choices[0].finish_reason:
            reasons.append(c.choices[0].finish_reason)
    assert reasons == ["tool_calls"] and list(calls) == [0] and content == ""
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


def test_api_key(smollm2_path):
    with running_server(smollm2_path, "--api-key", "sesame", "--parallel", "1") as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base + "/v1", api_key="wrong", max_retries=0).models.list()
        code, reply = raw(srv, "POST", "/v1/chat/completions", json.dumps({"messages": HELLO}).encode())
        assert code == 401 and reply["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=srv.base + "/v1", api_key="sesame", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices
        assert raw(srv, "GET", "/health", headers={})[0] == 200


def test_open_host_without_a_key_warns(smollm2_path):
    r = subprocess.run([sys.executable, "-m", "gpt4all", "serve", smollm2_path.name, "--model-path",
                        str(smollm2_path.parent), "--offline", "--host", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.alarm(8))  # it would serve forever: SIGALRM ends it
    assert "warning: listening on 0.0.0.0 without --api-key" in r.stderr


# ------------------------------------------------------------ load, cancel, queue, shutdown

def health(server) -> dict:
    return raw(server, "GET", "/health", headers={})[1]


def hang_up_and_wait_for_idle(server, conn) -> None:
    """Drops the client's connection; the server must stop generating at once."""
    assert health(server)["running"] == 1
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 5
    while health(server)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health(server)["running"] == 0  # 1,500 tokens would take several seconds more


def test_a_client_that_disconnects_cancels_its_generation(server, client):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to ten thousand."}],
            "max_tokens": 1500, "temperature": 0, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    conn.getresponse().fp.readline()  # the first event: generating
    hang_up_and_wait_for_idle(server, conn)
    # the same for a reply that is not streamed
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=False)),
                 headers={"Content-Type": "application/json"})
    time.sleep(0.5)
    hang_up_and_wait_for_idle(server, conn)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


CLIENTS, REQUESTS = 32, 5


def test_load_many_clients_nothing_lost_or_mixed(server, client):
    """32 clients x 5 requests, streaming and not, each asking for its own
    number back: every reply is whole, well-formed and its own."""
    def ask(k: int, stream: bool):
        msgs = [{"role": "user", "content": f"Repeat this number exactly: {1000 + k}"}]
        if stream:
            chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0,
                                                         stream=True, stream_options={"include_usage": True}))
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage
        r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0)
        return r.choices[0].message.content, r.usage

    solo = {k: ask(k, False)[0] for k in range(CLIENTS)}
    assert sum(str(1000 + k) in solo[k] for k in range(CLIENTS)) >= CLIENTS * 3 // 4  # the model does repeat them
    def load_round() -> dict:
        results: dict = {}
        failures: list = []

        def worker(k: int):
            try:
                for j in range(REQUESTS):
                    results[(k, j)] = ask(k, stream=(k + j) % 2 == 0)
            except Exception as e:  # noqa: BLE001
                failures.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        assert len(results) == CLIENTS * REQUESTS
        return results

    # the first round grows the engine to 4 caches; memory must stay flat after that
    load_round()
    before = rss_mb(server.pid)
    results = load_round()
    same = 0
    for (k, _), (text, usage) in results.items():
        assert usage.completion_tokens <= 12 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert not any(str(1000 + other) in text for other in range(CLIENTS) if other != k), (k, text)
        same += text == solo[k]
    # batched greedy replies equal solo ones but for rare rounding (see scripts/batch_agreement.py)
    assert same >= CLIENTS * REQUESTS * 9 // 10, same
    assert health(server) == {"status": "ok", "running": 0, "waiting": 0}
    assert rss_mb(server.pid) - before < 24


def test_a_full_queue_answers_429(smollm2_path):
    with running_server(smollm2_path, "--parallel", "1", "--queue", "0") as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        body = {"messages": [{"role": "user", "content": "Count to ten thousand."}], "max_tokens": 400,
                "temperature": 0, "stream": True}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        conn.getresponse().fp.readline()
        code, reply = raw(srv, "POST", "/v1/chat/completions", json.dumps({"messages": HELLO}).encode())
        assert code == 429 and reply["error"]["code"] == "queue_full"
        conn.close()


def test_sigterm_finishes_running_requests_then_exits(smollm2_path):
    with running_server(smollm2_path, "--parallel", "2") as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        body = {"messages": [{"role": "user", "content": "Count from one to fifty."}], "max_tokens": 60,
                "temperature": 0, "stream": True}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        first = r.readline()
        assert first.startswith(b"data: ")
        srv.send_signal(signal.SIGTERM)
        rest = r.read().decode()
        events = [e for e in (first.decode() + rest).split("\n\n") if e.strip()]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
        assert srv.wait(timeout=30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2)


def test_chat_page_streams_a_reply_in_a_browser(server, client):
    """The page at / in headless Chromium: it finds the model, sends a
    message, and shows the reply as it streams in."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import shutil

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver_path, "the test command installs chromium and chromium-driver (scripts/test.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server.base + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text == MODEL)
        driver.find_element(By.ID, "input").send_keys("What is the capital of France?")
        driver.find_element(By.ID, "send").click()
        # the page asks with OpenAI's defaults (temperature 1, no max_tokens): a
        # reply may run to the context's end, minutes on a busy CI machine. So:
        # wait for it to stream in, then press Stop (the send button meanwhile),
        # which must end it on the page and, through the hang-up, on the server
        done = ".msg.assistant[data-state=done]"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, done)
                   or len(d.find_element(By.CSS_SELECTOR, ".msg.assistant").text) >= 20)
        if not driver.find_elements(By.CSS_SELECTOR, done):
            assert driver.find_element(By.ID, "send").text == "Stop"
            driver.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, done))
        assert driver.find_element(By.ID, "send").text == "Send"
        deadline = time.monotonic() + 10
        while health(server)["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(server)["running"] == 0
        shown = driver.find_element(By.CSS_SELECTOR, ".msg.assistant").text
        user = driver.find_element(By.CSS_SELECTOR, ".msg.user").text
    finally:
        driver.quit()
    assert user == "What is the capital of France?"
    # (an error would have turned the reply's box into class "msg error"); the
    # page samples with OpenAI's defaults (temperature 1), so any reply will do
    assert shown.strip()


def test_chat_page_is_served(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/")
    r = conn.getresponse()
    page = r.read().decode()
    assert r.status == 200 and r.getheader("content-type").startswith("text/html")
    assert "/v1/chat/completions" in page and "stream: true" in page


# ------------------------------------------------------------ the command line

def cli(*args: str, stdin: str | None = None, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpt4all", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_cli_generate(smollm2_path):
    from gpt4all import GPT4All

    r = cli("generate", "The capital of France is", "-m", smollm2_path.name, "--model-path",
            str(smollm2_path.parent), "--offline", "--max-tokens", "8", "--temp", "0")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    with GPT4All(smollm2_path.name, model_path=smollm2_path.parent, allow_download=False) as m:
        assert r.stdout == m.generate("The capital of France is", max_tokens=8, temp=0) + "\n"
    piped = cli("generate", "-", "-m", smollm2_path.name, "--model-path", str(smollm2_path.parent), "--offline",
                "--max-tokens", "8", "--temp", "0", stdin="The capital of France is")
    assert piped.stdout == r.stdout


def test_cli_models_and_embed(smollm2_path, minilm_path):
    r = cli("models", "--model-path", str(smollm2_path.parent), "--offline")
    assert r.returncode == 0
    line = next(line for line in r.stdout.splitlines() if smollm2_path.name in line)
    assert line.startswith("* chat")
    assert any("all-MiniLM-L6-v2.gguf2.f16.gguf" in line and " embed " in line for line in r.stdout.splitlines())
    r = cli("embed", "hello", "world", "-m", minilm_path.name, "--model-path", str(minilm_path.parent), "--offline")
    assert r.returncode == 0, r.stderr
    vectors = json.loads(r.stdout)
    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)


def test_cli_mistakes_are_one_line(tmp_path):
    r = cli("generate", "hi", "-m", "no-such-model.gguf", "--model-path", str(tmp_path), "--offline")
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("gpt4all generate: Model file does not exist")
    r = cli("generate", "hi", "--threads", "zero")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("models", "download", "--offline")
    assert r.returncode == 1 and "name the model" in r.stderr
    # no abbreviations: --model is not taken for --model-path (it made a folder named after the model)
    r = cli("serve", "--model", "SmolLM2-135M-Instruct.Q4_1.gguf", cwd=tmp_path)
    assert r.returncode == 2 and "unrecognized arguments: --model" in r.stderr and not list(tmp_path.iterdir())
    for command in ("chat", "generate", "models", "embed", "serve"):
        h = cli(command, "--help")
        assert h.returncode == 0 and "--model-path" in h.stdout and "--n-ctx" in h.stdout


def test_cli_chat_in_a_terminal(smollm2_path):
    """The REPL through a pseudo-terminal: a reply, a multi-line message,
    /reset, Ctrl-C during a reply, /exit."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the chat
        os.execv(sys.executable, [sys.executable, "-m", "gpt4all", "chat", smollm2_path.name, "--model-path",
                                  str(smollm2_path.parent), "--offline", "--temp", "0", "--max-tokens", "400"])
    out = b""

    def read_until(marker: bytes, timeout: float = 60) -> bytes:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} in {out[-2000:]!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            out += chunk
        found = out
        out = out[out.index(marker) + len(marker):] if marker in out else b""
        return found

    try:
        read_until(b"> ")
        os.write(fd, b"What is the capital of France?\n")
        reply = read_until(b"> ")
        assert b"Paris" in reply
        os.write(fd, b"Write a long story \\\n")
        read_until("… ".encode())
        os.write(fd, b"about a dragon.\n")
        time.sleep(1.5)
        os.kill(pid, signal.SIGINT)
        assert b"[stopped]" in read_until(b"> ")
        os.write(fd, b"/reset\n")
        assert b"(new conversation)" in read_until(b"> ")
        os.write(fd, b"/exit\n")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
