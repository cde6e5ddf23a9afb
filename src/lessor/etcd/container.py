"""Deprecated: moved to :mod:`lessor.testing.container` (``EtcdContainer``) and
:mod:`lessor.testing.image` (the image builder; ``python -m lessor.testing.image``); this alias
stays for one release and warns when imported."""

from __future__ import annotations

import sys
import warnings

from lessor.testing.container import EtcdContainer, docker_unavailable
from lessor.testing.image import (
    IMAGE_DIR,
    IMAGE_REPOSITORY,
    LOCAL_IMAGE,
    VERSION_LABEL,
    EtcdImage,
    build_etcd_image,
    etcd_image,
    find_image_etcd_binary,
    find_static_etcd_binary,
    main,
    shared_libraries,
    write_build_context,
)

__all__ = [
    "IMAGE_DIR",
    "IMAGE_REPOSITORY",
    "LOCAL_IMAGE",
    "VERSION_LABEL",
    "EtcdContainer",
    "EtcdImage",
    "build_etcd_image",
    "docker_unavailable",
    "etcd_image",
    "find_image_etcd_binary",
    "find_static_etcd_binary",
    "shared_libraries",
    "write_build_context",
]

warnings.warn(
    "lessor.etcd.container is deprecated: use lessor.testing.container (EtcdContainer) and "
    "lessor.testing.image (the image builder, python -m lessor.testing.image)",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    sys.exit(main())
