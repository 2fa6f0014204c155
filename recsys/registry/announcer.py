"""Announcing registry changes (``model-events``) through a plugin chosen by URL.

The registry calls an :data:`Announcer` after every change it commits: a version
registered, promoted or rolled back, a rollout plan changed. The core knows no message
bus; the process that has one installs it as an entry point in the
``recsys.announcers`` group, named after its URL scheme (``kafka`` comes with the
stream processors). ``RECSYS_MODEL_EVENTS=kafka://127.0.0.1:9092`` turns it on.

An announcement that cannot be delivered is logged and dropped: the registry's
``state.json`` is the record, and every replica also checks it on a timer, so a
missing event delays a swap by one check, never loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from recsys.errors import ConfigurationError
from recsys.events.schemas import ModelEvent

log = logging.getLogger(__name__)
ENTRY_POINTS = "recsys.announcers"

Announcer = Callable[[ModelEvent], None]
"""Delivers one model event; may raise (the registry logs it and goes on)."""


def announcer(target: str | None) -> Announcer | None:
    """The announcer for ``scheme://address``; ``None`` for an empty target.

    Raises
    ------
    ConfigurationError
        When no installed plugin handles the scheme.
    """
    if not target:
        return None
    scheme, sep, address = target.partition("://")
    if not sep:
        raise ConfigurationError(f"model events target {target!r} is not scheme://address")
    found = [e for e in entry_points(group=ENTRY_POINTS) if e.name == scheme]
    if not found:
        known = sorted(e.name for e in entry_points(group=ENTRY_POINTS))
        raise ConfigurationError(f"no announcer for {scheme}:// (installed: {', '.join(known) or 'none'})")
    factory: Callable[[str], Announcer] = found[0].load()
    return factory(address)


def deliver(announce: Announcer | None, event: ModelEvent) -> None:
    """Announce ``event``, logging (never raising) when it cannot be delivered."""
    if announce is None:
        return
    try:
        announce(event)
    except Exception as exc:  # the change is committed; an announcement is a courtesy
        log.warning("model event %s %s not announced: %s", event.kind.value, event.version, exc)
