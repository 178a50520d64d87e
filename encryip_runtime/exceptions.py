"""Exception types of the EncryIP runtime. Catch ``EncryIPError`` for all of them."""

from __future__ import annotations

__all__ = [
    "EncodingError",
    "EncryIPError",
    "FormatError",
    "InferenceError",
    "InputError",
    "InvalidKeyError",
    "LicenseeLimitError",
    "ModelError",
    "SecretMaterialError",
]


class EncryIPError(Exception):
    """Base class of every error raised on purpose by this package."""


class EncodingError(EncryIPError, ValueError):
    """Bytes or numbers that are not a valid encoding (wrong length, non-canonical, off-group)."""


class InvalidKeyError(EncryIPError):
    """A secret key that does not match the public key (``g1^a * g2^b != h``)."""


class LicenseeLimitError(EncryIPError):
    """More licensees than the group allows (paper profile: at most p - 1)."""


class FormatError(EncryIPError):
    """A release file (manifest, key, vault) that fails validation.

    ``path`` is the file and ``field`` the JSON path of the offending value, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        where = ""
        if path is not None:
            where = f"{path}"
            if field is not None:
                where += f": field '{field}'"
            where += ": "
        elif field is not None:
            where = f"field '{field}': "
        super().__init__(where + message)


class SecretMaterialError(EncryIPError):
    """Secret material (a licensee key or the vault) found where it must never be."""


class ModelError(EncryIPError):
    """An ONNX model that cannot be loaded or does not match its manifest."""


class InputError(EncryIPError, ValueError):
    """A request tensor with the wrong dtype, shape, size or values."""


class InferenceError(EncryIPError):
    """onnxruntime failed while running a batch."""
