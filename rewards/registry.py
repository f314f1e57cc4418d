"""The reward registry: a name in a recipe -> a callable with TRL's reward signature.

TRL (GRPOTrainer, 1.16) calls each reward function as
`f(prompts=, completions=, completion_ids=, **dataset_columns, trainer_state=, log_extra=, log_metric=)` and expects
one float (or None: skip the sample) per completion; it logs the function under its `__name__`, so the callables
built here carry the name the recipe used: `rewards/accuracy/mean`.

A name is registered here (`@register_reward("name")` on a factory), another library's name for a registered
reward (`aliases.ALIASES`: open-r1's and TRL's), or a user function given as "package.module:function": a reward
function (it has a `completions` parameter) or a factory of one.
"""

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .aliases import ALIASES

RewardFunc = Callable[..., list[float | None]]

# Keyword arguments TRL passes that are not dataset columns.
TRL_ARGUMENTS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)

_FACTORIES: dict[str, Callable[..., RewardFunc]] = {}


class RewardFunction:
    """Base of the built-in rewards: one float (or None) per completion, whatever the completion holds.

    `__name__` is the name TRL logs the reward under: its class's registry name (`registry_name`, set by
    `@register_reward`), so `Format()` is "format" however it was made, unless `get_reward_func` built it under
    another name (an alias). `required_columns` are the dataset columns the reward reads, checked before training by
    `check_columns`.
    """

    registry_name = "reward"
    required_columns: tuple[str, ...] = ()

    @property
    def __name__(self) -> str:
        return vars(self).get("_name", self.registry_name)

    @__name__.setter
    def __name__(self, name: str):
        self._name = name

    def __call__(self, completions: list, **kwargs) -> list[float | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<reward {self.__name__}>"


def column(kwargs: Mapping[str, Any], name: str, reward: str, n: int) -> list:
    """The dataset column `name` from TRL's keyword arguments, one value per completion."""
    if name not in kwargs:
        raise KeyError(
            f"Reward '{reward}' needs the dataset column '{name}', which this batch lacks. Call "
            f"rewards.check_columns(reward_funcs, dataset.column_names) before training."
        )
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"Reward '{reward}': column '{name}' has {len(values)} values for {n} completions.")
    return values


def register_reward(name: str) -> Callable:
    """Decorator registering a reward factory under `name`; the factory's keyword arguments are the reward's params.

    A `RewardFunction` class also takes `name` as its `registry_name`, the `__name__` of its instances.
    """
    if not name.isidentifier():
        raise ValueError(f"Reward names are Python identifiers (e.g. 'my_reward'), got {name!r}.")

    def decorator(factory: Callable[..., RewardFunc]) -> Callable[..., RewardFunc]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"A reward named '{name}' is already registered; choose another name.")
        _FACTORIES[name] = factory
        if isinstance(factory, type) and issubclass(factory, RewardFunction):
            factory.registry_name = name
        return factory

    return decorator


def list_rewards() -> list[str]:
    """The registered reward names."""
    return sorted(_FACTORIES)


def has_defaults(name: str) -> bool:
    """Whether the registered reward `name` can be built without params (none of its params is required)."""
    try:
        inspect.signature(_FACTORIES[name]).bind()
    except TypeError:
        return False
    return True


def get_reward_func(name: str, **params) -> RewardFunc:
    """The reward called `name` (registered, an alias, or "package.module:function"), built with `params`.

    An alias gives the reward it stands for, built with the alias's preset params (which `params` may override),
    under the alias: the name the recipe wrote is the name in the logs.
    """
    if name in _FACTORIES:
        return name_reward(build(_FACTORIES[name], name, params), name)
    if name in ALIASES:
        target, preset = ALIASES[name]
        return name_reward(build(_FACTORIES[target], name, {**preset, **params}), name)
    if ":" in name:
        target = load_user_object(name)
        if is_reward_function(target):
            if params:
                raise ValueError(
                    f"Params {sorted(params)} were given for '{name}', but it is a reward function, not "
                    "a factory: remove the params, or make it a factory that returns the function."
                )
            return name_reward(target, name)
        return name_reward(build(target, name, params), name)
    raise ValueError(
        f"Unknown reward '{name}'. Known rewards: {', '.join(list_rewards())}; open-r1's and TRL's names for them: "
        f"{', '.join(sorted(ALIASES))}. A function of your own is named by its import path, 'package.module:function'."
    )


