"""The one interface every reward method implements, and the registry the trainer asks by name.

The trainer never branches on the method's name: it reads the class flags (``needs_rephrased``,
``needs_teacher``, ``needs_token_stats``) to know what to prepare, builds ``RolloutGroup``s, and calls
``score``. All method logic lives in the small subclasses registered here.

A config's ``method`` is a registered name (the built-ins, or a class user code passed to ``register``) or
an import path ``package.module:ClassName`` naming any ``RewardMethod`` subclass (a plug-in);
``method_class`` resolves both, and it is the one list of methods that config validation reads.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
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


def method_class(method: str) -> type[RewardMethod]:
    """The ``RewardMethod`` class that a config's ``method`` names: a registered name, or an import path
    ``package.module:ClassName`` (a plug-in, imported here; its module is looked up on ``sys.path``, then in
    the current directory). ConfigError, naming the value and what was expected, when it names nothing usable.
    """
    if ":" not in method:
        cls = REGISTRY.get(method)
        if cls is None:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(
                f"method={method!r}: unknown reward method {method!r}; expected a registered name ({known}) "
                "or an import path package.module:ClassName naming a RewardMethod subclass"
            )
        return cls
    module_name, _, attr = method.partition(":")
    expected = "an import path package.module:ClassName naming a RewardMethod subclass"
    if not all(part.isidentifier() for part in [*module_name.split("."), *attr.split(".")]):
        raise ConfigError(f"method={method!r}: expected a registered name or {expected}")
    module = _import_plugin_module(method, module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"method={method!r}: module {module_name!r} has no attribute {attr!r}; expected {expected}"
            )
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, RewardMethod)):
        what = (
            f"the class {obj.__module__}.{obj.__qualname__}"
            if inspect.isclass(obj)
            else f"an object of type {type(obj).__name__}"
        )
        raise ConfigError(
            f"method={method!r}: {attr} is {what}, not a RewardMethod; expected a subclass of "
            "corewarding.rewards.RewardMethod"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ConfigError(f"method={method!r}: {attr} is abstract (it does not implement {missing})")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"method={method!r}: {attr} must set the class attribute name (a non-empty string that its "
            "metrics, errors and default run directory use)"
        )
    return obj


def _import_plugin_module(method: str, module_name: str) -> Any:
    """Import a plug-in's module. The current directory is tried last (where ``python -m`` would have looked
    first; a console script's ``sys.path`` lacks it) and stays on ``sys.path`` when the module is found there."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        failure = err
    cwd = os.getcwd()
    if _is_the_module(failure, module_name) and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            failure = err
            sys.path.remove(cwd)
        except BaseException:
            sys.path.remove(cwd)
            raise
    if _is_the_module(failure, module_name):
        raise ConfigError(
            f"method={method!r}: no module named {failure.name!r}; expected an importable module (installed, "
            "on PYTHONPATH, or in the current directory) holding the RewardMethod subclass"
        ) from failure
    # the module is there but imports something missing
    raise ConfigError(f"method={method!r}: importing module {module_name!r} failed: {failure}") from failure


def _is_the_module(err: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``err`` says ``module_name`` itself (or a package above it) is missing."""
    return err.name is not None and (module_name + ".").startswith(err.name + ".")


def get_reward_method(name: str, **options: Any) -> RewardMethod:
    """Instantiate the method that ``name`` names (see ``method_class``) with ``options`` (ConfigError on an
    unknown name or option)."""
    return method_class(name)(**options)


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
