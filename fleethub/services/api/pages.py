"""What the hub pages say (their markup is in fleethub/templates/): the home state words and the error texts."""

from __future__ import annotations

import enum

from fleethub.shared.lifecycle import ServerStatus


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

