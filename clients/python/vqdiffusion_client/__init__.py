"""Python client of VqDiffusion.Grpc (vqdiffusion.v1.VqDiffusionService).

    from vqdiffusion_client import Client, save_images

    with Client("http://127.0.0.1:50051") as client:  # api_key=..., https:// + root_certificates=...
        images = client.generate_images("a photo of a cat", num_inference_steps=50, seed=0)
        save_images(images, "out")
"""

from ._generated.vqdiffusion.v1 import vqdiffusion_pb2 as pb
from .client import DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH, Client, GenerateStream, parse_target
from .errors import (
    CancelledError,
    DeadlineExceededError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    VqDiffusionError,
    from_rpc_error,
)
from .events import (
    Completed,
    Event,
    Image,
    Progress,
    Queued,
    Snapshot,
    SnapshotOptions,
    Started,
    save_images,
)

__version__ = "0.1.0"

__all__ = [
    "CancelledError",
    "Client",
    "Completed",
    "DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH",
    "DeadlineExceededError",
    "Event",
    "FieldViolation",
    "GenerateStream",
    "Image",
    "InternalError",
    "InvalidArgumentError",
    "Progress",
    "Queued",
    "ResourceExhaustedError",
    "Snapshot",
    "SnapshotOptions",
    "Started",
    "UnauthenticatedError",
    "UnavailableError",
    "VqDiffusionError",
    "from_rpc_error",
    "parse_target",
    "pb",
    "save_images",
]
