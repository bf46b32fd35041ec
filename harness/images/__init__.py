"""Container images built with no registry: a Debian base and the runtime image.

The base image is a root file system made by debootstrap and imported with
`docker import`. The runtime image adds a venv with wheels downloaded on the
host, the harness code that containers run, and the entrypoints slot-redis
and slot-postgres. Every role of a cluster runs from the runtime image. The
Prometheus image adds Debian's Prometheus binaries to the base image.
"""

from harness.images.build import ImageSet, build_images, ensure_prometheus_image
from harness.images.inventory import (
    ImageInfo,
    images_present,
    list_images,
    remove_stale_images,
    required_runtime_tag,
)

__all__ = [
    "ImageInfo",
    "ImageSet",
    "build_images",
    "ensure_prometheus_image",
    "images_present",
    "list_images",
    "remove_stale_images",
    "required_runtime_tag",
]