def get_reward_funcs(names: Iterable[str], params: Mapping[str, Mapping[str, Any]] | None = None) -> list[RewardFunc]:
    """The rewards called `names`, in order; `params` maps a name to its factory's keyword arguments."""
    names = list(names)
    params = {name: kwargs if kwargs is not None else {} for name, kwargs in (params or {}).items()}  # YAML `name:`
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Rewards {duplicates} are listed more than once; TRL logs rewards by name, list each once.")
    stray = sorted(set(params) - set(names))
    if stray:
        raise ValueError(
            f"Params were given for {stray}, which are not among the rewards {names}: add them to the "
            "reward list or remove their params."
        )
    for name, kwargs in params.items():
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"Params for '{name}' must be a mapping of keyword arguments, got {kwargs!r}.")
    return [get_reward_func(name, **params.get(name, {})) for name in names]


def check_columns(reward_funcs: Iterable[RewardFunc], column_names: Iterable[str]):
    """Raise before training if a reward needs a dataset column the dataset lacks; the message names both."""
    column_names = list(column_names)
    problems = []
    for func in reward_funcs:
        name = getattr(func, "__name__", type(func).__name__)
        for needed in getattr(func, "required_columns", ()):
            if needed not in column_names:
                problems.append(f"reward '{name}' needs the dataset column '{needed}'")
    if problems:
        raise ValueError(
            f"{'; '.join(problems)}; the dataset has columns {column_names}. Rename or add the "
            "column, or point the reward at another one through its params (e.g. "
            "{'accuracy': {'column': 'answer'}})."
        )


def build(factory: Callable[..., RewardFunc], name: str, params: Mapping[str, Any]) -> RewardFunc:
    """Call `factory(**params)`, turning a parameter mismatch into an error that lists the accepted params."""
    signature = inspect.signature(factory)
    try:
        signature.bind(**params)
    except TypeError as error:
        raise ValueError(f"Reward '{name}': {error}. Its params: {format_params(signature)}.") from None
    reward = factory(**params)
    if not callable(reward):
        raise TypeError(f"Reward factory '{name}' returned {type(reward).__name__}, not a reward function.")
    return reward


def format_params(signature: inspect.Signature) -> str:
    return ", ".join(str(p) for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD) or "none"


def load_user_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"Reward '{path}': cannot import module '{module_name}' ({error}). Check that it is on the Python path."
        ) from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"Reward '{path}': module '{module_name}' has no attribute '{attribute}'.")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"Reward '{path}' is a {type(target).__name__}, not a function or a factory.")
    return target


def is_reward_function(target: Callable) -> bool:
    """A reward function takes `completions` (or **kwargs only, like TRL's examples); anything else is a factory."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    if "completions" in parameters:
        return True
    return bool(parameters) and all(p.kind is p.VAR_KEYWORD for p in parameters.values())


def inferred_columns(func: Callable) -> tuple[str, ...]:
    """The dataset columns a user reward function needs: its parameters without a default that TRL does not fill."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in kinds and p.default is p.empty and p.name not in TRL_ARGUMENTS)


class NamedReward:
    """A user reward function under its registry name, unchanged otherwise (the function object is not mutated)."""

    def __init__(self, func: RewardFunc, name: str):
        self.func = func
        self.__name__ = name
        self.required_columns = tuple(getattr(func, "required_columns", None) or inferred_columns(func))

    def __call__(self, *args, **kwargs) -> list[float | None]:
        return self.func(*args, **kwargs)


class NamedAsyncReward(NamedReward):
    """The same for an async reward function: TRL awaits it on its event-loop thread."""

    async def __call__(self, *args, **kwargs) -> list[float | None]:
        return await self.func(*args, **kwargs)


def name_reward(reward: RewardFunc, name: str) -> RewardFunc:
    if isinstance(reward, RewardFunction):
        reward.__name__ = name
        return reward
    is_async = inspect.iscoroutinefunction(reward) or inspect.iscoroutinefunction(type(reward).__call__)
    return (NamedAsyncReward if is_async else NamedReward)(reward, name)
