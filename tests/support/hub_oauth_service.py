"""A hub service written the way JupyterHub documents it: tornado + `jupyterhub.services.auth.HubOAuth`.

It reads the environment the hub gives a service (`JUPYTERHUB_API_URL`, `JUPYTERHUB_API_TOKEN`,
`JUPYTERHUB_CLIENT_ID`, `JUPYTERHUB_SERVICE_PREFIX`, `JUPYTERHUB_SERVICE_URL`, …), sends browsers
through the hub's OAuth flow, and answers its prefix with the hub's model of the logged-in user.
"""

from __future__ import annotations

import json
import os
import secrets
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import ioloop, web


class WhoAmI(HubOAuthenticated, web.RequestHandler):
    @web.authenticated
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(self.get_current_user()))


def main() -> None:
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = web.Application(
        [(prefix, WhoAmI), (prefix + "oauth_callback", HubOAuthCallbackHandler)],
        cookie_secret=secrets.token_bytes(32),
    )
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
