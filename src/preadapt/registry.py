"""Small registries that map a config's ``kind`` to a component factory.

Nothing is ever imported from a dotted path named in a config: a component is usable as
``kind: name`` only once it is registered here (built-ins at import, users' with
``register_world/encoder/objective``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:  # annotations only: worlds sit above the registry
    from preadapt.worlds.base import InputSpec


class ComponentConfig(BaseModel):
    """Base of every component's config: a ``kind`` and the component's own fields.

    Optional hooks, each read by one family and with a default that fits every other component, so
    a component that does not override them (a user's, a family that has no use for them) just
    works. Two let a run's validation check that encoder and world fit each other before anything is
    built (``Config`` in ``experiment/config.py``); their defaults check nothing:

    - ``input_spec`` (world configs): the ``InputSpec`` of the inputs the world will sample, derived
      from the config alone (no data loaded); default None, unknown.
    - ``check_input(spec)`` (encoder configs): raise ``ValueError`` if the encoder cannot take such
      inputs, with one line that starts with the field at fault (``vocab: got 50; allowed: ≥ 100 ...``;
      validation prefixes ``encoder.``); default: accept any input.

    One tells validation where a run's downstream tasks come from when there is no ``task`` section:

    - ``label_classes`` (world configs): |C| of the world's own task world (``worlds.base.TaskedWorld``,
      e.g. a hypercube's 2^k first-k patterns), against which ``evaluate.task_classes`` and ``top_r``
      are fitted and checked; default None, the tasks are drawn over the world's latent classes.

    One tells the run which CURL loss of [Arora19] the objective trains with:

    - ``curl_loss_name`` (objective configs): ``"hinge"`` or ``"logistic"``, the ℓ of an objective
      that is the CURL loss (then L_un is measured with the same ℓ, and Theorems 4.1 and 4.5 may
      apply); default None, not the CURL loss (L_un is measured with the logistic ℓ).

    >>> box = ComponentConfig(kind="box")
    >>> box.input_spec is None, box.label_classes is None, box.curl_loss_name is None
    (True, True, True)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str

    @property
    def input_spec(self) -> InputSpec | None:
        return None

    def check_input(self, spec: InputSpec) -> None:
        return None

    @property
    def label_classes(self) -> int | None:
        return None

    @property
    def curl_loss_name(self) -> str | None:
        return None


class OpenComponentConfig(ComponentConfig):
    """Config of a user component registered without a params model: any extra field passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class Entry:
    factory: Callable[..., Any]
    params: type[ComponentConfig]
    user: bool = False


class Registry:
    """Components of one family (worlds, encoders, objectives), keyed by ``kind``.

    >>> from pydantic import BaseModel
    >>> reg = Registry("widget")
    >>> reg.register("box", lambda cfg: cfg.kind)
    >>> reg.parse({"kind": "box", "size": 3}).kind
    'box'
    >>> reg.names()
    ['box']
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, factory: Callable[..., Any], params: type[ComponentConfig] | None = None,
                 user: bool = False) -> None:
        """Add a kind; ``user`` marks one registered at run time by a user's code (the public
        ``register_*`` functions), which processes started elsewhere (a pool, Ray) do not know."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.family} name must be a non-empty string; got {name!r}")
        self._entries[name] = Entry(factory, params or OpenComponentConfig, user)

    def user_names(self) -> list[str]:
        return sorted(name for name, entry in self._entries.items() if entry.user)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, kind: str) -> Entry:
        if kind not in self._entries:
            raise KeyError(f"unknown {self.family} kind {kind!r}; allowed: {', '.join(self.names())}")
        return self._entries[kind]

    def parse(self, data: dict[str, Any] | ComponentConfig) -> ComponentConfig:
        """Validate a component config with the params model registered for its kind."""
        if isinstance(data, ComponentConfig):
            data = data.model_dump()
        return self.entry(data.get("kind")).params.model_validate(data)

    def build(self, config: ComponentConfig, *args: Any, **kwargs: Any) -> Any:
        return self.entry(config.kind).factory(config, *args, **kwargs)


def error_location(parts) -> str:
    """A pydantic location as a dotted field path, list positions in brackets: ``evaluate.adapters[1].lrs``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_validation_error(error: ValidationError, prefix: str = "",
                              suggest: Callable[[str, tuple], str | None] | None = None) -> str:
    """The first error of a pydantic ValidationError as one line: the field (under ``prefix``), the value
    given, what is allowed. ``suggest(unknown, parents)``: a known field close to an unknown one, for the
    hint (``experiment.config.format_validation_error`` passes the config's; a task's steps, their own).

    >>> from pydantic import Field
    >>> class Box(BaseModel):
    ...     size: int = Field(..., ge=1)
    >>> try:
    ...     Box(size=0)
    ... except ValidationError as error:
    ...     print(describe_validation_error(error, prefix="world"))
    world.size: got 0; input should be greater than or equal to 1
    """
    first = error.errors(include_url=False)[0]
    message = first["msg"]
    loc = error_location(((prefix,) if prefix else ()) + tuple(first["loc"]))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
        if not first["loc"]:  # our own model-level messages already name the field
            return message if not prefix else f"{prefix}.{message}"
        if message.startswith((".", ":")):  # a field validator's message that continues the location
            return f"{loc}{message}"
    if first["type"] == "extra_forbidden":
        parents, unknown = tuple(first["loc"][:-1]), first["loc"][-1]
        close = suggest(str(unknown), parents) if suggest is not None else None
        hint = f"; did you mean `{close}`?" if close else ""
        return f"{loc}: unknown field{hint} (see docs/config.md for the allowed fields)"
    if first["type"] == "missing":
        return f"{loc}: missing; this field is required"
    return f"{loc}: got {first['input']!r}; {message[0].lower() + message[1:]}"
