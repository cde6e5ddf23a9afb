"""register/get, and discovery through the lessor.backends entry-point group."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lessor
from lessor import Context, LessorNotRegistered, MemoryLessor, registry
from tests.support.plugins import install_plugin


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    yield


def test_memory_is_registered_and_shared() -> None:
    ctx = Context.background()
    a = lessor.get(ctx, "memory")
    assert isinstance(a, MemoryLessor)
    assert lessor.get(ctx, "memory") is a


def test_duplicate_id_is_an_error() -> None:
    lessor.register("dup", lambda ctx: MemoryLessor())
    with pytest.raises(ValueError, match="'dup' is already registered"):
        lessor.register("dup", lambda ctx: MemoryLessor())


def test_unknown_id_names_it_and_the_known_ones() -> None:
    with pytest.raises(LessorNotRegistered, match=r"'nope'.*'memory'") as e:
        lessor.get(Context.background(), "nope")
    assert isinstance(e.value, LookupError)


def test_bad_registrations() -> None:
    with pytest.raises(ValueError):
        lessor.register("", lambda ctx: MemoryLessor())
    with pytest.raises(TypeError):
        lessor.register("x", "not callable")  # type: ignore[arg-type]


def test_factory_must_return_a_lessor() -> None:
    lessor.register("liar", lambda ctx: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="'liar'"):
        lessor.get(Context.background(), "liar")


def test_factory_receives_ctx() -> None:
    seen: list[object] = []
    mine = MemoryLessor()

    def factory(ctx: Context) -> MemoryLessor:
        seen.append(ctx.value("setting"))
        return mine

    lessor.register("withctx", factory)
    assert lessor.get(Context.background().with_value("setting", 42), "withctx") is mine
    assert seen == [42]


_install_plugin = functools.partial(install_plugin, group=registry.ENTRY_POINT_GROUP)


def test_entry_point_naming_a_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(
        tmp_path,
        "epfactory",
        """
        from lessor import MemoryLessor
        def make(ctx):
            return MemoryLessor()
    """,
        "epfactory = epfactory:make",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "epfactory", raising=False)
    assert "epfactory" in lessor.registered()
    assert isinstance(lessor.get(Context.background(), "epfactory"), MemoryLessor)


def test_entry_point_naming_a_module_that_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(
        tmp_path,
        "epmodule",
        """
        import lessor
        SHARED = lessor.MemoryLessor()
        lessor.register("epmodule", lambda ctx: SHARED)
    """,
        "epmodule = epmodule",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "epmodule", raising=False)
    got = lessor.get(Context.background(), "epmodule")
    assert got is sys.modules["epmodule"].SHARED
