"""lessor.aio.register/get/registered, and discovery through the lessor.aio_backends
entry-point group: the sync registry's mechanism (lessor.registry.Registry), for aio lessors."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import lessor
import lessor.aio
from lessor import Context, LessorNotRegistered, MemoryLessor
from lessor.aio import AsyncMemoryLessor
from lessor.aio import registry as aio_registry
from tests.support.plugins import install_plugin


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aio_registry, "_factories", dict(aio_registry._factories))
    yield


def test_memory_is_registered_and_shared() -> None:
    ctx = Context.background()
    a = lessor.aio.get(ctx, "memory")
    assert isinstance(a, AsyncMemoryLessor)
    assert lessor.aio.get(ctx, "memory") is a
    assert "memory" in lessor.aio.registered()


def test_the_registries_are_apart() -> None:
    lessor.aio.register("only-aio", lambda ctx: AsyncMemoryLessor())
    assert "only-aio" in lessor.aio.registered()
    assert "only-aio" not in lessor.registered()
    with pytest.raises(LessorNotRegistered, match="no lessor registered as 'only-aio'"):
        lessor.get(Context.background(), "only-aio")


def test_duplicate_id_is_an_error() -> None:
    lessor.aio.register("dup", lambda ctx: AsyncMemoryLessor())
    with pytest.raises(ValueError, match="aio lessor 'dup' is already registered"):
        lessor.aio.register("dup", lambda ctx: AsyncMemoryLessor())


def test_unknown_id_names_it_and_the_known_ones() -> None:
    with pytest.raises(LessorNotRegistered, match=r"no aio lessor registered as 'nope'.*'memory'"):
        lessor.aio.get(Context.background(), "nope")


def test_bad_registrations() -> None:
    with pytest.raises(ValueError, match="aio lessor id must be a non-empty str"):
        lessor.aio.register("", lambda ctx: AsyncMemoryLessor())
    with pytest.raises(TypeError, match="aio lessor factory for 'x' must be callable"):
        lessor.aio.register("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ctx must be a lessor\.Context"):
        lessor.aio.get(None, "memory")  # type: ignore[arg-type]


def test_factory_must_return_an_async_lessor() -> None:
    lessor.aio.register("sync", lambda ctx: MemoryLessor())  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"'sync' returned .*, not a lessor\.aio\.AsyncLessor"):
        lessor.aio.get(Context.background(), "sync")


def test_factory_receives_ctx() -> None:
    seen: list[object] = []
    mine = AsyncMemoryLessor()

    def factory(ctx: Context) -> AsyncMemoryLessor:
        seen.append(ctx.value("setting"))
        return mine

    lessor.aio.register("withctx", factory)
    assert lessor.aio.get(Context.background().with_value("setting", 42), "withctx") is mine
    assert seen == [42]


def test_the_project_declares_its_aio_backends() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    groups = project["project"]["entry-points"]
    assert aio_registry.ENTRY_POINT_GROUP == "lessor.aio_backends"
    assert groups["lessor.aio_backends"] == {
        "memory": "lessor.aio.memory:factory",
        "etcd": "lessor.etcd.aio:factory",
    }
    assert groups["lessor.backends"].keys() == groups["lessor.aio_backends"].keys()


def test_entry_points_name_a_factory_or_a_module_that_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = aio_registry.ENTRY_POINT_GROUP
    factory = "from lessor.aio import AsyncMemoryLessor\nmake = lambda ctx: AsyncMemoryLessor()\n"
    install_plugin(
        tmp_path, "aioepfactory", factory, "aioepfactory = aioepfactory:make", group=group
    )
    registers = """
        import lessor.aio
        SHARED = lessor.aio.AsyncMemoryLessor()
        lessor.aio.register("aioepmodule", lambda ctx: SHARED)
        """
    install_plugin(tmp_path, "aioepmodule", registers, "aioepmodule = aioepmodule", group=group)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("aioepfactory", "aioepmodule"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert {"aioepfactory", "aioepmodule"} <= set(lessor.aio.registered())
    assert "aioepfactory" not in lessor.registered()  # another group
    assert isinstance(lessor.aio.get(Context.background(), "aioepfactory"), AsyncMemoryLessor)
    got = lessor.aio.get(Context.background(), "aioepmodule")
    assert got is sys.modules["aioepmodule"].SHARED


def test_an_entry_point_that_is_neither_names_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = aio_registry.ENTRY_POINT_GROUP
    install_plugin(tmp_path, "aioepjunk", "VALUE = 3\n", "aioepjunk = aioepjunk:VALUE", group=group)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "aioepjunk", raising=False)
    with pytest.raises(TypeError, match="entry point 'aioepjunk:VALUE' for aio lessor 'aioepjunk'"):
        lessor.aio.get(Context.background(), "aioepjunk")
