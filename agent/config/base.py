"""The base of every config model, and the shape of an id."""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
