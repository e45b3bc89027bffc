"""Recording dead letters (messages a consumer gave up on) in PostgreSQL's `dead_letters` table.

A consumer gives up on a malformed message at once, and on a message whose handler fails with a
non-transient error after a few deliveries (`fleethub.shared.bus.consume`). The row keeps the reason, the
subject and the first bytes of the body; text that PostgreSQL can not hold (a NUL character, a lone
surrogate) is escaped, so that recording can not fail on the very input that made the message poison.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.bus import DeadLetter, DeadLetterSink
from fleethub.shared.db.models import DeadLetterRow

Also = Callable[[AsyncSession, DeadLetter], Awaitable[None]]
"""What else giving up on a letter means, done in the same transaction (e.g. marking its spawn failed)."""


def storable_text(text: str) -> str:
    """`text` with what PostgreSQL's text can not hold escaped: NUL characters and lone surrogates."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


async def record(session: AsyncSession, letter: DeadLetter) -> None:
    """Insert `letter` in the caller's transaction (once per message and consumer)."""
    stmt = insert(DeadLetterRow).values(
        consumer=letter.durable[:64], stream=letter.stream[:64], stream_seq=letter.stream_seq,
        subject=storable_text(letter.subject), num_delivered=letter.num_delivered,
        reason=storable_text(letter.reason), payload=letter.payload, size=letter.size,
    ).on_conflict_do_nothing(constraint="uq_dead_letters_message")
    await session.execute(stmt)


def sink(sessions: async_sessionmaker[AsyncSession], also: Also | None = None) -> DeadLetterSink:
    """A consumer's dead-letter sink: `record` the letter, and do `also`, in one transaction."""

    async def dead_letter(letter: DeadLetter) -> None:
        async with sessions() as session, session.begin():
            await record(session, letter)
            if also is not None:
                await also(session, letter)

    return dead_letter
