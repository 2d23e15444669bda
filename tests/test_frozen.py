"""``core.frozen.slot_init``: the ``__init__`` it writes takes the arguments the
dataclass's own one takes (names, order, defaults) and makes an equal, still frozen
object; the classes that use it keep that signature; what it cannot do alike it refuses."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.core.frozen import slot_init
from controlplane.dns.records import NameRecord, SrvRecord
from controlplane.dns.views import TableEntry


def _pair() -> tuple[type, type]:
    """The same frozen slotted dataclass twice: as generated, and with ``slot_init``."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Rec:
            name: str
            port: int
            tags: tuple[str, ...] = ()
            weight: int = 100
            note: str | None = None

        return Rec

    return make(), slot_init(make())


PLAIN, FAST = _pair()
values = st.tuples(st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3)).map(tuple),
                   st.integers(), st.none() | st.text(max_size=3))


@given(values, st.integers(2, 5), st.booleans())
def test_the_same_object_as_the_generated_init(args: tuple[object, ...], given_: int,
                                               by_keyword: bool) -> None:
    """``given_`` arguments (the rest defaulted), by position or by keyword."""
    names = [f.name for f in dataclasses.fields(PLAIN)][:given_]
    if by_keyword:
        kwargs = dict(zip(names, args, strict=False))
        plain, fast = PLAIN(**kwargs), FAST(**kwargs)
    else:
        plain, fast = PLAIN(*args[:given_]), FAST(*args[:given_])
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    assert repr(fast).split("(", 1)[1] == repr(plain).split("(", 1)[1]
    assert fast == FAST(*dataclasses.astuple(fast)) and hash(fast) == hash(
        FAST(*dataclasses.astuple(fast)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.port = 1


def test_missing_and_unknown_arguments_fail_as_before() -> None:
    for cls in (PLAIN, FAST):
        with pytest.raises(TypeError):
            cls("only-a-name")
        with pytest.raises(TypeError):
            cls("n", 1, nope=2)


@pytest.mark.parametrize("cls", [PLAIN, FAST, NameRecord, SrvRecord, TableEntry])
def test_the_signature_is_the_fields(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        for f in fields]
    assert cls in (PLAIN, FAST) or vars(cls)["__init__"].__qualname__ == f"{cls.__name__}.__init__"


def test_what_it_cannot_do_alike_is_refused() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    for cls in (NoSlots, NotFrozen, Factory, Post, KwOnly):
        with pytest.raises(TypeError):
            slot_init(cls)
