"""The HTML of the auth pages; every value is escaped where it is rendered."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28em;margin:4em auto}"
    "label,input{display:block;width:100%;margin:.3em 0}.err{color:#b00}"
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)} - fleethub</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _form(action: str, xsrf: str, username: str, submit: str, autocomplete: str) -> str:
    return (
        f'<form method="post" action="{escape(action, quote=True)}">'
        f'<input type="hidden" name="_xsrf" value="{escape(xsrf, quote=True)}">'
        f'<label for="username">Username</label><input id="username" name="username" autocomplete="username" '
        f'autofocus required maxlength="255" value="{escape(username, quote=True)}">'
        f'<label for="password">Password</label><input id="password" name="password" type="password" '
        f'autocomplete="{autocomplete}" required>'
        f'<input type="submit" value="{escape(submit, quote=True)}"></form>'
    )


def _error(error: str) -> str:
    return f'<p class="err">{escape(error)}</p>' if error else ""


def login_page(xsrf: str, next_url: str, *, error: str = "", username: str = "", signup: bool = False) -> str:
    """The login form; `next_url` must already be validated (it is also escaped here)."""
    action = f"/hub/login?next={quote(next_url, safe='/')}"
    link = '<p><a href="/hub/signup">Create an account</a></p>' if signup else ""
    return _page("Sign in", f"<h1>Sign in</h1>{_error(error)}"
                 f"{_form(action, xsrf, username, 'Sign in', 'current-password')}{link}")


def signup_page(xsrf: str, *, error: str = "", username: str = "", done: str = "") -> str:
    """The sign-up form (open_signup), or its confirmation."""
    if done:
        return _page("Account created", f"<h1>Account created</h1><p>{escape(done)} can now "
                     '<a href="/hub/login">sign in</a>.</p>')
    return _page("Create an account", f"<h1>Create an account</h1>{_error(error)}"
                 f"{_form('/hub/signup', xsrf, username, 'Create account', 'new-password')}")
