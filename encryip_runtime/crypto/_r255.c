/*
 * _r255.c - ristretto255 (RFC 9496) fixed-base scalar multiplication for the
 * secure profile's SampDist / re-randomisers.
 *
 * Why this exists: a SampDist row is r*g1, r*g2, r*h plus three additions.
 * libsodium has a precomputed table only for its own base point and decodes +
 * encodes on every exported add, so the row costs three variable-base scalar
 * multiplications and six square roots more than needed. Here every public base
 * gets its own table (signed radix 16, 64 windows x 8 multiples, affine Niels
 * form), so r*base is 64 mixed additions and no doublings.
 *
 * Constant time in the secret scalar r: the recoding is branch-free, every
 * window's lookup reads all 8 entries and selects with masks, the sign is
 * applied with a conditional swap/negation, and the field code has no
 * data-dependent branches or table indices. Only public data (the encodings of
 * the bases and of the ciphertexts) decides the early returns on invalid input.
 *
 * Field GF(2^255-19): 5 limbs of 51 bits, products in unsigned __int128.
 * "Reduced" below means every limb < 2^51 + 2^18; fe_mul/fe_sq accept limbs up
 * to 2^54, so the sum of a few reduced values may be multiplied directly.
 *
 * The library is plain C, called through ctypes (which releases the GIL for the
 * whole call). With -DEIP_PYMODULE it also defines an empty CPython module so
 * that setuptools can build and install it as an extension.
 */
#ifdef EIP_PYMODULE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__SIZEOF_INT128__)
#error "_r255.c needs unsigned __int128 (64-bit gcc or clang)"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EIP_EXPORT __attribute__((visibility("default")))
#else
#define EIP_EXPORT
#endif

/* Bumped whenever an exported signature or the table layout changes; the Python
 * loader refuses a stale build instead of calling it with the wrong arguments. */
#define EIP_ABI_VERSION 1

__extension__ typedef unsigned __int128 u128; /* gcc and clang */
typedef uint64_t fe[5];

#define MASK51 ((uint64_t)0x7ffffffffffffULL)

/* Hides a value from the optimiser, so that masks built from secret bits stay
 * masks (no branch or conditional jump is derived from them). */
static inline uint64_t value_barrier(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    __asm__ volatile("" : "+r"(x));
#endif
    return x;
}

/* ------------------------------------------------------------ constants */

static const fe FE_ONE = {1, 0, 0, 0, 0};
/* d = -121665/121666 */
static const fe FE_D = {0x34dca135978a3ULL, 0x1a8283b156ebdULL, 0x5e7a26001c029ULL,
                        0x739c663a03cbbULL, 0x52036cee2b6ffULL};
/* 2d */
static const fe FE_D2 = {0x69b9426b2f159ULL, 0x35050762add7aULL, 0x3cf44c0038052ULL,
                         0x6738cc7407977ULL, 0x2406d9dc56dffULL};
/* sqrt(-1), the RFC 9496 choice */
static const fe FE_SQRT_M1 = {0x61b274a0ea0b0ULL, 0x0d5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
                              0x78595a6804c9eULL, 0x2b8324804fc1dULL};
/* 1/sqrt(a-d), the RFC 9496 choice */
static const fe FE_INVSQRT_A_MINUS_D = {0x0fdaa805d40eaULL, 0x2eb482e57d339ULL,
                                        0x007610274bc58ULL, 0x6510b613dc8ffULL,
                                        0x786c8905cfaffULL};

/* ------------------------------------------------------------ field */

static inline void fe_copy(fe h, const fe f)
{
    h[0] = f[0]; h[1] = f[1]; h[2] = f[2]; h[3] = f[3]; h[4] = f[4];
}

static inline void fe_zero(fe h)
{
    h[0] = h[1] = h[2] = h[3] = h[4] = 0;
}

static inline void fe_one(fe h)
{
    fe_copy(h, FE_ONE);
}

/* One carry pass: any limbs < 2^64 -> reduced. */
static inline void fe_carry(fe h)
{
    uint64_t c;
    c = h[0] >> 51; h[0] &= MASK51; h[1] += c;
    c = h[1] >> 51; h[1] &= MASK51; h[2] += c;
    c = h[2] >> 51; h[2] &= MASK51; h[3] += c;
    c = h[3] >> 51; h[3] &= MASK51; h[4] += c;
    c = h[4] >> 51; h[4] &= MASK51; h[0] += c * 19;
}

