"""The web chat page in a real headless Chromium (Debian `chromium`, driven by playwright)."""

import os
import shutil
import time

import pytest
from playwright.sync_api import expect

from hessgpt.events import Event
from hessgpt.serve.backends import ScriptedBackend

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("HESSGPT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

XSS_TEXT = ('Watch out: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> '
            '<a href="javascript:window.__xss=3">link</a> <svg onload="window.__xss=4"></svg>\n\n'
            "The **answer** is below.\n")
XSS_ARTIFACT = "<h1 id='art'>Preview</h1><script>parent.__xss=5; window.top.__xss=5</script><img src=x onerror='parent.__xss=6'>"


def xss_script(messages, params, tools):
    return [
        Event("text", "Let me compute it.\n\n"),
        Event("code", "print(6 * 7)", data={"lang": "python"}),
        Event("refined_code", "print(6 * 7)\n", data={"lang": "python"}),
        Event("result", '42\n<img src=x onerror="window.__xss=7">', data={"status": "ok", "duration_ms": 9}),
        Event("text", XSS_TEXT),
        Event("artifact", XSS_ARTIFACT, data={"lang": "html"}),
        Event("text", "\n\n```python\nprint('hello')\n```\n\nFinal: **42**."),
    ]


@pytest.fixture
def page():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests need Debian chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1280, "height": 860})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.page_errors = errors
        yield pg
        browser.close()


