"""A pure-Python model of ristretto255 (RFC 9496), written from the RFC, no libsodium.

Slow and variable-time: for differential tests only. It implements exactly what the
runtime relies on: decoding (§4.3.1, with every rejection rule), encoding (§4.3.2),
the group operation and scalar multiplication (affine twisted Edwards, a = -1), and
the generator. Field elements are Python ints mod P.
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 mod P
assert SQRT_M1 * SQRT_M1 % P == P - 1

Point = tuple[int, int]  # affine (x, y) on -x^2 + y^2 = 1 + d x^2 y^2
IDENTITY: Point = (0, 1)


def is_negative(x: int) -> bool:
    """RFC 9496 §4.1: negative = the canonical encoding's least significant bit is 1."""
    return (x % P) & 1 == 1


def ct_abs(x: int) -> int:
    x %= P
    return (P - x) % P if is_negative(x) else x


def sqrt_ratio_m1(u: int, v: int) -> tuple[bool, int]:
    """RFC 9496 §4.2: (was_square, r) with r = +sqrt(u/v) or +sqrt(i*u/v), r >= 0."""
    u %= P
    v %= P
    v3 = v * v % P * v % P
    v7 = v3 * v3 % P * v % P
    r = u * v3 % P * pow(u * v7 % P, (P - 5) // 8, P) % P
    check = v * r % P * r % P
    correct_sign = check == u
    flipped_sign = check == (-u) % P
    flipped_sign_i = check == (-u) * SQRT_M1 % P
    if flipped_sign or flipped_sign_i:
        r = r * SQRT_M1 % P
    return correct_sign or flipped_sign, ct_abs(r)


_, INVSQRT_A_MINUS_D = sqrt_ratio_m1(1, (-1 - D) % P)


def decode(data: bytes) -> Point | None:
    """RFC 9496 §4.3.1; None for every encoding the RFC rejects."""
    if len(data) != 32:
        return None
    s = int.from_bytes(data, "little")
    if s >= P or is_negative(s):  # non-canonical (incl. s in [p, 2^255) and the top bit)
        return None
    ss = s * s % P
    u1 = (1 - ss) % P
    u2 = (1 + ss) % P
    u2_sqr = u2 * u2 % P
    v = (-(D * u1 % P * u1) - u2_sqr) % P
    was_square, invsqrt = sqrt_ratio_m1(1, v * u2_sqr % P)
    den_x = invsqrt * u2 % P
    den_y = invsqrt * den_x % P * v % P
    x = ct_abs(2 * s * den_x)
    y = u1 * den_y % P
    t = x * y % P
    if not was_square or is_negative(t) or y == 0:
        return None
    return x, y


def encode(pt: Point) -> bytes:
    """RFC 9496 §4.3.2 from affine coordinates (Z = 1, T = x*y)."""
    x0, y0 = pt
    z0, t0 = 1, x0 * y0 % P
    u1 = (z0 + y0) * (z0 - y0) % P
    u2 = x0 * y0 % P
    _, invsqrt = sqrt_ratio_m1(1, u1 * u2 % P * u2 % P)
    den1 = invsqrt * u1 % P
    den2 = invsqrt * u2 % P
    z_inv = den1 * den2 % P * t0 % P
    ix0 = x0 * SQRT_M1 % P
    iy0 = y0 * SQRT_M1 % P
    enchanted_denominator = den1 * INVSQRT_A_MINUS_D % P
    rotate = is_negative(t0 * z_inv)
    x, y = (iy0, ix0) if rotate else (x0, y0)
    den_inv = enchanted_denominator if rotate else den2
    if is_negative(x * z_inv):
        y = (-y) % P
    s = ct_abs(den_inv * (z0 - y))
    return s.to_bytes(32, "little")


def add(a: Point, b: Point) -> Point:
    """Twisted Edwards addition (a = -1), complete for this curve."""
    x1, y1 = a
    x2, y2 = b
    k = D * x1 % P * x2 % P * y1 % P * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow((1 + k) % P, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow((1 - k) % P, P - 2, P) % P
    return x3, y3


def neg(a: Point) -> Point:
    return (-a[0]) % P, a[1]


Ext = tuple[int, int, int, int]


def _ext_add(a: Ext, b: Ext) -> Ext:
    """Extended coordinates (X:Y:Z:T), "add-2008-hwcd-3" for a = -1 (no inversion)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = t1 * 2 * D % P * t2 % P
    dd = z1 * 2 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % P, g * h % P, f * g % P, e * h % P


def mul(k: int, a: Point) -> Point:
    """k * a by double-and-add in extended coordinates (k taken mod L)."""
    k %= L
    acc: Ext = (0, 1, 1, 0)
    cur: Ext = (a[0], a[1], 1, a[0] * a[1] % P)
    while k:
        if k & 1:
            acc = _ext_add(acc, cur)
        cur = _ext_add(cur, cur)
        k >>= 1
    x, y, z, _ = acc
    z_inv = pow(z, P - 2, P)
    return x * z_inv % P, y * z_inv % P


GENERATOR_BYTES = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
_g = decode(GENERATOR_BYTES)
assert _g is not None
GENERATOR: Point = _g


def element(data: bytes) -> Point:
    """Decode or raise ValueError."""
    pt = decode(data)
    if pt is None:
        raise ValueError(f"not a ristretto255 encoding: {data.hex()}")
    return pt
