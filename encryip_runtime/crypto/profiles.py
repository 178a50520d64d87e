"""The two crypto profiles, one ``Profile`` object each.

Everything that differs between the profiles lives here: the scheme, the output layout
(paper: three one-hot blocks of width p = order + 1; secure: one slot per codeword of a
secret codebook), the transfer Φ / Φ⁻¹ and the training targets, the licensee variant
(paper: an output order inside the blocks; secure: a permuted codebook), how scalars are
written, the secure profile's format versions and the chance of a trigger matching.
Code asks the object (``profile_of(name or anything with a .profile)``) and never
compares profile names; adding a group means writing one class and registering it.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Group
from encryip_runtime.crypto.labels import HashLabelCodec, OffsetLabelCodec
from encryip_runtime.crypto.scheme import CSLite
from encryip_runtime.crypto.scheme_v2 import DEFAULT_SHIFT_RANGE, CSLiteV2, choose_width
from encryip_runtime.crypto.zp import ZpGroup, paper_prime

if TYPE_CHECKING:
    from encryip_runtime.transfer import CodebookTransfer, OneHotTransfer

__all__ = [
    "DEFAULT_SECURE_FORMAT",
    "PAPER",
    "PROFILES",
    "SECURE",
    "SECURE_FORMATS",
    "AnyScheme",
    "PaperProfile",
    "Profile",
    "SecureProfile",
    "make_scheme",
    "make_scheme_v2",
    "profile_of",
    "random_permutation",
]

#: Format versions of the secure profile: 1 (CS_lite as in the paper, still read and
#: served) and 2 (triggers a single key holder cannot tell from classes). New releases: 2.
SECURE_FORMATS: tuple[int, ...] = (1, 2)
DEFAULT_SECURE_FORMAT = 2


class AnyScheme(Protocol):
    """What every scheme (format v1 ``CSLite``, format v2 ``CSLiteV2``) offers; keys and
    public keys are the scheme's own types (narrow with ``isinstance`` where it matters)."""

    profile: str
    format_version: int

    @property
    def num_classes(self) -> int: ...
    @property
    def group(self) -> Group: ...
    @property
    def codec(self) -> Any: ...
    @property
    def ciphertext_size(self) -> int: ...
    @property
    def max_licensees(self) -> int: ...
    def enc(self, pk: Any, messages: Any) -> Any: ...
    def sampdist(self, pk: Any, cts: Any, rerandomizers: Any = None) -> Any: ...
    def prepare_codebook(self, codebook: Any) -> Any: ...
    def sampdist_codebook(self, pk: Any, prepared: Any, slots: Any) -> Any: ...
    def rerandomizers(self, pk: Any, count: int) -> Any: ...
    def dec(self, sk: Any, cts: Any) -> Any: ...
    def decrypt_labels(self, sk: Any, cts: Any) -> npt.NDArray[np.int64]: ...
    def check_key(self, pk: Any, sk: Any) -> None: ...
    def to_wire(self, cts: Any) -> npt.NDArray[np.uint8]: ...
    def from_wire(self, data: Any) -> Any: ...


def random_permutation(size: int) -> npt.NDArray[np.int64]:
    """A uniformly random permutation from the OS's CSPRNG (never numpy's RNG)."""
    items = list(range(size))
    secrets.SystemRandom().shuffle(items)
    return np.array(items, dtype=np.int64)