/* No carry: reduced + reduced < 2^53, still a valid fe_mul input. */
static inline void fe_add(fe h, const fe f, const fe g)
{
    h[0] = f[0] + g[0]; h[1] = f[1] + g[1]; h[2] = f[2] + g[2];
    h[3] = f[3] + g[3]; h[4] = f[4] + g[4];
}

/* f - g + 4p, then carried: g may be any limbs <= 2^53 - 76 (a sum of two
 * reduced values), the result is reduced. */
static inline void fe_sub(fe h, const fe f, const fe g)
{
    h[0] = (f[0] + 0x1fffffffffffb4ULL) - g[0];
    h[1] = (f[1] + 0x1ffffffffffffcULL) - g[1];
    h[2] = (f[2] + 0x1ffffffffffffcULL) - g[2];
    h[3] = (f[3] + 0x1ffffffffffffcULL) - g[3];
    h[4] = (f[4] + 0x1ffffffffffffcULL) - g[4];
    fe_carry(h);
}

static inline void fe_neg(fe h, const fe f)
{
    static const fe zero = {0, 0, 0, 0, 0};
    fe_sub(h, zero, f);
}

/* h = the 5 wide limbs of a product, carried down to 51 bits (+ a small excess in h1). */
static inline void fe_carry_wide(fe h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4)
{
    uint64_t h0, h1, h2, h3, h4, c;

    r1 += (uint64_t)(r0 >> 51); h0 = (uint64_t)r0 & MASK51;
    r2 += (uint64_t)(r1 >> 51); h1 = (uint64_t)r1 & MASK51;
    r3 += (uint64_t)(r2 >> 51); h2 = (uint64_t)r2 & MASK51;
    r4 += (uint64_t)(r3 >> 51); h3 = (uint64_t)r3 & MASK51;
    c = (uint64_t)(r4 >> 51);   h4 = (uint64_t)r4 & MASK51;
    h0 += c * 19;
    h1 += h0 >> 51; h0 &= MASK51;
    h[0] = h0; h[1] = h1; h[2] = h2; h[3] = h3; h[4] = h4;
}

/* h = f * g; inputs with limbs < 2^54, output reduced. */
static inline void fe_mul(fe h, const fe f, const fe g)
{
    const uint64_t f0 = f[0], f1 = f[1], f2 = f[2], f3 = f[3], f4 = f[4];
    const uint64_t g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4];
    const uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
    u128 r0, r1, r2, r3, r4;

    r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 + (u128)f3 * g2_19 +
         (u128)f4 * g1_19;
    r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 + (u128)f3 * g3_19 +
         (u128)f4 * g2_19;
    r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 +
         (u128)f4 * g3_19;
    r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 + (u128)f4 * g4_19;
    r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 + (u128)f4 * g0;

    fe_carry_wide(h, r0, r1, r2, r3, r4);
}

/* h = f^2; same bounds as fe_mul. */
static inline void fe_sq(fe h, const fe f)
{
    const uint64_t f0 = f[0], f1 = f[1], f2 = f[2], f3 = f[3], f4 = f[4];
    const uint64_t d0 = 2 * f0, d1 = 2 * f1, d2 = 2 * f2;
    const uint64_t f3_19 = 19 * f3, f4_19 = 19 * f4, d3_19 = 2 * f3_19;
    u128 r0, r1, r2, r3, r4;

    r0 = (u128)f0 * f0 + (u128)d1 * f4_19 + (u128)d2 * f3_19;
    r1 = (u128)d0 * f1 + (u128)d2 * f4_19 + (u128)f3 * f3_19;
    r2 = (u128)d0 * f2 + (u128)f1 * f1 + (u128)d3_19 * f4;
    r3 = (u128)d0 * f3 + (u128)d1 * f2 + (u128)f4 * f4_19;
    r4 = (u128)d0 * f4 + (u128)d1 * f3 + (u128)f2 * f2;

    fe_carry_wide(h, r0, r1, r2, r3, r4);
}

/* h = f^(2^n), n >= 1 */
static inline void fe_sqn(fe h, const fe f, int n)
{
    fe_sq(h, f);
    while (--n > 0) {
        fe_sq(h, h);
    }
}

static inline uint64_t load64_le(const uint8_t *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline void store64_le(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(x >> (8 * i));
    }
}

