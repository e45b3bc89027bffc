"""The HTML of the hub pages (server-rendered, no scripts); every value is escaped where it is rendered."""

from __future__ import annotations

import enum
from html import escape

from fleethub.shared.lifecycle import ServerStatus

_STYLE = "body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto}form{display:inline}.err{color:#b00}"


def _page(title: str, body: str, refresh: str = "") -> str:
    meta = f'<meta http-equiv="refresh" content="{escape(refresh, quote=True)}">' if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset=utf-8>{meta}<title>{escape(title)} - fleethub</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _button(action: str, label: str, xsrf: str) -> str:
    return (
        f'<form method="post" action="{escape(action, quote=True)}">'
        f'<input type="hidden" name="_xsrf" value="{escape(xsrf, quote=True)}">'
        f'<input type="submit" value="{escape(label, quote=True)}"></form>'
    )


class HomeState(enum.StrEnum):
    """What the home page says of the default server; its words are the lifecycle's."""

    READY = "ready"
    PENDING = ServerStatus.PENDING.value  # starting or stopping
    STOPPED = ServerStatus.STOPPED.value


def home_page(user: str, state: HomeState, server_url: str, xsrf: str, pending_url: str) -> str:
    """The user's home: the default server's state with start/stop buttons."""
    if state is HomeState.READY:
        actions = (f'<a href="{escape(server_url, quote=True)}">Open my server</a> '
                   + _button("/hub/stop", "Stop my server", xsrf))
    elif state is HomeState.PENDING:
        actions = f'<a href="{escape(pending_url, quote=True)}">Starting…</a>'
    else:
        actions = _button("/hub/spawn", "Start my server", xsrf)
    return _page("Home", f"<h1>{escape(user)}</h1><p>Your server is {escape(state)}.</p><p>{actions}</p>"
                         '<p><a href="/hub/logout">Sign out</a></p>')


def spawn_page(user: str, action: str, xsrf: str) -> str:
    """A confirmation before starting (a GET never starts anything: it could come from another site)."""
    return _page("Start server", f"<h1>Start {escape(user)}'s server</h1>" + _button(action, "Start", xsrf))


def pending_page(message: str, *, refresh: bool = True) -> str:
    """Shown while a server starts; reloads every second until it is ready (or shows the failure)."""
    cls = "" if refresh else ' class="err"'
    return _page("Starting", f"<h1>Your server is starting</h1><p{cls}>{escape(message)}</p>"
                             '<p><a href="/hub/home">Home</a></p>', refresh="1" if refresh else "")


def stopped_page(path: str, action: str, xsrf: str) -> str:
    """A request for a server that is not running: offer to start it."""
    return _page(
        "Server not running",
        f"<h1>Server not running</h1><p>The server at {escape(path)} is not running.</p>"
        + _button(action, "Start it", xsrf),
    )


ERROR_MESSAGES = {
    404: "There is nothing at this address.",
    502: "The server at this address did not answer properly.",
    503: "The server at this address is not answering: it may have stopped or crashed.",
    504: "The server at this address did not answer in time.",
}


def error_page(status: int, url: str) -> str:
    """The page the proxy shows for a user server it cannot reach (configurable-http-proxy's error target)."""
    message = ERROR_MESSAGES.get(status, "Something went wrong.")
    where = f" <code>{escape(url)}</code>" if url else ""
    return _page(f"{status}", f"<h1>{status}</h1><p class=err>{escape(message)}</p>"
                              f"<p>Address:{where}</p><p><a href=\"/hub/home\">Go to your hub home</a> to start "
                              "or restart your server.</p>")
