"""Recipe hashes: what rebuilds which image. No Docker needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.images.recipe import (
    BASE_REPOSITORY,
    HASH_LENGTH,
    RECIPE_DIR,
    BaseRecipe,
    load_base_recipe,
    runtime_hash,
    runtime_source_files,
    wheelhouse_hash,
)

BASE_ID = "sha256:" + "a" * 64


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of images/ and a small harness source tree, as (recipes, sources)."""
    recipes = tmp_path / "images"
    shutil.copytree(RECIPE_DIR, recipes)
    sources = tmp_path / "src"
    (sources / "harness" / "coordinator").mkdir(parents=True)
    (sources / "harness" / "proxy").mkdir()
    (sources / "harness" / "checkers").mkdir()
    (sources / "harness" / "__init__.py").write_text("")
    (sources / "harness" / "coordinator" / "__main__.py").write_text("print(1)\n")
    (sources / "harness" / "proxy" / "resp.py").write_text("print(2)\n")
    (sources / "harness" / "checkers" / "liveness.py").write_text("print(3)\n")
    return recipes, sources


def test_base_recipe_reads_package_list() -> None:
    recipe = load_base_recipe()

    assert recipe.suite == "bookworm"
    assert recipe.variant == "minbase"
    assert recipe.packages == (
        "python3",
        "python3-venv",
        "redis-server",
        "postgresql",
        "iproute2",
        "iptables",
        "procps",
        "tini",
    )
    assert recipe.tag() == f"{BASE_REPOSITORY}:{recipe.hash()}"
    assert len(recipe.hash()) == HASH_LENGTH


def test_base_hash_ignores_package_order() -> None:
    recipe = BaseRecipe("bookworm", "minbase", ("tini", "procps"))
    reordered = BaseRecipe("bookworm", "minbase", ("procps", "tini"))
    with_curl = BaseRecipe("bookworm", "minbase", ("procps", "tini", "curl"))
    on_trixie = BaseRecipe("trixie", "minbase", ("procps", "tini"))

    assert reordered.hash() == recipe.hash()
    assert with_curl.hash() != recipe.hash()
    assert on_trixie.hash() != recipe.hash()


def test_runtime_sources_are_only_runtime_packages(tree: tuple[Path, Path]) -> None:
    _, sources = tree
    cache = sources / "harness" / "proxy" / "__pycache__"
    cache.mkdir()
    (cache / "resp.cpython-311.pyc").write_bytes(b"\0")

    assert runtime_source_files(sources) == [
        Path("harness/__init__.py"),
        Path("harness/coordinator/__main__.py"),
        Path("harness/proxy/resp.py"),
    ]


def test_runtime_hash_follows_runtime_code(tree: tuple[Path, Path]) -> None:
    recipes, sources = tree
    before = runtime_hash(BASE_ID, recipes, sources)

    (sources / "harness" / "coordinator" / "__main__.py").write_text("print(9)\n")

    assert runtime_hash(BASE_ID, recipes, sources) != before


def test_runtime_hash_ignores_other_code(tree: tuple[Path, Path]) -> None:
    recipes, sources = tree
    before = runtime_hash(BASE_ID, recipes, sources)

    (sources / "harness" / "checkers" / "liveness.py").write_text("print(9)\n")
    cache = sources / "harness" / "coordinator" / "__pycache__"
    cache.mkdir()
    (cache / "__main__.cpython-311.pyc").write_bytes(b"\0")

    assert runtime_hash(BASE_ID, recipes, sources) == before


def test_runtime_hash_follows_base_and_recipe(tree: tuple[Path, Path]) -> None:
    recipes, sources = tree
    before = runtime_hash(BASE_ID, recipes, sources)
    other_base = "sha256:" + "b" * 64
    assert runtime_hash(other_base, recipes, sources) != before

    dockerfile = recipes / "runtime" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# edited\n")
    after_dockerfile = runtime_hash(BASE_ID, recipes, sources)
    assert after_dockerfile != before

    requirements = recipes / "runtime" / "requirements.txt"
    wheels_before = wheelhouse_hash(recipes)
    requirements.write_text(requirements.read_text() + "six==1.17.0\n")
    assert wheelhouse_hash(recipes) != wheels_before
    assert runtime_hash(BASE_ID, recipes, sources) != after_dockerfile


def test_runtime_hash_follows_executable_bit(tree: tuple[Path, Path]) -> None:
    recipes, sources = tree
    before = runtime_hash(BASE_ID, recipes, sources)

    (recipes / "runtime" / "slot-redis").chmod(0o644)

    assert runtime_hash(BASE_ID, recipes, sources) != before
