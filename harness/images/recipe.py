"""Recipes of the project's images and the content hashes that name them.

An image tag ends with the hash of everything that went into the image, so a
tag that exists needs no rebuild. The base image's hash covers only its Debian
recipe. The runtime image's hash covers the base image id, the runtime recipe,
the pinned requirements and the harness code that containers run, so a code
change rebuilds only the runtime image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = PROJECT_ROOT / "images"
BUILD_DIR = PROJECT_ROOT / "build"
# Scratch folders of builds. A build removes what it finds here, so nothing
# else may use this folder.
BUILD_TMP_DIR = BUILD_DIR / "images-tmp"

PROJECT = "slot-harness"
PROJECT_LABEL = "slot-harness.project"
ROLE_LABEL = "slot-harness.role"
HASH_LABEL = "slot-harness.hash"
BASE_ID_LABEL = "slot-harness.base-id"
BASE_REPOSITORY = "slot-harness/base"
RUNTIME_REPOSITORY = "slot-harness/runtime"

# Bump when the build steps change in a way the inputs below do not show.
RECIPE_VERSION = 1

DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Overrides the mirror, for example a local apt cache. The mirror is not part
# of the hash, because every mirror serves the same packages of the suite.
MIRROR_ENV = "HARNESS_DEBIAN_MIRROR"

# Paths in the root file system that the base image leaves out. Docker mounts
# its own /dev, /proc, /sys, /etc/resolv.conf and /etc/hostname, the package
# caches only take space, and the Debian package's default cluster would sit
# unused beside the one that slot-postgres creates.
BASE_EXCLUDES = (
    "./dev/*",
    "./proc/*",
    "./sys/*",
    "./run/*",
    "./tmp/*",
    "./etc/resolv.conf",
    "./etc/hostname",
    "./var/cache/apt/*",
    "./var/lib/apt/lists/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/info/*",
    "./var/lib/postgresql/*",
    "./etc/postgresql/*",
)
BASE_IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)

# The wheels must match Debian bookworm's CPython 3.11 on x86-64.
PIP_TARGET_ARGS = (
    "--only-binary=:all:",
    "--platform",
    "manylinux2014_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
)

# The parts of the harness package that containers import, relative to the
# project root. Containers get nothing else of harness/.
RUNTIME_SOURCES = ("harness/__init__.py", "harness/coordinator", "harness/proxy")

HASH_LENGTH = 12


@dataclass(frozen=True)
class BaseRecipe:
    """The inputs of the base image: a Debian root file system by debootstrap."""

    suite: str
    variant: str
    packages: tuple[str, ...]

    def hash(self) -> str:
        return _digest(
            json.dumps(
                {
                    "recipe_version": RECIPE_VERSION,
                    "suite": self.suite,
                    "variant": self.variant,
                    "packages": sorted(self.packages),
                    "excludes": BASE_EXCLUDES,
                    "changes": BASE_IMAGE_CHANGES,
                },
                sort_keys=True,
            ).encode()
        )

    def tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.hash()}"


def debian_mirror() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_DEBIAN_MIRROR


def load_base_recipe(recipe_dir: Path = RECIPE_DIR) -> BaseRecipe:
    """Read the package list of images/base/packages.txt into a recipe."""
    path = recipe_dir / "base" / "packages.txt"
    packages = tuple(
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return BaseRecipe(suite=DEBIAN_SUITE, variant=DEBIAN_VARIANT, packages=packages)


def runtime_recipe_dir(recipe_dir: Path = RECIPE_DIR) -> Path:
    return recipe_dir / "runtime"


def requirements_path(recipe_dir: Path = RECIPE_DIR) -> Path:
    return runtime_recipe_dir(recipe_dir) / "requirements.txt"


def wheelhouse_hash(recipe_dir: Path = RECIPE_DIR) -> str:
    """Hash the requirements file and the pip options that select the wheels."""
    hasher = hashlib.sha256()
    hasher.update(json.dumps(PIP_TARGET_ARGS).encode())
    hasher.update(requirements_path(recipe_dir).read_bytes())
    return hasher.hexdigest()[:HASH_LENGTH]


def runtime_source_files(source_root: Path = PROJECT_ROOT) -> list[Path]:
    """List the files of RUNTIME_SOURCES, relative to source_root and sorted.

    Bytecode caches are left out, because Python rewrites them on import and
    the image compiles its own. A missing entry contributes no files.
    """
    files: list[Path] = []
    for entry in RUNTIME_SOURCES:
        path = source_root / entry
        if path.is_file():
            files.append(Path(entry))
        elif path.is_dir():
            files.extend(
                file.relative_to(source_root)
                for file in path.rglob("*")
                if file.is_file() and _is_source(file)
            )
    return sorted(files)


def runtime_hash(
    base_id: str,
    recipe_dir: Path = RECIPE_DIR,
    source_root: Path = PROJECT_ROOT,
) -> str:
    """Hash every input of the runtime image built on the base image base_id."""
    hasher = hashlib.sha256()
    hasher.update(f"recipe-version {RECIPE_VERSION}\nbase {base_id}\n".encode())
    hasher.update(f"wheelhouse {wheelhouse_hash(recipe_dir)}\n".encode())
    runtime_dir = runtime_recipe_dir(recipe_dir)
    recipe_files = sorted(p for p in runtime_dir.rglob("*") if p.is_file())
    _hash_files(hasher, runtime_dir, (p.relative_to(runtime_dir) for p in recipe_files))
    _hash_files(hasher, source_root, runtime_source_files(source_root))
    return hasher.hexdigest()[:HASH_LENGTH]


def runtime_tag(runtime_digest: str) -> str:
    return f"{RUNTIME_REPOSITORY}:{runtime_digest}"


def _is_source(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")


def _hash_files(hasher: hashlib._Hash, root: Path, relative: Iterable[Path]) -> None:
    # The name and the length go in before the bytes, so that moving bytes from
    # one file to the next changes the hash. The executable bit goes in too,
    # because the image keeps it.
    for path in relative:
        data = (root / path).read_bytes()
        executable = os.access(root / path, os.X_OK)
        hasher.update(f"file {path.as_posix()} {len(data)} {executable}\n".encode())
        hasher.update(data)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_LENGTH]
