"""Build or list the images from a shell: python -m harness.images build|list|prune."""

from __future__ import annotations

import argparse
import sys
import time

from harness.errors import HarnessError
from harness.images import build_images, list_images, remove_stale_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.images")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the images that are missing")
    build.add_argument(
        "--force", action="store_true", help="rebuild every image and the wheelhouse"
    )
    commands.add_parser("list", help="list the project's images")
    commands.add_parser("prune", help="remove images the current source does not need")
    args = parser.parse_args(argv)

    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    try:
        if args.command == "build":
            images = build_images(progress=progress, force=args.force)
            print(f"base {images.base}\nruntime {images.runtime} {images.runtime_id}")
            if images.prometheus:
                print(f"prometheus {images.prometheus}")
        elif args.command == "list":
            for info in list_images():
                state = "up to date" if info.up_to_date else "stale"
                print(
                    f"{info.role:8} {info.tag:40} {info.id[7:19]} "
                    f"{info.size / 1e6:6.0f} MB "
                    f"{info.created:%Y-%m-%d %H:%M} {state}"
                )
        else:
            remove_stale_images(progress=progress)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