def poll(page, cond, seconds: float) -> None:
    """Wait (letting the page run) until cond() holds on the Python side, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        page.wait_for_timeout(50)


def send(page, text):
    page.fill("#input", text)
    page.keyboard.press("Enter")


def test_chat_page_streams_shows_tool_steps_and_runs_no_model_html(serve, page):
    backend = ScriptedBackend(xss_script, model_id="tiny", token_delay=0.01)
    srv = serve(backend)
    page.goto(srv.url + "/")
    expect(page.locator("#model-name")).to_have_text("tiny", timeout=15000)
    send(page, "What is 6 * 7?")
    # streamed answer: the stop button shows while generating, then the final text lands
    page.wait_for_selector("#stop:not([hidden])", timeout=5000)
    page.wait_for_selector(".msg.assistant .md strong:text('42')", timeout=15000)
    page.wait_for_selector("#send:not([hidden])")
    assert page.inner_text(".msg.user .body") == "What is 6 * 7?"
    # tool steps: code, refined code, result with its status
    assert "print(6 * 7)" in page.inner_text(".step.code pre")
    assert "print(6 * 7)" in page.inner_text(".step.refined_code pre")
    result = page.inner_text(".step.result")
    assert "42" in result and "ok" in result and "9 ms" in result
    # the server saw the conversation the page sent
    assert backend.calls[0]["messages"][-1] == {"role": "user", "content": "What is 6 * 7?"}
    # highlighted code block from Markdown
    assert page.locator(".md pre code.hljs").count() >= 1
    # artifact preview: sandboxed srcdoc iframe without scripts
    frame = page.locator(".step.artifact iframe")
    assert frame.get_attribute("sandbox") == ""
    assert "Preview" in page.frame_locator(".step.artifact iframe").locator("#art").inner_text()
    # XSS: nothing the model printed ran, and the dangerous attributes are gone from the DOM
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator(".md img[src='x']").count() == 1  # the Markdown HTML was kept, minus its handler
    assert page.locator("#messages script").count() == 0
    assert page.locator("#messages [onerror], #messages [onload]").count() == 0
    assert page.locator("#messages a[href^='javascript']").count() == 0
    assert "<img" in page.inner_text(".step.result pre")  # the result is shown as text, not HTML
    assert page.page_errors == []


def test_demo_conversation_screenshot(serve, page):
    srv = serve(ScriptedBackend(model_id="hessgpt-demo"))  # the `hessgpt serve --demo` script
    page.goto(srv.url + "/")
    send(page, "Quelle est la racine carrée de 144 ?")
    page.wait_for_selector(".md pre code.hljs", timeout=15000)
    page.wait_for_selector("#send:not([hidden])")
    assert page.locator(".step").count() == 4  # code, refined code, result, artifact
    assert page.page_errors == []
    page.screenshot(path=os.environ.get("HESSGPT_SCREENSHOT", "/tmp/hessgpt_page.png"))


def test_conversation_persists_regenerate_new_chat_and_language(serve, page):
    backend = ScriptedBackend(lambda m, p, t: [Event("text", f"Answer number {len(m)} here.")], model_id="tiny")
    srv = serve(backend)
    page.goto(srv.url + "/")
    send(page, "first question")
    page.wait_for_selector(".msg.assistant .md:has-text('Answer number 1 here.')")
    page.wait_for_selector("#send:not([hidden])")
    send(page, "second question")
    page.wait_for_selector(".msg.assistant .md:has-text('Answer number 3 here.')")
    page.wait_for_selector("#send:not([hidden])")
    # the second request carried the whole conversation
    assert [m["role"] for m in backend.calls[1]["messages"]] == ["user", "assistant", "user"]
    # kept across a reload (localStorage)
    page.reload()
    page.wait_for_selector(".msg.assistant .md:has-text('Answer number 3 here.')")
    assert page.locator(".msg").count() == 4
    assert page.locator(".conv").count() == 1
    # regenerate replaces the last answer
    page.click(".regenerate")
    poll(page, lambda: len(backend.calls) >= 3, 15)
    # (expect polls from the driver: the page's CSP forbids the eval that wait_for_function needs)
    expect(page.locator("#send:not([hidden])")).to_have_count(1, timeout=15000)
    expect(page.locator(".msg")).to_have_count(4, timeout=15000)
    assert len(backend.calls) == 3 and len(backend.calls[2]["messages"]) == 3
    # system prompt and sampling settings reach the API
    page.click("#open-settings")
    page.fill("#set-system", "Réponds en français.")
    page.fill("#set-maxtok", "77")
    page.click("#settings button[value=close]")
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    send(page, "third")
    page.wait_for_selector(".msg.assistant .md:has-text('Answer number 2 here.')")
    sent = backend.calls[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Réponds en français."}
    assert sent["params"].max_new_tokens == 77
    assert page.locator(".conv").count() == 2
    # French UI
    page.click("#lang-fr")
    assert page.inner_text("#new-chat") == "Nouvelle discussion"
    assert page.get_attribute("#input", "placeholder") == "Écrire à HessGPT…"
    page.reload()
    assert page.inner_text("#new-chat") == "Nouvelle discussion"
    page.click("#lang-en")
    assert page.inner_text("#new-chat") == "New chat"


def test_stop_button_cancels_generation(serve, page):
    backend = ScriptedBackend([Event("text", "word " * 3000)], model_id="tiny", token_delay=0.01)
    srv = serve(backend)
    page.goto(srv.url + "/")
    send(page, "talk a lot")
    page.wait_for_selector(".msg.assistant .md")
    page.click("#stop")
    page.wait_for_selector("#send:not([hidden])")
    expect(page.locator(".msg.assistant .msg-foot")).to_contain_text("stopped", timeout=15000)
    poll(page, lambda: backend.cancelled > 0, 5)
    assert backend.cancelled == 1  # the server cancelled the generation when the page let go


def test_page_history_and_sampling_defaults(serve, page):
    """No sampling sent unless set (the checkpoint's generation_config applies); an earlier tool turn goes back
    as one plain assistant message (text before + blank line + text after), as the eval replays it."""

    def script(messages, params, tools):
        if len(messages) == 1:
            return [Event("text", "Je lance un petit script."), Event("code", "print(10 * 10)", data={"lang": "python"}),
                    Event("result", "100\n", data={"status": "ok"}), Event("text", "\n\nRésultat : 100.")]
        return [Event("text", "Rome.")]

    backend = ScriptedBackend(script, model_id="tiny", generation_config={"temperature": 0.0, "max_new_tokens": 33})
    srv = serve(backend)
    page.goto(srv.url + "/")
    send(page, "Calcule 10 * 10")
    page.wait_for_selector(".msg.assistant .md:has-text('Résultat : 100.')")
    page.wait_for_selector("#send:not([hidden])")
    p = backend.calls[0]["params"]
    assert (p.temperature, p.top_p, p.max_new_tokens) == (0.0, 1.0, 33)
    send(page, "Et la capitale de l'Italie ?")
    page.wait_for_selector(".msg.assistant .md:has-text('Rome.')")
    assert backend.calls[1]["messages"][1] == {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 100."}
    assert page.page_errors == []
