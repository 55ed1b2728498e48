"""Typed errors of the web demo, each with the HTTP status the app answers it with.

All derive from :class:`bastion.errors.BastionError`, so library callers can catch them as any other bad
input. :func:`status_of` maps any exception the handlers raise to a status code.
"""

from __future__ import annotations

from bastion.errors import BastionError, ConfigError, DataError


class PayloadTooLargeError(DataError):
    """An upload (or a JSON body) is larger than the limit, in bytes or in pixels."""

    status = 413


class UnsupportedMediaError(DataError):
    """An upload that is not a PNG or JPEG image (checked by its magic bytes, not by its declared type)."""

    status = 415


class UnavailableError(ConfigError):
    """A model or attack that exists but cannot be used in this installation (e.g. weights not shipped)."""

    status = 409


class RequestTimeoutError(DataError):
    """The request body did not arrive in time (a client that stalls or trickles its upload)."""

    status = 408


class CrossSiteError(BastionError):
    """A state-changing request sent by a page of another site (the browser said so in ``Origin`` or
    ``Sec-Fetch-Site``): refused, so that a page you visit cannot make your browser use the demo."""

    status = 403


class BusyError(BastionError):
    """Too many attacks (or requests with a body) are running or waiting; the client should retry shortly."""

    status = 503


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception raised by a handler: its ``status`` attribute, 400 for any other
    :class:`BastionError` (bad parameters, unknown names) and 500 for anything else."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    return 400 if isinstance(exc, BastionError) else 500
