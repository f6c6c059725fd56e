"""The method table: every open-vocabulary segmentor the command line, the Python API and
the benchmark workbook know, by its command-line name (as mmseg's ``MODELS`` registry is by
class name).

A method is a subclass of :class:`~segearth_ov.models.open_vocab.OpenVocabSegmentor`
decorated with :func:`register_method`; everything the upper layers need (its options, how
it resolves its weights, how a results row describes it) is declared on the class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from mmseg.registry import MODELS

_METHODS: Dict[str, type] = {}
DEFAULT_METHOD = 'segearth-ov'  # what runs when neither --method nor a config says


@dataclass(frozen=True)
class MethodOption:
    """A setting a user chooses for one method, by keyword in the Python API
    (``OpenVocabSegmenter(..., name=value)``) and by flag on the command line; the method's
    ``build_for_predict`` turns it into model arguments.

    ``flag`` defaults to ``--name-with-dashes``; ``type`` converts the command line's text
    (a usage error when it raises ``ValueError``); a boolean option whose default is True
    is a ``--no-...`` switch that stores False."""
    name: str
    default: object
    help: str
    choices: Optional[Tuple[str, ...]] = None
    flag: str = ''
    type: Optional[Callable[[str], object]] = None

    @property
    def cli_flag(self) -> str:
        return self.flag or '--' + self.name.replace('_', '-')


def register_method(cls: type) -> type:
    """Class decorator: register an ``OpenVocabSegmentor`` subclass in mmseg's ``MODELS``
    (so configs name it by ``type``) and in the method table under ``cls.CLI_NAME``."""
    name = getattr(cls, 'CLI_NAME', None)
    if not name:
        raise ValueError(f'{cls.__name__} has no CLI_NAME to register it under')
    if _METHODS.get(name, cls) is not cls:
        raise ValueError(f'method {name!r} is registered already ({_METHODS[name].__name__})')
    if MODELS.get(cls.__name__) is None:
        MODELS.register_module(module=cls)
    _METHODS[name] = cls
    return cls


def unregister_method(name: str) -> type:
    """Take a method out of the table (a plugin unloading, a test cleaning up); its class
    stays in mmseg's ``MODELS``, which has no removal. Returns the class."""
    return _METHODS.pop(get_method(name).CLI_NAME)


def method_names() -> List[str]:
    """The registered methods' command-line names, :data:`DEFAULT_METHOD` first."""
    return sorted(_METHODS, key=lambda name: name != DEFAULT_METHOD)


def get_method(name: str) -> type:
    """The segmentor class of a command-line method name; the error lists the choices."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f'unknown method {name!r}; choose one of '
                         f'{", ".join(method_names())}') from None


def method_of_model(model_type) -> Optional[type]:
    """The registered method whose class a config's ``model.type`` names (a name or the
    class), or None for a model that is not one."""
    for cls in _METHODS.values():
        if model_type in (cls, cls.__name__):
            return cls
    return None


def method_options() -> Dict[str, MethodOption]:
    """Every method's options by name (a name two methods share is listed once)."""
    options: Dict[str, MethodOption] = {}
    for name in method_names():
        for option in _METHODS[name].OPTIONS:
            options.setdefault(option.name, option)
    return options


def owners_of(option: str) -> List[str]:
    """The methods that have the option ``option``."""
    return [name for name in method_names()
            if any(o.name == option for o in _METHODS[name].OPTIONS)]


def choose_method(method: Optional[str], config) -> Tuple[type, dict]:
    """The method class (``method``, else the config's model, else the default) and the
    config's model settings that carry over to another class list (the method's
    ``CONFIG_SETTINGS``)."""
    chosen = get_method(method) if method is not None else None
    settings, config_class = {}, None
    if config:
        from mmengine.config import Config
        if not Path(config).is_file():
            raise FileNotFoundError(f'config {config} not found')
        model = Config.fromfile(str(config)).model
        config_class = method_of_model(model.get('type'))
        if config_class is None:
            raise ValueError(f'config {config} has a {model.get("type")} model; predict runs '
                             f'the methods {", ".join(method_names())}')
        settings = {key: model[key] for key in config_class.CONFIG_SETTINGS if key in model}
    if chosen is not None and config_class is not None and chosen is not config_class:
        raise ValueError(f'--method {method} runs {chosen.__name__}, but config {config} is a '
                         f'{config_class.__name__} config')
    return chosen or config_class or get_method(DEFAULT_METHOD), settings


def split_options(method_class: type, given: dict) -> Tuple[dict, dict]:
    """``(the method's user options, model arguments)`` of keyword arguments; a user option
    of another method is refused, naming the method it belongs to."""
    known = method_options()
    options = {name: value for name, value in given.items() if name in known}
    mine = {option.name for option in method_class.OPTIONS}
    for name, value in options.items():
        if name not in mine and value != known[name].default:
            own = ', '.join(o.cli_flag for o in method_class.OPTIONS) or 'none'
            raise ValueError(f'{known[name].cli_flag} ({name}=) is an option of '
                             f'--method {" or ".join(owners_of(name))}, not of '
                             f'{method_class.CLI_NAME} (its options: {own})')
    return ({k: v for k, v in options.items() if k in mine},
            {k: v for k, v in given.items() if k not in known})
