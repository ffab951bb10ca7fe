"""Field rules shared by every input model, and `describe`: a validation error as one line."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from speedq import config
from speedq.keys import JOB_ID_RE

# Field rules. Each raises ValueError with the rule in words, so one line can tell the user.

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MODEL_RE = re.compile(r"d(\d+)")
MIN_DEPTH, MAX_DEPTH = 2, 64
MAX_REF_LEN = 200
_REF_FORBIDDEN = set("~^:?*[\\")


def _slug(value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        raise ValueError(
            "must be a slug: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


def _model(value: str) -> str:
    match = MODEL_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not MIN_DEPTH <= int(match.group(1)) <= MAX_DEPTH:
        raise ValueError(f"must be d<depth> with depth {MIN_DEPTH} to {MAX_DEPTH}, e.g. d12")
    return f"d{int(match.group(1))}"


def _git_ref(value: str) -> str:
    """git's own ref-name rules (git check-ref-format), for a branch, tag or commit."""
    problems = []
    if not value:
        problems.append("must not be empty")
    if len(value) > MAX_REF_LEN:
        problems.append(f"must be at most {MAX_REF_LEN} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problems.append("must not contain whitespace or control characters")
    if ".." in value:
        problems.append("must not contain '..'")
    if value.startswith("-"):
        problems.append("must not start with '-'")
    if _REF_FORBIDDEN & set(value):
        problems.append("must not contain any of ~ ^ : ? * [ \\")
    if "@{" in value or value == "@":
        problems.append("must not be '@' or contain '@{'")
    if value.endswith((".", "/", ".lock")) or value.startswith("/") or "//" in value:
        problems.append("must not start or end with '/', end with '.' or '.lock', or hold '//'")
    if any(part.startswith(".") for part in value.split("/")):
        problems.append("no path component may start with '.'")
    if problems:
        raise ValueError(f"not a valid git ref: {problems[0]}")
    return value


def _has_surrogate(value: object) -> bool:
    """A lone surrogate is how Python carries a byte that is not UTF-8 (argv, `\\udcff` in JSON);
    it cannot be stored or printed as text, so input holding one is refused at the door."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_surrogate(v) for v in value)
    return False


# The validation context of a record read back from Redis: a limit a submit must meet, added
# after the record was stored, does not make it unreadable (its types and shape are checked as
# ever). Without it, input is new and held to every limit.
STORED = {"stored": True}


def fresh(info: ValidationInfo) -> bool:
    """Validating new input, not a record read back (STORED)."""
    return not (isinstance(info.context, dict) and info.context.get("stored"))


class Schema(BaseModel):
    """Base of every model here: its validator and serializer are built on first use, not on
    import, so a command pays only for the models it touches (`speedq status` builds a record's,
    not the API's or the dashboard's; an idle worker holds none it never used; issue 11)."""

    model_config = ConfigDict(defer_build=True)


class UserInput(Schema):
    """Base of every model a user fills in (CLI options, API bodies and queries): each field's
    text, at any depth, must be valid Unicode before any other rule looks at it."""

    @field_validator("*", mode="before")
    @classmethod
    def _valid_text(cls, value: object) -> object:
        if _has_surrogate(value):
            raise ValueError("must be valid UTF-8 text (it holds an undecodable byte)")
        return value


class GpuSpec(Schema):
    """`TYPE[:COUNT]`, e.g. H100:8."""

    model_config = ConfigDict(frozen=True)
    type: str
    count: int

    def __str__(self) -> str:
        return f"{self.type}:{self.count}"


def _gpu(value: object) -> object:
    """`TYPE[:COUNT]` as text, or the same as an object (the API's JSON): one rule for both, so
    an object cannot carry a count or type the text form refuses."""
    if isinstance(value, GpuSpec):
        return value
    if isinstance(value, dict):
        if set(value) - {"type", "count"} or not isinstance(value.get("type"), str):
            raise ValueError("must be TYPE[:COUNT] or {\"type\": TYPE, \"count\": COUNT}")
        count = value.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"GPU count must be a whole number from 1 to {config.MAX_GPU_COUNT}")
        value = f"{value['type']}:{count}"
    if not isinstance(value, str):
        raise ValueError("must be TYPE[:COUNT]")
    kind, colon, count = value.partition(":")
    known = {t.upper(): t for t in config.GPU_TYPES}
    if kind.upper() not in known:
        raise ValueError(f"must be TYPE[:COUNT] with TYPE one of {', '.join(config.GPU_TYPES)}")
    # A colon says a count follows: `H100:` is a count left out by mistake, not a default of 1
    if colon and not (count.isascii() and count.isdigit() and len(count) <= 3
                      and 1 <= int(count) <= config.MAX_GPU_COUNT):
        raise ValueError(f"GPU count must be a whole number from 1 to {config.MAX_GPU_COUNT}")
    return {"type": known[kind.upper()], "count": int(count or 1)}


_DURATION_RE = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object) -> object:
    """Seconds, or a number with s/m/h/d (`90m`, `24h`)."""
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip().lower())
        if not match:
            raise ValueError("must be a duration like 3600, 90m or 24h")
        return int(match.group(1)) * _UNIT_S[match.group(2)]
    return value


Slug = Annotated[str, AfterValidator(_slug)]
ModelName = Annotated[str, AfterValidator(_model)]
GitRef = Annotated[str, AfterValidator(_git_ref)]
Gpu = Annotated[GpuSpec, BeforeValidator(_gpu)]
Priority = config.Priority
BackendName = config.BackendName
Mode = Literal["smoke", "full"]
Seconds = Annotated[
    int, BeforeValidator(_duration), Field(ge=1, le=config.MAX_ATTEMPT_TIMEOUT_S)
]


def depth_of(model: str) -> int:
    return int(model[1:])


TrainArgValue = int | float | bool | str
MAX_TRAIN_ARGS = 64


def train_args_mapping(value: object) -> dict[object, object]:
    """base_train options as a mapping; `KEY=VALUE` strings (the CLI's) are split here."""
    if isinstance(value, (list, tuple)):
        pairs: dict[object, object] = {}
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise ValueError("give each train arg as KEY=VALUE (or a bare flag like fp8)")
            key, sep, val = item.strip().partition("=")
            pairs[key.strip()] = val if sep else True
        value = pairs
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of base_train option to value")
    if len(value) > MAX_TRAIN_ARGS:
        raise ValueError(f"at most {MAX_TRAIN_ARGS} train args")
    return value


TrainArgs = Annotated[dict[str, TrainArgValue], BeforeValidator(train_args_mapping)]




def _job_id(value: str) -> str:
    if not JOB_ID_RE.fullmatch(value):
        raise ValueError("job ids look like sq-42")
    return value


# The pattern is published in the JSON schema too, so API clients (and the fuzzer) see the rule.
JobId = Annotated[str, AfterValidator(_job_id), WithJsonSchema({"type": "string", "pattern": f"^{JOB_ID_RE.pattern}$"})]


# ---------------------------------------------------------------------------------------------


# Where a web framework says the value came from; the user named only the field.
_TRANSPORT_LOCS = {"body", "query", "path", "header"}


def _shown(value: object) -> str:
    """The refused value as the line quotes it: short, and never a number too long to print."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    if isinstance(value, int) and value.bit_length() > 64:
        return f" (a number of about {int(value.bit_length() * 0.30103) + 1} digits)"
    text = repr(value)
    return f" {text[:77]}..." if len(text) > 80 else f" {text}"


def describe(exc: ValidationError | list) -> str:  # type: ignore[type-arg]
    """One line for the user: the first invalid field, the value and the rule.

    Takes pydantic's exception or its list of errors (FastAPI hands the API the list)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else list(exc)
    err = errors[0]
    loc = [p for p in err["loc"] if not isinstance(p, int)]
    if loc and loc[0] in _TRANSPORT_LOCS:
        loc = loc[1:]
    field = "-".join(str(p) for p in loc).replace("_", "-") or "value"
    field = field.split("-function-")[0].replace("-[key]", "")
    msg = err["msg"].removeprefix("Value error, ")
    shown = _shown(err.get("input"))
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    line = f"invalid {field}{shown}: {msg}{more}"
    # A field name or message may echo an undecodable byte: escape it so the line can be printed
    # and sent as JSON.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")
