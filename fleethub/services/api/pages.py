"""The HTML of the hub pages (server-rendered, no scripts); every value is escaped where it is rendered."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
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


def home_page(user: str, state: HomeState, server_url: str, xsrf: str, pending_url: str, *,
              with_options: bool = False, change_password: bool = False) -> str:
    """The user's home: the default server's state with start/stop buttons (`with_options`: "Start" leads
    to the spawn form; `change_password`: a link to the password authenticator's change-password page)."""
    if state is HomeState.READY:
        actions = (f'<a href="{escape(server_url, quote=True)}">Open my server</a> '
                   + _button("/hub/stop", "Stop my server", xsrf))
    elif state is HomeState.PENDING:
        actions = f'<a href="{escape(pending_url, quote=True)}">Starting…</a>'
    elif with_options:  # something to choose first: the form (a GET shows it, nothing starts)
        actions = '<a href="/hub/spawn">Start my server</a>'
    else:
        actions = _button("/hub/spawn", "Start my server", xsrf)
    password = '<a href="/hub/change-password">Change password</a> ' if change_password else ""
    return _page("Home", f"<h1>{escape(user)}</h1><p>Your server is {escape(state)}.</p><p>{actions}</p>"
                         f'<p>{password}<a href="/hub/logout">Sign out</a></p>')


@dataclass(frozen=True)
class ProfileChoice:
    """One profile of the spawn form; `fields` is its backend's HTML, escaped by whoever made it."""

    slug: str
    display_name: str
    description: str
    checked: bool
    fields: str = ""


def _profile(choice: ProfileChoice, *, radio: bool) -> str:
    slug = escape(choice.slug, quote=True)
    if radio:
        control = (f'<input type="radio" name="profile" value="{slug}" id="profile-{slug}"'
                   f'{" checked" if choice.checked else ""}> ')
    else:  # the only one: nothing to choose, the slug still names it
        control = f'<input type="hidden" name="profile" value="{slug}">'
    desc = f'<p class="desc">{escape(choice.description)}</p>' if choice.description else ""
    fields = f'<div class="fields">{choice.fields}</div>' if choice.fields else ""
    target = f' for="profile-{slug}"' if radio else ""
    return (f'<label class="profile"{target}>{control}<strong>{escape(choice.display_name)}</strong>'
            f"</label>{desc}{fields}")


def spawn_page(user: str, action: str, xsrf: str, profiles: Sequence[ProfileChoice] = (), error: str = "") -> str:
    """A confirmation before starting (a GET never starts anything: it could come from another site); with
    profiles or backend options to choose, the options form, and `error` when a choice was refused."""
    err = f'<p class="err">{escape(error)}</p>' if error else ""
    title = f"<h1>Start {escape(user)}'s server</h1>{err}"
    if len(profiles) <= 1 and not any(p.fields for p in profiles):
        return _page("Start server", title + _button(action, "Start", xsrf))
    choices = "".join(_profile(p, radio=len(profiles) > 1) for p in profiles)
    form = (
        f'<form method="post" action="{escape(action, quote=True)}" id="spawn_form">'
        f'<input type="hidden" name="_xsrf" value="{escape(xsrf, quote=True)}">'
        f"<fieldset><legend>Server options</legend>{choices}</fieldset>"
        '<input type="submit" value="Start"></form>'
    )
    return _page("Start server", title + form)


def pending_page(message: str, *, refresh: bool = True, progress: Sequence[str] = ()) -> str:
    """Shown while a server starts; reloads every second until it is ready (or shows the failure), with the
    spawn's progress messages so far ("queued", "creating container")."""
    cls = "" if refresh else ' class="err"'
    steps = "".join(f"<li>{escape(step)}</li>" for step in progress)
    log = f'<ol class="progress">{steps}</ol>' if steps else ""
    return _page("Starting", f"<h1>Your server is starting</h1><p{cls}>{escape(message)}</p>{log}"
                             '<p><a href="/hub/home">Home</a></p>', refresh="1" if refresh else "")


def stopped_page(path: str, action: str, xsrf: str) -> str:
    """A request for a server that is not running: offer to start it."""
    return _page(
        "Server not running",
        f"<h1>Server not running</h1><p>The server at {escape(path)} is not running.</p>"
        + _button(action, "Start it", xsrf),
    )


# what the error page (error.html) says for a user server a proxy cannot reach, by status
ERROR_MESSAGES = {
    404: "There is nothing at this address.",
    502: "The server at this address did not answer properly.",
    503: "The server at this address is not answering: it may have stopped or crashed.",
    504: "The server at this address did not answer in time.",
}

