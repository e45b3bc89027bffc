"""The HTML of the hub pages (server-rendered, no scripts); every value is escaped where it is rendered."""

from __future__ import annotations

import enum
from html import escape

from fleethub.shared.lifecycle import ServerStatus

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto}form{display:inline}.err{color:#b00}"
          "fieldset{margin:0 0 1em}.profile{display:block;margin:.5em 0}.desc{color:#555;margin:0 0 0 1.6em}"
          ".fields{margin:.3em 0 .8em 1.6em}")


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




# what the error page (error.html) says for a user server a proxy cannot reach, by status
ERROR_MESSAGES = {
    404: "There is nothing at this address.",
    502: "The server at this address did not answer properly.",
    503: "The server at this address is not answering: it may have stopped or crashed.",
    504: "The server at this address did not answer in time.",
}

