"""The one interface every reward method implements, and the registry the trainer asks by name.

The trainer never branches on the method's name: it reads the class flags (``needs_rephrased``,
``needs_teacher``, ``needs_token_stats``) to know what to prepare, builds ``RolloutGroup``s, and calls
``score``. All method logic lives in the small subclasses registered here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from corewarding.data.question import Question
from corewarding.errors import ConfigError
from corewarding.rollout.types import Rollout

VIEWS = ("original", "rephrased")


@dataclass
class RolloutGroup:
    """The G rollouts of one question in one view (the unit that GRPO normalizes over).

    ``question.gold`` may be present (for metrics and the ``gt`` baseline) but a self-supervised method must
    never read it. ``pair_id`` is shared by the two views of one question; for single-view training it is
    ``question.id``. ``answers`` / ``teacher_answers`` are filled by the pipeline (``fill_answers``) with the
    extracted final answer of each rollout, ``None`` where a rollout has none; ``answers_extraction`` records
    the extraction mode they were read with (``None`` when they were set by hand), so a method configured
    for another mode never scores them by mistake.
    """

    question: Question
    view: str
    pair_id: str
    rollouts: list[Rollout]
    teacher_rollouts: list[Rollout] | None = None
    answers: list[str | None] = field(default_factory=list)
    teacher_answers: list[str | None] | None = None
    answers_extraction: str | None = None

    @property
    def size(self) -> int:
        return len(self.rollouts)


@dataclass
class RewardOutput:
    """What a method returns for one step, aligned with the groups it was given.

    ``agreement`` is optional: per rollout, whether its answer matches the group's pseudo-label under the
    method's own notion of a match. Methods that reward agreement already know it, and handing it back spares
    the pipeline a second round of (expensive) equivalence checks for the ``pseudo_label/agreement`` metric.
    """

    rewards: list[list[float]]
    pseudo_labels: list[str | None]
    metrics: dict[str, float] = field(default_factory=dict)
    agreement: list[list[bool]] | None = None


class RewardMethod(ABC):
    """One rewarding method. Subclasses set the class flags and implement ``score``.

    ``option_defaults`` declares the keyword options a method accepts (with their defaults and, through the
    default's type, their expected type); ``option_choices`` restricts string options to a set of values;
    ``get_reward_method`` rejects anything else, so a misspelled option in a config fails at start-up instead
    of silently doing nothing.
    """

    name: ClassVar[str]
    needs_rephrased: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    needs_token_stats: ClassVar[bool] = False
    uses_pseudo_labels: ClassVar[bool] = False
    option_defaults: ClassVar[dict[str, Any]] = {}
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            known = ", ".join(sorted(self.option_defaults)) or "none"
            raise ConfigError(
                f"reward method {self.name!r}: unknown option(s) {', '.join(unknown)}; accepted options: {known}"
            )
        values = {**self.option_defaults, **options}
        for key, value in values.items():
            expected = type(self.option_defaults[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # a YAML "1" for a float option is fine
            # bool is a subclass of int, so check it explicitly in both directions
            ok = isinstance(value, expected) and (isinstance(value, bool) == (expected is bool))
            if not ok:
                raise ConfigError(
                    f"reward method {self.name!r}: option {key}={value!r} has type {type(value).__name__}, "
                    f"expected {expected.__name__}"
                )
            choices = self.option_choices.get(key)
            if choices is not None and value not in choices:
                raise ConfigError(
                    f"reward method {self.name!r}: option {key}={value!r}; expected one of {', '.join(choices)}"
                )
            setattr(self, key, value)
        self.options: dict[str, Any] = values

    @abstractmethod
    def score(self, groups: list[RolloutGroup]) -> RewardOutput:
        """Reward every rollout of every group. Answers are filled (``fill_answers``) before this is called."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


REGISTRY: dict[str, type[RewardMethod]] = {}


def register(cls: type[RewardMethod]) -> type[RewardMethod]:
    """Class decorator: make ``cls`` available to ``get_reward_method`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must set a non-empty class attribute 'name' to be registered")
    if not hasattr(cls, "uses_pseudo_labels"):
        raise TypeError(f"{cls.__name__} must set the class attribute 'uses_pseudo_labels'")
    existing = REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"reward method name {name!r} is already registered by {existing.__name__}")
    REGISTRY[name] = cls
    return cls


def get_reward_method(name: str, **options: Any) -> RewardMethod:
    """Instantiate the method registered as ``name`` with ``options`` (ConfigError on unknown name/option)."""
    cls = REGISTRY.get(name)
    if cls is None:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"method: unknown reward method {name!r}; known methods: {known}")
    return cls(**options)


def check_answers_filled(
    groups: list[RolloutGroup], method: str, teacher: bool = False, extraction: str | None = None
) -> None:
    """Fail clearly when a method is handed groups whose answers were never extracted, or were extracted
    under another ``extraction`` mode than the method's."""
    for g in groups:
        if extraction is not None and g.answers_extraction not in (None, extraction):
            raise ValueError(
                f"{method}: group {g.question.id!r} ({g.view}) holds answers extracted with "
                f"extraction={g.answers_extraction!r} but the method reads answers with extraction={extraction!r}; "
                f"call corewarding.rewards.fill_answers(groups, extraction={extraction!r}) (or score_step)"
            )
        if len(g.answers) != len(g.rollouts):
            raise ValueError(
                f"{method}: group {g.question.id!r} ({g.view}) has {len(g.rollouts)} rollouts but "
                f"{len(g.answers)} answers; call corewarding.rewards.fill_answers (or score_step) first"
            )
        if teacher:
            if g.teacher_rollouts is None:
                raise ValueError(
                    f"{method}: group {g.question.id!r} ({g.view}) has no teacher_rollouts; this method "
                    "rewards the policy with the teacher's majority answer, so the trainer must sample them"
                )
            if g.teacher_answers is None or len(g.teacher_answers) != len(g.teacher_rollouts):
                raise ValueError(
                    f"{method}: group {g.question.id!r} ({g.view}) has teacher rollouts whose answers were "
                    "not extracted; call corewarding.rewards.fill_answers (or score_step) first"
                )
