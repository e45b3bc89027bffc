"""The HTML of the auth pages; every value is escaped where it is rendered."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

EXPIRED_FORM = "Your session expired or the form was not sent from this site; please try again."
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


def login_page(xsrf: str, next_url: str, *, error: str = "", username: str = "", signup: bool = False,
               login_service: str = "") -> str:
    """The login form, or (`login_service` set: a redirect login) the "Sign in with …" button; `next_url` must
    already be validated (it is also escaped here)."""
    query = f"?next={quote(next_url, safe='/')}"
    if login_service:
        href = escape(f"/hub/oauth_login{query}", quote=True)
        return _page("Sign in", f"<h1>Sign in</h1>{_error(error)}"
                     f'<p><a class="button" id="login-button" href="{href}">'
                     f"Sign in with {escape(login_service)}</a></p>")
    link = '<p><a href="/hub/signup">Create an account</a></p>' if signup else ""
    return _page("Sign in", f"<h1>Sign in</h1>{_error(error)}"
                 f"{_form(f'/hub/login{query}', xsrf, username, 'Sign in', 'current-password')}{link}")


def signup_page(xsrf: str, *, error: str = "", username: str = "", done: str = "", pending: bool = False) -> str:
    """The sign-up form, or its confirmation (`pending`: the account waits for an admin's approval)."""
    if done and pending:
        return _page("Account requested", f"<h1>Account requested</h1><p>The account {escape(done)} waits for an "
                     "administrator's approval; you can sign in once it is approved.</p>")
    if done:
        return _page("Account created", f"<h1>Account created</h1><p>{escape(done)} can now "
                     '<a href="/hub/login">sign in</a>.</p>')
    return _page("Create an account", f"<h1>Create an account</h1>{_error(error)}"
                 f"{_form('/hub/signup', xsrf, username, 'Create account', 'new-password')}")


def _password_field(field: str, label: str, autocomplete: str) -> str:
    return (f'<label for="{field}">{escape(label)}</label><input id="{field}" name="{field}" type="password" '
            f'autocomplete="{autocomplete}" required maxlength="1000">')


def change_password_page(xsrf: str, username: str, *, error: str = "", done: bool = False) -> str:
    """The logged-in user's change-password form (the current password, the new one twice), or its confirmation."""
    if done:
        return _page("Password changed", "<h1>Password changed</h1><p>Your password was changed; your other "
                     'sessions were signed out.</p><p><a href="/hub/home">Home</a></p>')
    return _page("Change password", f"<h1>Change password</h1><p>Signed in as <b>{escape(username)}</b></p>"
                 f'{_error(error)}<form method="post" action="/hub/change-password">'
                 f'<input type="hidden" name="_xsrf" value="{escape(xsrf, quote=True)}">'
                 f"{_password_field('old_password', 'Current password', 'current-password')}"
                 f"{_password_field('password', 'New password', 'new-password')}"
                 f"{_password_field('password_again', 'New password again', 'new-password')}"
                 '<input type="submit" value="Change password"></form>'
                 '<p><a href="/hub/home">Cancel</a></p>')


def error_page(status: int, message: str, *, retry: bool = False) -> str:
    """An error of the auth pages (an OAuth request that can not be honoured, a refused login); `retry`:
    offer to sign in again (as another user)."""
    link = '<a href="/hub/login">Sign in again</a>' if retry else '<a href="/hub/home">Home</a>'
    return _page(str(status), f"<h1>{status}</h1>{_error(message)}<p>{link}</p>")


def consent_page(xsrf: str, what: str, fields: dict[str, str]) -> str:
    """Asks the user before identifying them to `what` (an OAuth client that is not their own server);
    the form posts the authorization request back with the XSRF token."""
    hidden = "".join(f'<input type="hidden" name="{escape(k, quote=True)}" value="{escape(v, quote=True)}">'
                     for k, v in {**fields, "_xsrf": xsrf}.items())
    return _page("Authorize access", f"<h1>Authorize access</h1><p><b>{escape(what)}</b> asks to know who you "
                 f'are, and to let you use it.</p><form method="post" action="/hub/api/oauth2/authorize">{hidden}'
                 '<input type="submit" value="Authorize"></form><p><a href="/hub/home">Cancel</a></p>')