/* The low 255 bits of s (bit 255 is ignored; callers that care check it). */
static void fe_frombytes(fe h, const uint8_t s[32])
{
    const uint64_t w0 = load64_le(s), w1 = load64_le(s + 8);
    const uint64_t w2 = load64_le(s + 16), w3 = load64_le(s + 24);
    h[0] = w0 & MASK51;
    h[1] = ((w0 >> 51) | (w1 << 13)) & MASK51;
    h[2] = ((w1 >> 38) | (w2 << 26)) & MASK51;
    h[3] = ((w2 >> 25) | (w3 << 39)) & MASK51;
    h[4] = (w3 >> 12) & MASK51;
}

/* Canonical little-endian encoding of f mod p (any limbs < 2^64). */
static void fe_tobytes(uint8_t s[32], const fe f)
{
    fe h;
    uint64_t q;
    fe_copy(h, f);
    fe_carry(h);
    fe_carry(h);
    /* Now h < 2^255 + 19 < 2p; q = 1 exactly when h >= p (h + 19 >= 2^255). */
    q = (h[0] + 19) >> 51;
    q = (h[1] + q) >> 51;
    q = (h[2] + q) >> 51;
    q = (h[3] + q) >> 51;
    q = (h[4] + q) >> 51;
    /* h - q*p = h + 19q - q*2^255: add 19q, carry, drop bit 255. */
    h[0] += 19 * q;
    h[1] += h[0] >> 51; h[0] &= MASK51;
    h[2] += h[1] >> 51; h[1] &= MASK51;
    h[3] += h[2] >> 51; h[2] &= MASK51;
    h[4] += h[3] >> 51; h[3] &= MASK51;
    h[4] &= MASK51;
    store64_le(s, h[0] | (h[1] << 51));
    store64_le(s + 8, (h[1] >> 13) | (h[2] << 38));
    store64_le(s + 16, (h[2] >> 26) | (h[3] << 25));
    store64_le(s + 24, (h[3] >> 39) | (h[4] << 12));
}

/* 1 if a == b (32 bytes), else 0; no early exit. */
static inline int bytes_eq32(const uint8_t a[32], const uint8_t b[32])
{
    uint32_t d = 0;
    for (int i = 0; i < 32; i++) {
        d |= (uint32_t)(a[i] ^ b[i]);
    }
    return (int)(((d - 1) >> 31) & 1);
}

static inline int fe_is_zero(const fe f)
{
    static const uint8_t zero[32] = {0};
    uint8_t s[32];
    fe_tobytes(s, f);
    return bytes_eq32(s, zero);
}

/* RFC 9496 IS_NEGATIVE: the low bit of the canonical encoding. */
static inline int fe_is_negative(const fe f)
{
    uint8_t s[32];
    fe_tobytes(s, f);
    return s[0] & 1;
}

static inline int fe_eq(const fe f, const fe g)
{
    uint8_t a[32], b[32];
    fe_tobytes(a, f);
    fe_tobytes(b, g);
    return bytes_eq32(a, b);
}

/* f = g if flag (0 or 1), without branching on flag. */
static inline void fe_cmov(fe f, const fe g, int flag)
{
    const uint64_t m = value_barrier((uint64_t)0 - (uint64_t)(flag & 1));
    f[0] ^= m & (f[0] ^ g[0]); f[1] ^= m & (f[1] ^ g[1]); f[2] ^= m & (f[2] ^ g[2]);
    f[3] ^= m & (f[3] ^ g[3]); f[4] ^= m & (f[4] ^ g[4]);
}

static inline void fe_cswap(fe f, fe g, int flag)
{
    const uint64_t m = value_barrier((uint64_t)0 - (uint64_t)(flag & 1));
    for (int i = 0; i < 5; i++) {
        const uint64_t x = m & (f[i] ^ g[i]);
        f[i] ^= x;
        g[i] ^= x;
    }
}

/* f = -f if flag */
static inline void fe_cneg(fe f, int flag)
{
    fe n;
    fe_neg(n, f);
    fe_cmov(f, n, flag);
}

/* RFC 9496 CT_ABS */
static inline void fe_abs(fe h, const fe f)
{
    fe_copy(h, f);
    fe_cneg(h, fe_is_negative(f));
}