class Profile:
    """What one crypto profile decides. Subclasses set the class attributes and override
    the methods; instances are stateless singletons (``PAPER``, ``SECURE``)."""

    #: the profile's name in every file format ("profile": ...)
    name: ClassVar[str]
    #: the format versions this profile writes and reads, and the default for new releases
    formats: ClassVar[tuple[int, ...]] = (1,)
    default_format: ClassVar[int] = 1
    #: True: the outputs are slots of a secret codebook (the manifest has ``codebook``,
    #: a licensee variant permutes it and keys can rotate without retraining); False: the
    #: network emits the ciphertext's elements as one-hot blocks (``output_order``).
    uses_codebook: ClassVar[bool]
    #: a plain JSON integer is this profile's canonical way to write a scalar
    integer_scalars: ClassVar[bool] = False
    #: 64 hex digits (32 little-endian bytes) is this profile's canonical scalar encoding
    hex_scalars: ClassVar[bool] = False
    #: SampDist's rerandomizers are worth precomputing in a pool (a large group)
    pools_rerandomizers: ClassVar[bool] = False
    #: who can compute a licensee's key from the public data (``verify-key``'s wording)
    key_forgers: ClassVar[str]

    def __repr__(self) -> str:
        return f"<profile {self.name}>"

    def make_scheme(self, num_classes: int) -> CSLite:  # pragma: no cover - abstract
        """Format v1 CS_lite for ``num_classes`` classes."""
        raise NotImplementedError

    def check_format(self, version: int) -> None:
        """Raise ValueError unless this profile has format ``version``."""
        if version not in self.formats:
            known = " or ".join(str(v) for v in self.formats)
            raise ValueError(f"unknown {self.name} format {version} (expected {known})")

    def output_size(self, scheme: AnyScheme, num_triggers: int = 0) -> int:  # pragma: no cover
        """The number of network outputs for ``scheme`` with ``num_triggers`` triggers."""
        raise NotImplementedError

    def block_width(self, output_size: int) -> int | None:
        """The width of one one-hot block (paper: p), or None when outputs are slots."""
        return None

    def transfer(
        self,
        scheme: AnyScheme,
        *,
        codebook: Any = None,
        output_order: Any = None,
        codewords: Any = None,
    ) -> OneHotTransfer | CodebookTransfer:  # pragma: no cover - abstract
        """Φ / Φ⁻¹ for a model of this profile (codebook, or output order and codewords)."""
        raise NotImplementedError

    def licensee_permutation(self, output_size: int) -> npt.NDArray[np.int64]:
        """A fresh secret output order for one licensee's file."""
        return random_permutation(output_size)

    def message_space(self, scheme: AnyScheme) -> int:  # pragma: no cover - abstract
        """How many equally likely messages a Fake decrypts to (for the trigger chance)."""
        raise NotImplementedError

    def chance_per_trigger(self, scheme: AnyScheme) -> float:
        """Max over labels of P(label(Dec(sk, Fake)) == y): the message is uniform."""
        size = self.message_space(scheme)
        return -(-size // scheme.num_classes) / size


class PaperProfile(Profile):
    """The paper's Z_p^* with tiny p: insecure, for reproducing the paper only."""

    name = "paper"
    uses_codebook = False
    integer_scalars = True
    key_forgers = "anyone (the paper profile's group is tiny: discrete logs are a table look-up)"

    def make_scheme(self, num_classes: int) -> CSLite:
        return CSLite(ZpGroup(paper_prime(num_classes)), OffsetLabelCodec(num_classes), self.name)

    def output_size(self, scheme: AnyScheme, num_triggers: int = 0) -> int:
        return 3 * (scheme.group.order + 1)

    def block_width(self, output_size: int) -> int | None:
        return output_size // 3

    def transfer(
        self,
        scheme: AnyScheme,
        *,
        codebook: Any = None,
        output_order: Any = None,
        codewords: Any = None,
    ) -> OneHotTransfer:
        from encryip_runtime.transfer import OneHotTransfer

        return OneHotTransfer(scheme.group.order + 1, output_order, codewords)

    def licensee_permutation(self, output_size: int) -> npt.NDArray[np.int64]:
        """Positions shuffled within each of the three blocks: the file keeps the layout."""
        p = output_size // 3
        return np.concatenate([b * p + random_permutation(p) for b in range(3)])

    def message_space(self, scheme: AnyScheme) -> int:
        # label = (e - 1) mod K for e uniform in 1..p-1
        return int(scheme.group.order)


class SecureProfile(Profile):
    """ristretto255 (RFC 9496) with a secret codebook; formats 1 (CS_lite) and 2."""

    name = "secure"
    formats = SECURE_FORMATS
    default_format = DEFAULT_SECURE_FORMAT
    uses_codebook = True
    hex_scalars = True
    pools_rerandomizers = True
    key_forgers = (
        "the owner (t is in the vault) or two colluding licensees (t = (a1 - a2)/(b2 - b1))"
    )

    def make_scheme(self, num_classes: int) -> CSLite:
        """The backend is chosen here, once: the native C tables when they are built,
        unless ``ENCRYIP_NATIVE=0``; libsodium otherwise (``scheme.group.backend``)."""
        from encryip_runtime.crypto import r255_native
        from encryip_runtime.crypto.ristretto import Ristretto255

        native = r255_native.available() and not r255_native.disabled_by_env()
        return CSLite(Ristretto255(native=native), HashLabelCodec(num_classes), self.name)

    def output_size(self, scheme: AnyScheme, num_triggers: int = 0) -> int:
        return scheme.num_classes + num_triggers

    def transfer(
        self,
        scheme: AnyScheme,
        *,
        codebook: Any = None,
        output_order: Any = None,
        codewords: Any = None,
    ) -> CodebookTransfer:
        from encryip_runtime.transfer import CodebookTransfer

        if codebook is None:
            raise ValueError("the secure profile's transfer needs the codebook")
        return CodebookTransfer(codebook)

    def message_space(self, scheme: AnyScheme) -> int:
        # label = SHA-256(M) mod K for M uniform, SHA-256 modelled as a random function
        return 2**256


PAPER = PaperProfile()
SECURE = SecureProfile()
_BY_NAME: dict[str, Profile] = {p.name: p for p in (PAPER, SECURE)}
PROFILES: tuple[str, ...] = tuple(_BY_NAME)


def profile_of(what: str | Any) -> Profile:
    """The ``Profile`` of a name, or of anything with a ``profile`` name (a scheme, a
    manifest, a vault, a plan, a loaded model)."""
    if isinstance(what, Profile):
        return what
    name = what if isinstance(what, str) else getattr(what, "profile", None)
    try:
        return _BY_NAME[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown profile {name!r}: expected one of {', '.join(PROFILES)}"
        ) from None


def make_scheme(profile: str, num_classes: int) -> CSLite:
    """CS_lite for ``profile`` ("paper": Z_p^*, insecure; "secure": ristretto255)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return profile_of(profile).make_scheme(num_classes)


def make_scheme_v2(
    num_classes: int, num_licensees: int, shift_range: int = DEFAULT_SHIFT_RANGE
) -> CSLiteV2:
    """Secure format v2 for K classes, sized for ``num_licensees`` (width n from K)."""
    return CSLiteV2(num_classes, choose_width(num_classes, num_licensees), shift_range)
