"""The browser playground (issue 12): served by the real frontend, used in a real Chromium.

The frontend is the real app (uvicorn on 127.0.0.1) in front of the scripted fake backend; the
browser is Debian's headless Chromium driven by Playwright (tests/fixtures/plugin_browser.py).
Playback is asserted on the page's own state and on the AudioContext it created (recorded by an
init script, which changes nothing in the page), never on timings.
"""

from __future__ import annotations

import io
import re
import threading
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.fake_backend import Behavior, FakeBackend
from tests.fixtures.plugin_frontend import RunningFrontend
from tests.frontend.audio import SAMPLE_RATE, SAMPLES_PER_FRAME

STATIC = Path(__file__).resolve().parents[2] / "runtime" / "frontend" / "static"

# Records every AudioContext the page makes, so that the test can read its clock.
RECORD_AUDIO_CONTEXTS = """
(() => {
  const Native = window.AudioContext;
  window.__audioContexts = [];
  window.AudioContext = class extends Native {
    constructor(...args) { super(...args); window.__audioContexts.push(this); }
  };
})();
"""


# --- the page over plain HTTP --------------------------------------------------------------------

def test_the_page_needs_no_key_and_carries_strict_security_headers(
        frontend: RunningFrontend) -> None:
    root = httpx.get(f"{frontend.base_url}/", follow_redirects=False, timeout=10)
    assert root.status_code == 307 and root.headers["location"] == "/playground"

    page = httpx.get(f"{frontend.base_url}/playground", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in v for values in csp.values() for v in values)
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"

    for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css"),
                       ("icon.svg", "image/svg+xml")):
        asset = httpx.get(f"{frontend.base_url}/playground/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.content == (STATIC / name).read_bytes()
        assert asset.headers["x-content-type-options"] == "nosniff"
    for name in ("playground.html", "../app.py", "..%2Fapp.py", "nope.js"):
        assert httpx.get(f"{frontend.base_url}/playground/{name}", timeout=10).status_code == 404

    # The page is public; what it calls is not.
    assert httpx.get(f"{frontend.base_url}/v1/audio/capabilities", timeout=10).status_code == 401


def test_capabilities_tell_the_page_the_limits(frontend_factory: Callable[..., RunningFrontend],
                                               ) -> None:
    fe = frontend_factory(ORPHEUS_MAX_INPUT_CHARS="321")
    caps = httpx.get(f"{fe.base_url}/v1/audio/capabilities", headers=fe.headers(),
                     timeout=10).json()
    assert caps["max_input_chars"] == 321
    assert caps["default_format"] == "wav" and {"wav", "pcm"} <= set(caps["formats"])
    assert (caps["min_speed"], caps["max_speed"], caps["sample_rate"]) == (0.25, 4.0, SAMPLE_RATE)


def test_the_page_has_no_inline_code_and_nothing_from_another_origin() -> None:
    html = (STATIC / "playground.html").read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html and " style=" not in html and not re.search(r"\son\w+=", html)
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith("/playground/"), url
    script = (STATIC / "playground.js").read_text()
    # Every call is a relative /v1 path (so it can only go to this origin), none with the key in it.
    assert set(re.findall(r'api\("([^"]+)"', script)) == {
        "/v1/audio/voices", "/v1/audio/capabilities", "/v1/audio/speech"}
    assert "http://" not in script and "https://" not in script and "localStorage" not in script
    assert "@import" not in (STATIC / "playground.css").read_text()


def test_the_static_files_ship_in_the_package() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((STATIC.parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["runtime.frontend"]
    for path in STATIC.iterdir():
        assert any(fnmatch(f"static/{path.name}", g) for g in globs), path.name


# --- the page in a browser ------------------------------------------------------------------------

@dataclass
class Visit:
    """A page in a fresh browser context, with everything it logged and requested."""

    page: Any
    origin: str
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"] + self.page_errors

    def foreign_requests(self) -> list[str]:
        return [r.url for r in self.requests if _origin(r.url) != self.origin]

    def state(self) -> str:
        return str(self.page.get_attribute("#status", "data-state"))

    def audio_clock(self) -> list[float]:
        return list(self.page.evaluate(
            "window.__audioContexts.map((c) => c.state === 'running' ? c.currentTime : -1)"))

    def connect(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#connect")


def _origin(url: str) -> str:
    if url.startswith("blob:"):
        url = url[len("blob:"):]
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def visit(browser: Any) -> Iterator[Callable[[RunningFrontend], Visit]]:
    contexts: list[Any] = []

    def open_page(fe: RunningFrontend) -> Visit:
        context = browser.new_context(accept_downloads=True)
        contexts.append(context)
        context.add_init_script(RECORD_AUDIO_CONTEXTS)
        page = context.new_page()
        v = Visit(page, fe.base_url)
        page.on("console", lambda m: v.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: v.page_errors.append(str(e)))
        page.on("request", lambda r: v.requests.append(r))
        page.goto(f"{fe.base_url}/")  # the redirect to /playground is part of the visit
        page.wait_for_load_state("networkidle")
        return v

    yield open_page
    for context in contexts:
        context.close()


def _expected_401_only(v: Visit) -> None:
    """A refused fetch is logged by Chromium itself; nothing else may be."""
    for text in v.errors():
        assert "status of 401" in text, v.errors()


def test_a_wrong_key_shows_the_401_message_and_is_not_kept(
        frontend: RunningFrontend, visit: Callable[[RunningFrontend], Visit]) -> None:
    v = visit(frontend)
    assert v.page.url == f"{frontend.base_url}/playground"
    assert v.errors() == [] and v.foreign_requests() == []
    assert v.page.is_disabled("#speak")

    v.connect("wrong-" + frontend.api_key)
    v.page.wait_for_selector("#error:not([hidden])")
    assert v.page.get_attribute("#error", "data-status") == "401"
    assert "Error 401: incorrect API key provided" in v.page.inner_text("#error")
    assert v.page.get_attribute("#key-status", "data-state") == "refused"
    assert v.page.is_disabled("#speak")
    assert v.page.evaluate("sessionStorage.length") == 0
    _expected_401_only(v)
    assert v.foreign_requests() == []


def test_the_right_key_plays_while_it_streams_and_the_download_is_what_arrived(
        frontend: RunningFrontend, fake_backend: FakeBackend,
        visit: Callable[[RunningFrontend], Visit], artifacts_dir: Path,
        note_artifact: Callable[[Path], None], tmp_path: Path) -> None:
    frames, held_at = 24, 12
    release = threading.Event()
    fake_backend.script(Behavior.stream(frames=frames, hold=release, hold_after_frames=held_at))
    v = visit(frontend)
    v.connect(frontend.api_key)
    v.page.wait_for_selector("#key-status[data-state=connected]")
    assert v.page.input_value("#voice") == "tara"
    assert v.page.input_value("#format") == "wav"
    assert "/ 4096 characters" in v.page.inner_text("#count")

    # A tag goes where the cursor is.
    v.page.fill("#text", "Hello there how are you")
    v.page.evaluate("document.getElementById('text').setSelectionRange(11, 11)")
    v.page.click("#tags button:text('<laugh>')")
    assert v.page.input_value("#text") == "Hello there <laugh> how are you"
    v.page.select_option("#voice", "leo")
    v.page.fill("#speed", "1")

    v.page.click("#speak")
    v.page.wait_for_selector("#status[data-state=playing]")
    # Playing while the backend is provably still holding back the second half of the stream.
    completion = fake_backend.completions[-1]
    assert not completion.finished
    first_audio = v.page.inner_text("#first-audio")
    assert re.fullmatch(r"\d+\.\d\d s", first_audio), first_audio
    assert v.page.inner_text("#total") == "\u2013"  # the page's dash: not finished
    before = v.audio_clock()
    assert len(before) == 1 and before[0] >= 0
    v.page.wait_for_function("(t) => window.__audioContexts[0].currentTime > t + 0.1",
                             arg=before[0])
    v.page.wait_for_function("() => parseFloat(document.getElementById('played').textContent) > 0")
    screenshot = artifacts_dir / "playground.png"
    v.page.screenshot(path=str(screenshot), full_page=True)
    note_artifact(screenshot)

    release.set()
    v.page.wait_for_selector("#status[data-state=done]", timeout=30_000)
    assert completion.finished
    assert "leo: Hello there <laugh> how are you" in completion.body["prompt"]
    assert re.fullmatch(r"\d+\.\d\d s", v.page.inner_text("#total"))
    assert v.page.inner_text("#received") == f"{frames * SAMPLES_PER_FRAME / SAMPLE_RATE:.2f} s"

    with v.page.expect_download() as download:
        v.page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "orpheus-leo.wav"
    with wave.open(io.BytesIO(saved.read_bytes())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        assert wav.getnframes() == frames * SAMPLES_PER_FRAME

    assert v.errors() == [] and v.foreign_requests() == []
    # The key went only to /v1 on this origin, in the header, never in a URL.
    keyed = [r for r in v.requests if r.headers.get("x-api-key") == frontend.api_key]
    assert {urlsplit(r.url).path for r in keyed} == {
        "/v1/audio/voices", "/v1/audio/capabilities", "/v1/audio/speech"}
    assert not any(frontend.api_key in r.url for r in v.requests)
    speech = next(r for r in keyed if r.url.endswith("/v1/audio/speech"))
    assert speech.post_data_json == {"model": "orpheus", "input": "Hello there <laugh> how are you",
                                     "voice": "leo", "response_format": "pcm", "speed": 1,
                                     "stream": True}


def test_the_key_survives_a_reload_of_the_tab_only(
        frontend: RunningFrontend, visit: Callable[[RunningFrontend], Visit]) -> None:
    v = visit(frontend)
    v.connect(frontend.api_key)
    v.page.wait_for_selector("#key-status[data-state=connected]")
    assert v.page.evaluate("Object.keys(sessionStorage)") == ["orpheus.apiKey"]
    assert v.page.evaluate("localStorage.length") == 0 and v.page.evaluate("document.cookie") == ""
    v.page.reload()
    v.page.wait_for_selector("#key-status[data-state=connected]")  # reconnected by itself
    v.page.click("#forget")
    assert v.page.evaluate("sessionStorage.length") == 0
    assert v.page.is_disabled("#speak")


def test_a_key_over_its_limit_is_told_so_not_that_the_backend_is_starting(
        frontend_factory: Callable[..., RunningFrontend], fake_backend: FakeBackend,
        visit: Callable[[RunningFrontend], Visit]) -> None:
    fe = frontend_factory(ORPHEUS_KEY_REQUESTS_PER_MINUTE="1")
    fake_backend.default = Behavior.stream(frames=4)
    v = visit(fe)
    v.connect(fe.api_key)
    v.page.wait_for_selector("#key-status[data-state=connected]")
    v.page.fill("#text", "Hello")
    v.page.click("#speak")
    v.page.wait_for_selector("#status[data-state=done]", timeout=30_000)
    v.page.click("#speak")
    v.page.wait_for_selector("#error[data-status='429']")
    text = v.page.inner_text("#error")
    assert "over its limit" in text and "cold start" not in text


def test_api_errors_are_shown_as_their_message(
        frontend_factory: Callable[..., RunningFrontend], fake_backend: FakeBackend,
        visit: Callable[[RunningFrontend], Visit], artifacts_dir: Path,
        note_artifact: Callable[[Path], None]) -> None:
    fe = frontend_factory(ORPHEUS_MAX_INPUT_CHARS="40", ORPHEUS_API_TIMEOUT="1")
    v = visit(fe)
    v.connect(fe.api_key)
    v.page.wait_for_selector("#key-status[data-state=connected]")

    # Too long: the count says so before sending, and the server's message is shown after.
    v.page.fill("#text", "x" * 45)
    assert "45 / 40 characters (5 over the limit)" in v.page.inner_text("#count")
    v.page.click("#speak")
    v.page.wait_for_selector("#status[data-state=error]")
    assert "Error 400: 'input' has 45 characters; the limit is 40" in v.page.inner_text("#error")
    assert "Shorten the text to at most 40 characters" in v.page.inner_text("#error")
    assert v.page.is_disabled("#download")

    # A backend that is still starting: the frontend's 503, with what to do about it.
    fake_backend.default = Behavior.status_code(503)
    v.page.fill("#text", "Hello")
    v.page.click("#speak")
    v.page.wait_for_selector("#error[data-status='503']")
    text = v.page.inner_text("#error")
    assert "Error 503: the backend answered 503" in text and "cold start" in text
    assert re.search(r"Request id: [0-9a-f]{32}", text)
    assert v.state() == "error" and v.page.is_disabled("#download")
    assert v.page.is_enabled("#speak")
    screenshot = artifacts_dir / "playground-error.png"
    v.page.screenshot(path=str(screenshot), full_page=True)
    note_artifact(screenshot)
    for message in v.errors():
        assert re.search(r"status of (400|503)", message), v.errors()