/* z^(2^250 - 1), and z^11 on the side (shared by invert and pow22523). */
static void fe_pow2_250_1(fe out, fe z11, const fe z)
{
    fe t0, t1, t2, z9;
    fe_sq(t0, z);            /* z^2 */
    fe_sqn(t1, t0, 2);       /* z^8 */
    fe_mul(z9, z, t1);       /* z^9 */
    fe_mul(z11, t0, z9);     /* z^11 */
    fe_sq(t0, z11);          /* z^22 */
    fe_mul(t0, z9, t0);      /* z^31 = z^(2^5 - 1) */
    fe_sqn(t1, t0, 5);
    fe_mul(t0, t1, t0);      /* 2^10 - 1 */
    fe_sqn(t1, t0, 10);
    fe_mul(t1, t1, t0);      /* 2^20 - 1 */
    fe_sqn(t2, t1, 20);
    fe_mul(t1, t2, t1);      /* 2^40 - 1 */
    fe_sqn(t1, t1, 10);
    fe_mul(t0, t1, t0);      /* 2^50 - 1 */
    fe_sqn(t1, t0, 50);
    fe_mul(t1, t1, t0);      /* 2^100 - 1 */
    fe_sqn(t2, t1, 100);
    fe_mul(t1, t2, t1);      /* 2^200 - 1 */
    fe_sqn(t1, t1, 50);
    fe_mul(out, t1, t0);     /* 2^250 - 1 */
}

/* z^(p-2) = z^(2^255 - 21): 1/z (0 for z = 0). */
static void fe_invert(fe out, const fe z)
{
    fe t, z11;
    fe_pow2_250_1(t, z11, z);
    fe_sqn(t, t, 5);         /* 2^255 - 32 */
    fe_mul(out, t, z11);     /* 2^255 - 21 */
}

/* z^((p-5)/8) = z^(2^252 - 3) */
static void fe_pow22523(fe out, const fe z)
{
    fe t, z11;
    fe_pow2_250_1(t, z11, z);
    fe_sqn(t, t, 2);         /* 2^252 - 4 */
    fe_mul(out, t, z);       /* 2^252 - 3 */
}

/* RFC 9496 SQRT_RATIO_M1(u, v): r = the non-negative sqrt(u/v) or sqrt(i*u/v);
 * returns was_square. */
static int fe_sqrt_ratio_m1(fe r, const fe u, const fe v)
{
    fe v3, v7, t, check, u_neg, u_neg_i, r_prime;
    int correct, flipped, flipped_i;

    fe_sq(v3, v);
    fe_mul(v3, v3, v);       /* v^3 */
    fe_sq(v7, v3);
    fe_mul(v7, v7, v);       /* v^7 */
    fe_mul(t, u, v7);
    fe_pow22523(t, t);       /* (u v^7)^((p-5)/8) */
    fe_mul(r, u, v3);
    fe_mul(r, r, t);         /* (u v^3) (u v^7)^((p-5)/8) */

    fe_sq(check, r);
    fe_mul(check, check, v);
    fe_neg(u_neg, u);
    fe_mul(u_neg_i, u_neg, FE_SQRT_M1);
    correct = fe_eq(check, u);
    flipped = fe_eq(check, u_neg);
    flipped_i = fe_eq(check, u_neg_i);

    fe_mul(r_prime, r, FE_SQRT_M1);
    fe_cmov(r, r_prime, flipped | flipped_i);
    fe_abs(r, r);
    return correct | flipped;
}

/* ------------------------------------------------------------ edwards25519 */

/* Extended coordinates: x = X/Z, y = Y/Z, x*y = T/Z. */
typedef struct {
    fe X, Y, Z, T;
} ge_p3;

/* Affine Niels form of (x, y): y+x, y-x, 2d*x*y (all reduced). */
typedef struct {
    fe ypx, ymx, xy2d;
} ge_niels;

static inline void ge_identity(ge_p3 *p)
{
    fe_zero(p->X);
    fe_one(p->Y);
    fe_one(p->Z);
    fe_zero(p->T);
}

/* r = p + q (add-2008-hwcd-3, a = -1; complete on this curve, so it also doubles
 * and handles the identity). */
static void ge_add(ge_p3 *r, const ge_p3 *p, const ge_p3 *q)
{
    fe a, b, c, d, e, f, g, h, t;
    fe_sub(a, p->Y, p->X);
    fe_sub(t, q->Y, q->X);
    fe_mul(a, a, t);
    fe_add(b, p->Y, p->X);
    fe_add(t, q->Y, q->X);
    fe_mul(b, b, t);
    fe_mul(c, p->T, q->T);
    fe_mul(c, c, FE_D2);
    fe_mul(d, p->Z, q->Z);
    fe_add(d, d, d);
    fe_sub(e, b, a);
    fe_sub(f, d, c);
    fe_add(g, d, c);
    fe_add(h, b, a);
    fe_mul(r->X, e, f);
    fe_mul(r->Y, g, h);
    fe_mul(r->T, e, h);
    fe_mul(r->Z, f, g);
}

