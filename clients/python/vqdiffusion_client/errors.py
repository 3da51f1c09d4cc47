"""Exceptions raised by the client: grpc.RpcError mapped to typed errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Type

import grpc

from ._generated.vqdiffusion_client_rpc import status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_BAD_REQUEST_TYPE = "google.rpc.BadRequest"


@dataclass(frozen=True)
class FieldViolation:
    """One entry of a google.rpc.BadRequest: the request field path and what is wrong with it."""

    field: str
    description: str


class VqDiffusionError(Exception):
    """A failed call. ``code`` is the grpc.StatusCode, ``message`` the server's status message and
    ``field_violations`` the google.rpc.BadRequest details (INVALID_ARGUMENT), if any."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.field_violations: List[FieldViolation] = list(field_violations)
        super().__init__(f"{code.name}: {message}")

    @property
    def field(self) -> Optional[str]:
        """The first offending field path (e.g. ``truncation_rate``, ``prompts[1]``), or None."""
        return self.field_violations[0].field if self.field_violations else None


class InvalidArgumentError(VqDiffusionError):
    """INVALID_ARGUMENT: a request field is out of range; see ``field`` / ``field_violations``."""


class ResourceExhaustedError(VqDiffusionError):
    """RESOURCE_EXHAUSTED: the server's queue is full; retry later."""


class UnavailableError(VqDiffusionError):
    """UNAVAILABLE: the server cannot be reached, or its model is loading or failed to load."""


class UnauthenticatedError(VqDiffusionError):
    """UNAUTHENTICATED: the server wants an API key or token (``Client(..., api_key=KEY)``) and got none, or an invalid one."""


class CancelledError(VqDiffusionError):
    """CANCELLED: the call was cancelled."""


class DeadlineExceededError(VqDiffusionError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class InternalError(VqDiffusionError):
    """INTERNAL: a failure inside the server; the message carries the request id of its logs."""


_BY_CODE: Dict[grpc.StatusCode, Type[VqDiffusionError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def parse_field_violations(status_details: bytes) -> List[FieldViolation]:
    """Decodes a serialized google.rpc.Status and returns the violations of its BadRequest details."""
    status = status_pb2.Status()
    status.ParseFromString(status_details)
    violations: List[FieldViolation] = []
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] != _BAD_REQUEST_TYPE:
            continue
        bad_request = status_pb2.BadRequest()
        bad_request.ParseFromString(detail.value)
        violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return violations


def from_rpc_error(error: grpc.RpcError) -> VqDiffusionError:
    """Maps a grpc.RpcError (as raised by grpc calls) to the matching VqDiffusionError subclass."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    code = code or grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    violations: List[FieldViolation] = []
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, (bytes, bytearray)):
            try:
                violations = parse_field_violations(bytes(value))
            except Exception:  # a malformed trailer must not hide the actual error
                violations = []
            break
    return _BY_CODE.get(code, VqDiffusionError)(code, message, violations)
