"""The product's shared words: what a frame gets, what a zone does, how pixels are hidden, the
household mode.

The homeowner's config and the pipeline both speak these words, so they live on the ground floor:
`agent.config` validates them and `agent.core` acts on them, and neither imports the other for them.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What happens to a frame. Ordered by strictness: PASS < MASK < WITHHOLD."""

    PASS = "pass"
    MASK = "mask"
    WITHHOLD = "withhold"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    def stricter(self, other: Action) -> Action:
        return self if self.rank >= other.rank else other


_ACTION_RANK = {Action.PASS: 0, Action.MASK: 1, Action.WITHHOLD: 2}


class ZoneAction(StrEnum):
    """What a privacy zone does: mask its pixels, or withhold whole frames while it is occupied."""

    MASK = "mask"
    WITHHOLD = "withhold"


class Style(StrEnum):
    """How masked pixels are replaced. `solid` (black) is the default: blur can be partly reversed."""

    SOLID = "solid"
    PIXELATE = "pixelate"
    BLUR = "blur"


class Mode(StrEnum):
    """Household mode. `privacy` withholds every frame of every camera."""

    HOME = "home"
    AWAY = "away"
    PRIVACY = "privacy"


#: Who may ask for access to clips. The owners give a requester its role when they enroll it in
#: the roster; a request's own claim is only shown, labelled unverified.
REQUESTER_ROLES: tuple[str, ...] = ("vendor", "contractor", "police", "household")