/* r = p + q with q in affine Niels form (madd-2008-hwcd-3, 7 multiplications
 * + the T output). */
static inline void ge_madd(ge_p3 *r, const ge_p3 *p, const ge_niels *q)
{
    fe a, b, c, d, e, f, g, h;
    fe_sub(a, p->Y, p->X);
    fe_mul(a, a, q->ymx);
    fe_add(b, p->Y, p->X);
    fe_mul(b, b, q->ypx);
    fe_mul(c, p->T, q->xy2d);
    fe_add(d, p->Z, p->Z);
    fe_sub(e, b, a);
    fe_sub(f, d, c);
    fe_add(g, d, c);
    fe_add(h, b, a);
    fe_mul(r->X, e, f);
    fe_mul(r->Y, g, h);
    fe_mul(r->T, e, h);
    fe_mul(r->Z, f, g);
}

static inline void ge_neg(ge_p3 *p)
{
    fe_neg(p->X, p->X);
    fe_neg(p->T, p->T);
}

/* ------------------------------------------------------------ ristretto255 */

/* RFC 9496 §4.3.1 DECODE. 0 and the point, or -1 for an invalid encoding. The
 * rules match libsodium's crypto_core_ristretto255_is_valid_point, plus the
 * RFC's top-bit rule (libsodium 1.0.18 ignores bit 255). Branches here depend
 * only on the (public) encoding. */
static int r255_decode(ge_p3 *p, const uint8_t s[32])
{
    uint8_t canon[32];
    fe sf, ss, u1, u2, u2_sqr, v, t, invsqrt, den_x, den_y, x, y;
    int was_square;

    if (s[31] & 0x80) {
        return -1;
    }
    fe_frombytes(sf, s);
    fe_tobytes(canon, sf);
    if (!bytes_eq32(canon, s) || (s[0] & 1)) {
        return -1; /* s >= p, or s negative */
    }
    fe_sq(ss, sf);
    fe_sub(u1, FE_ONE, ss);              /* 1 - s^2 */
    fe_add(u2, FE_ONE, ss);              /* 1 + s^2 */
    fe_sq(u2_sqr, u2);
    fe_sq(t, u1);
    fe_mul(t, t, FE_D);
    fe_neg(t, t);
    fe_sub(v, t, u2_sqr);                /* -(d u1^2) - u2^2 */
    fe_mul(t, v, u2_sqr);
    was_square = fe_sqrt_ratio_m1(invsqrt, FE_ONE, t);
    fe_mul(den_x, invsqrt, u2);
    fe_mul(den_y, invsqrt, den_x);
    fe_mul(den_y, den_y, v);
    fe_add(x, sf, sf);
    fe_mul(x, x, den_x);
    fe_abs(x, x);                        /* |2 s den_x| */
    fe_mul(y, u1, den_y);
    fe_mul(t, x, y);
    if (!was_square || fe_is_negative(t) || fe_is_zero(y)) {
        return -1;
    }
    fe_copy(p->X, x);
    fe_copy(p->Y, y);
    fe_one(p->Z);
    fe_copy(p->T, t);
    return 0;
}

/* RFC 9496 §4.3.2 ENCODE (constant time). */
static void r255_encode(uint8_t s[32], const ge_p3 *p)
{
    fe u1, u2, t, invsqrt, den1, den2, z_inv, ix, iy, ench, x, y, den_inv;
    int rotate;

    fe_add(t, p->Z, p->Y);
    fe_sub(u1, p->Z, p->Y);
    fe_mul(u1, u1, t);                   /* (Z + Y)(Z - Y) */
    fe_mul(u2, p->X, p->Y);
    fe_sq(t, u2);
    fe_mul(t, t, u1);
    (void)fe_sqrt_ratio_m1(invsqrt, FE_ONE, t);
    fe_mul(den1, invsqrt, u1);
    fe_mul(den2, invsqrt, u2);
    fe_mul(z_inv, den1, den2);
    fe_mul(z_inv, z_inv, p->T);
    fe_mul(ix, p->X, FE_SQRT_M1);
    fe_mul(iy, p->Y, FE_SQRT_M1);
    fe_mul(ench, den1, FE_INVSQRT_A_MINUS_D);
    fe_mul(t, p->T, z_inv);
    rotate = fe_is_negative(t);
    fe_copy(x, p->X);
    fe_copy(y, p->Y);
    fe_cmov(x, iy, rotate);
    fe_cmov(y, ix, rotate);
    fe_copy(den_inv, den2);
    fe_cmov(den_inv, ench, rotate);
    fe_mul(t, x, z_inv);
    fe_cneg(y, fe_is_negative(t));
    fe_sub(t, p->Z, y);
    fe_mul(t, den_inv, t);
    fe_abs(t, t);
    fe_tobytes(s, t);
}

