"""An adapter whose framework is not installed: importing it fails on a third-party module."""

import framework_that_is_not_installed_xyz  # noqa: F401


def backends() -> list:
    return []
