"""The HTML of the auth pages; every value is escaped."""

from __future__ import annotations

from html import escape

_STYLE = "body{font-family:system-ui,sans-serif;max-width:28em;margin:4em auto}label,input{display:block;width:100%;margin:.3em 0}.err{color:#b00}"


def login_page(xsrf: str, next_url: str, error: str = "", username: str = "") -> str:
    """The login form."""
    err = f'<p class="err">{escape(error)}</p>' if error else ""
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Sign in - fleethub</title><style>{_STYLE}</style></head>"
        f"<body><h1>Sign in</h1>{err}"
        f'<form method="post" action="/hub/login?next={escape(next_url, quote=True)}">'
        f'<input type="hidden" name="_xsrf" value="{escape(xsrf, quote=True)}">'
        f'<label for="username">Username</label><input id="username" name="username" autocomplete="username" '
        f'autofocus required value="{escape(username, quote=True)}">'
        f'<label for="password">Password</label><input id="password" name="password" type="password" '
        f'autocomplete="current-password" required>'
        f'<input type="submit" value="Sign in"></form></body></html>'
    )