/* ------------------------------------------------------------ fixed-base tables */

#define EIP_WINDOWS 64
#define EIP_MULTS 8
#define EIP_TABLE_MAGIC 0x3532327274706965ULL /* "eiptr255" */

/* e[i][j] = (j+1) * 16^i * P */
typedef struct {
    uint64_t magic;
    uint64_t reserved;
    ge_niels e[EIP_WINDOWS][EIP_MULTS];
} eip_table;

static inline int table_ok(const void *t)
{
    return t != NULL && ((const eip_table *)t)->magic == EIP_TABLE_MAGIC;
}

/* 1 if a == b for small non-negative ints (< 2^31), else 0, without branching. */
static inline int ct_eq_small(uint32_t a, uint32_t b)
{
    return (int)((((a ^ b) - 1U) >> 31) & 1U);
}

static inline void niels_cmov(ge_niels *t, const ge_niels *u, int flag)
{
    fe_cmov(t->ypx, u->ypx, flag);
    fe_cmov(t->ymx, u->ymx, flag);
    fe_cmov(t->xy2d, u->xy2d, flag);
}

/* t = b * (window entry), b in [-8, 8]: reads all 8 entries, selects by mask,
 * then negates by swapping y+x / y-x and negating 2dxy under a mask. */
static inline void table_select(ge_niels *t, const ge_niels row[EIP_MULTS], int8_t b)
{
    const uint32_t bneg = ((uint32_t)(int32_t)b >> 31) & 1U;
    const uint32_t babs = (uint32_t)((int32_t)b - (((-(int32_t)bneg) & (int32_t)b) * 2));
    fe_one(t->ypx);
    fe_one(t->ymx);
    fe_zero(t->xy2d);
    for (uint32_t j = 0; j < EIP_MULTS; j++) {
        niels_cmov(t, &row[j], ct_eq_small(babs, j + 1));
    }
    fe_cswap(t->ypx, t->ymx, (int)bneg);
    fe_cneg(t->xy2d, (int)bneg);
}

static void secure_wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--) {
        *v++ = 0;
    }
}

/* r = k * P for the table's P; k is 32 little-endian bytes, bit 255 ignored
 * (like libsodium's scalarmult). Signed radix 16: k = sum e_i 16^i with
 * e_i in [-8, 8), e_63 in [0, 8]. */
static void fixed_mul(ge_p3 *r, const eip_table *tab, const uint8_t k[32])
{
    int8_t e[EIP_WINDOWS];
    int8_t carry = 0;
    ge_niels t;

    for (int i = 0; i < 32; i++) {
        const uint8_t ki = (i == 31) ? (uint8_t)(k[i] & 0x7f) : k[i];
        e[2 * i] = (int8_t)(ki & 15);
        e[2 * i + 1] = (int8_t)(ki >> 4);
    }
    for (int i = 0; i < EIP_WINDOWS - 1; i++) {
        e[i] = (int8_t)(e[i] + carry);
        carry = (int8_t)((e[i] + 8) >> 4); /* e[i] + 8 >= 0: no signed shift */
        e[i] = (int8_t)(e[i] - carry * 16);
    }
    e[EIP_WINDOWS - 1] = (int8_t)(e[EIP_WINDOWS - 1] + carry);

    ge_identity(r);
    for (int i = 0; i < EIP_WINDOWS; i++) {
        table_select(&t, tab->e[i], e[i]);
        ge_madd(r, r, &t);
    }
    secure_wipe(e, sizeof e);
    secure_wipe(&t, sizeof t);
}

/* ------------------------------------------------------------ exported API */

EIP_EXPORT int eip_abi_version(void)
{
    return EIP_ABI_VERSION;
}

EIP_EXPORT size_t eip_table_bytes(void)
{
    return sizeof(eip_table);
}

/* Build the table for the point encoded in p (the caller provides
 * eip_table_bytes() bytes, 8-byte aligned). 0 ok, -1 invalid encoding. */
