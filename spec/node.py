"""`@node`: an immutable value class, as `@dataclass(frozen=True)` makes it, for the AST's many classes.

`@dataclass(frozen=True)` took about 1 ms per class (an `exec` per generated method, annotation
checks): 50 ms for the AST's classes at the start of every command, a sixth of the CPU of proving a
small spec. `node` reads the same declaration (fields in order, defaults after, `field(default=,
compare=, repr=)`) and gives the same behaviour in 0.2 ms: equality and the hash over the fields
that compare (one `attrgetter`; a class equals only its own class), a repr of the fields that show,
`__match_args__`, and a `__setattr__` / `__delattr__` that refuse (`dataclasses.FrozenInstanceError`).
`__init__` is compiled at a class's first construction: a run that unpickles its checked spec from
the cache constructs few node classes. Instances keep their fields in `__dict__`, so they pickle
and copy as dataclass instances do. `fields_of` lists a class's fields and `replace` copies a node
with some of them changed; type checkers read `node` as a frozen dataclass (`dataclass_transform`).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T", bound=type)
_MISSING: Any = object()


class Field:
    """A field's options, given as its default (`x: int = field(compare=False)`)."""

    __slots__ = ("name", "default", "compare", "repr")

    def __init__(self, default: Any = _MISSING, compare: bool = True, repr: bool = True) -> None:  # noqa: A002 - dataclasses' spelling
        self.name = ""
        self.default, self.compare, self.repr = default, compare, repr


def field(*, default: Any = _MISSING, compare: bool = True, repr: bool = True) -> Any:  # noqa: A002
    return Field(default, compare, repr)


def _refuse_set(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_del(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def node(cls: T) -> T:
    """cls, made an immutable value class of the fields it annotates."""
    fields = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(value)
        f.name = name
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        fields.append(f)
    keys = [f.name for f in fields if f.compare]
    # What equality and the hash read: the fields that compare (a tuple, or one bare value).
    key = attrgetter(*keys) if keys else staticmethod(lambda _: ())
    for name, value in (("__node_fields__", tuple(fields)), ("__node_key__", key),
                        ("__match_args__", tuple(f.name for f in fields)), ("__init__", _first_init),
                        ("__eq__", _eq), ("__hash__", _hash), ("__repr__", _repr),
                        ("__setattr__", _refuse_set), ("__delattr__", _refuse_del)):
        setattr(cls, name, value)
    return cls


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """The class's first construction compiles its __init__ (a class never constructed in a run, as
    when the checked spec is unpickled from the cache, never pays for it)."""
    cls = self.__class__
    cls.__init__ = _compile_init(cls.__qualname__, cls.__node_fields__)
    cls.__init__(self, *args, **kwargs)


def _compile_init(qualname: str, fields: tuple[Field, ...]) -> Any:
    params = ", ".join(["self"] + [f.name if f.default is _MISSING else f"{f.name}=_d_{f.name}" for f in fields])
    sets = "".join(f"    d[{f.name!r}] = {f.name}\n" for f in fields) or "    pass\n"
    scope: dict[str, Any] = {f"_d_{f.name}": f.default for f in fields if f.default is not _MISSING}
    exec(compile(f"def __init__({params}):\n    d = self.__dict__\n{sets}", f"<node {qualname}>", "exec"),  # noqa: S102 - code made here from field names
         scope)
    scope["__init__"].__qualname__ = f"{qualname}.__init__"
    return scope["__init__"]


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    key = self.__node_key__
    return key(self) == key(other)


def _hash(self: Any) -> int:
    return hash(self.__node_key__(self))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__node_fields__ if f.repr)
    return f"{self.__class__.__qualname__}({shown})"


def fields_of(obj: object) -> tuple[Field, ...]:
    """The fields of a node class or instance, in declaration order."""
    return obj.__node_fields__  # type: ignore[attr-defined]  # set by node(); mypy sees a plain object


N = TypeVar("N")


def replace(obj: N, **changes: Any) -> N:
    """A copy of a node with these fields changed (as `dataclasses.replace` copies a dataclass)."""
    kept = {f.name: getattr(obj, f.name) for f in fields_of(obj) if f.name not in changes}
    return type(obj)(**kept, **changes)