EIP_EXPORT int eip_table_init(void *table, const uint8_t p[32])
{
    eip_table *tab = (eip_table *)table;
    ge_p3 base, m[EIP_MULTS];
    fe acc[EIP_MULTS], inv, zinv, x, y;

    if (tab == NULL) {
        return -1;
    }
    tab->magic = 0;
    if (r255_decode(&base, p) != 0) {
        return -1;
    }
    for (int i = 0; i < EIP_WINDOWS; i++) {
        m[0] = base;
        for (int j = 1; j < EIP_MULTS; j++) {
            ge_add(&m[j], &m[j - 1], &base);
        }
        /* One inversion per window (Montgomery's trick) for the 8 affine forms. */
        fe_copy(acc[0], m[0].Z);
        for (int j = 1; j < EIP_MULTS; j++) {
            fe_mul(acc[j], acc[j - 1], m[j].Z);
        }
        fe_invert(inv, acc[EIP_MULTS - 1]);
        for (int j = EIP_MULTS - 1; j >= 0; j--) {
            if (j > 0) {
                fe_mul(zinv, inv, acc[j - 1]);
                fe_mul(inv, inv, m[j].Z);
            } else {
                fe_copy(zinv, inv);
            }
            ge_niels *n = &tab->e[i][j];
            fe_mul(x, m[j].X, zinv);
            fe_mul(y, m[j].Y, zinv);
            fe_add(n->ypx, y, x);
            fe_carry(n->ypx);
            fe_sub(n->ymx, y, x);
            fe_mul(n->xy2d, x, y);
            fe_mul(n->xy2d, n->xy2d, FE_D2);
        }
        ge_add(&base, &m[EIP_MULTS - 1], &m[EIP_MULTS - 1]); /* 16 * base */
    }
    tab->reserved = 0;
    tab->magic = EIP_TABLE_MAGIC;
    return 0;
}

/* out[i] = encode(scalars[i] * base) for n rows; 0 ok, -2 table not initialised. */
EIP_EXPORT int eip_scalarmult_fixed(const void *t, const uint8_t *scalars, size_t n,
                                    uint8_t *out)
{
    ge_p3 r;
    if (!table_ok(t)) {
        return -2;
    }
    for (size_t i = 0; i < n; i++) {
        fixed_mul(&r, (const eip_table *)t, scalars + 32 * i);
        r255_encode(out + 32 * i, &r);
    }
    secure_wipe(&r, sizeof r);
    return 0;
}

/* o_k[i] = encode(scalars[i] * base_k), k = 1..3; 0 ok, -2 a table not initialised. */
EIP_EXPORT int eip_rerandomizers(const void *t1, const void *t2, const void *t3,
                                 const uint8_t *scalars, size_t n, uint8_t *o1, uint8_t *o2,
                                 uint8_t *o3)
{
    const eip_table *tabs[3] = {(const eip_table *)t1, (const eip_table *)t2,
                                (const eip_table *)t3};
    uint8_t *outs[3] = {o1, o2, o3};
    ge_p3 r;
    if (!table_ok(t1) || !table_ok(t2) || !table_ok(t3)) {
        return -2;
    }
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) {
            fixed_mul(&r, tabs[k], scalars + 32 * i);
            r255_encode(outs[k] + 32 * i, &r);
        }
    }
    secure_wipe(&r, sizeof r);
    return 0;
}

/* SampDist on n wire rows (u1||u2||u3, 96 bytes each): out row i =
 * encode(decode(u_k) + scalars[i] * base_k) for k = 1..3. Returns -1 on
 * success, the index of the first row holding an invalid encoding (rows before
 * it are written), or -2 if a table is not initialised. */
EIP_EXPORT long eip_sampdist(const void *t1, const void *t2, const void *t3,
                             const uint8_t *cts, const uint8_t *scalars, size_t n, uint8_t *out)
{
    const eip_table *tabs[3] = {(const eip_table *)t1, (const eip_table *)t2,
                                (const eip_table *)t3};
    ge_p3 u[3], r;
    if (!table_ok(t1) || !table_ok(t2) || !table_ok(t3)) {
        return -2;
    }
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) {
            if (r255_decode(&u[k], cts + 96 * i + 32 * k) != 0) {
                secure_wipe(&r, sizeof r);
                return (long)i;
            }
        }
        for (int k = 0; k < 3; k++) {
            fixed_mul(&r, tabs[k], scalars + 32 * i);
            ge_add(&r, &r, &u[k]);
            r255_encode(out + 96 * i + 32 * k, &r);
        }
    }
    secure_wipe(&r, sizeof r);
    return -1;
}

/* out[i] = encode(decode(x[i*sx]) +/- decode(y[i*sy])) (subtract if sub != 0);
 * strides in bytes (0 broadcasts one element). Returns -1 on success or the
 * first index whose x or y is an invalid encoding. */
EIP_EXPORT long eip_add_batch(const uint8_t *x, size_t sx, const uint8_t *y, size_t sy, size_t n,
                              int sub, uint8_t *out)
{
    ge_p3 a, b;
    for (size_t i = 0; i < n; i++) {
        if (r255_decode(&a, x + i * sx) != 0 || r255_decode(&b, y + i * sy) != 0) {
            return (long)i;
        }
        if (sub) {
            ge_neg(&b);
        }
        ge_add(&a, &a, &b);
        r255_encode(out + 32 * i, &a);
    }
    return -1;
}

/* 1 if s is a valid canonical encoding (RFC 9496, top bit included), else 0. */
EIP_EXPORT int eip_is_valid(const uint8_t s[32])
{
    ge_p3 p;
    return r255_decode(&p, s) == 0;
}

/* SampDist of any width (secure format v2): `m` components per row, row-major
 * (n, m, 32); out row i, component k = encode(decode(u_k) + s * base_k) where s is
 * scalars[i] for k < m - 1 and last_scalars[i] for the last component (the shifted
 * r + K m of format v2). tables[k] is base_k's table. Returns -1 on success, the
 * index of the first row holding an invalid encoding, or -2 for a bad table / m. */
EIP_EXPORT long eip_sampdist_n(const void *const *tables, size_t m, const uint8_t *cts,
                               const uint8_t *scalars, const uint8_t *last_scalars, size_t n,
                               uint8_t *out)
{
    ge_p3 u[34], r;
    if (m < 2 || m > 34) {
        return -2;
    }
    for (size_t k = 0; k < m; k++) {
        if (!table_ok(tables[k])) {
            return -2;
        }
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < m; k++) {
            if (r255_decode(&u[k], cts + 32 * (m * i + k)) != 0) {
                secure_wipe(&r, sizeof r);
                return (long)i;
            }
        }
        for (size_t k = 0; k < m; k++) {
            const uint8_t *sc = (k + 1 < m ? scalars : last_scalars) + 32 * i;
            fixed_mul(&r, (const eip_table *)tables[k], sc);
            ge_add(&r, &r, &u[k]);
            r255_encode(out + 32 * (m * i + k), &r);
        }
    }
    secure_wipe(&r, sizeof r);
    return -1;
}

/* Secure format v2 decryption: out[r] = encode(sum_i coeffs[i] * P[r][i]) for `count`
 * rows of `np` (<= 32) encodings each, row-major (count, np, 32). Coefficients are a
 * licensee's small secret b_i < 2^bits (bits <= 32): the same sequence of group
 * operations for any coefficients (each bit adds P or the identity, chosen with
 * fe_cmov). Returns -1 on success, the first row holding an invalid encoding, or -2
 * for bad arguments. */
EIP_EXPORT long eip_small_msm(const uint8_t *points, size_t np, const uint32_t *coeffs, int bits,
                              size_t count, uint8_t *out)
{
    ge_p3 pts[32];
    if (np == 0 || np > 32 || bits < 1 || bits > 32) {
        return -2;
    }
    for (size_t r = 0; r < count; r++) {
        ge_p3 acc, t;
        for (size_t i = 0; i < np; i++) {
            if (r255_decode(&pts[i], points + 32 * (r * np + i)) != 0) {
                return (long)r;
            }
        }
        ge_identity(&acc);
        for (int bit = bits - 1; bit >= 0; bit--) {
            ge_add(&acc, &acc, &acc);
            for (size_t i = 0; i < np; i++) {
                int on = (int)((coeffs[i] >> bit) & 1u);
                ge_identity(&t);
                fe_cmov(t.X, pts[i].X, on);
                fe_cmov(t.Y, pts[i].Y, on);
                fe_cmov(t.Z, pts[i].Z, on);
                fe_cmov(t.T, pts[i].T, on);
                ge_add(&acc, &acc, &t);
            }
        }
        r255_encode(out + 32 * r, &acc);
    }
    secure_wipe(pts, sizeof pts);
    return -1;
}

/* ------------------------------------------------------------ CPython shell */

#ifdef EIP_PYMODULE
/* An empty module: setuptools builds and installs this file as an extension,
 * and encryip_runtime.crypto.r255_native loads the same .so with ctypes. */
static struct PyModuleDef eip_module = {
    PyModuleDef_HEAD_INIT, "_r255",
    "ristretto255 fixed-base tables (C functions, loaded through ctypes).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__r255(void)
{
    return PyModule_Create(&eip_module);
}
#endif
