/*
 * _r255.c - ristretto255 (RFC 9496) fixed-base scalar multiplication for the
 * secure profile's SampDist / re-randomisers, and its Dec.
 *
 * Why this exists: a SampDist row is r*g1, r*g2, r*h plus three additions.
 * libsodium has a precomputed table only for its own base point and decodes +
 * encodes on every exported add, so the row costs three variable-base scalar
 * multiplications and six square roots more than needed. Here every public base
 * gets its own table (signed radix 16, 64 windows x 8 multiples, affine Niels
 * form), so r*base is 64 mixed additions and no doublings. For codebook entries
 * (the server's case) the entry's halves are stored decoded and the sum is formed
 * as 2 (c/2 + (r/2) base), whose encoding needs no square root and shares one field
 * inversion with 63 others (fixed_rows, dbl_encode_batch): no decode and no
 * square root per row. Any number of bases per call.
 *
 * Constant time in the secret scalars (r, Fake's r1/r2, Dec's a/b): the halving
 * and recoding are branch-free, every window's lookup reads all 8 entries and
 * selects with masks, the sign is applied with a conditional swap/negation, the
 * batch encoding's choices are masks, and the field code has no data-dependent
 * branches or table indices. Only public data (the encodings of the bases and of
 * the ciphertexts, codebook slots) decides the early returns on invalid input.
 *
 * Field GF(2^255-19): 5 limbs of 51 bits, products in unsigned __int128. On x86-64
 * with AVX2 the fixed-base additions also run four rows at a time in radix 2^25.5
 * (see "4-way AVX2 mixed additions"; -DEIP_NO_AVX2 builds without them).
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
#define EIP_ABI_VERSION 2

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

/* Affine Niels form of (x, y): y+x, y-x, 2d*x*y (all reduced), padded to 16 limbs
 * (128 bytes) so that the constant-time table scan runs on whole 128-bit vectors:
 * measured against the unpadded 15 limbs, 3.9 % fewer instructions (callgrind) and
 * ~5 % less CPU time per row (medians of paired runs) for a 6.7 % larger table. */
#define EIP_NIELS_LIMBS 16
typedef struct {
    fe ypx, ymx, xy2d;
    uint64_t pad;
} ge_niels;
typedef char eip_niels_is_16_limbs[(sizeof(ge_niels) == EIP_NIELS_LIMBS * 8) ? 1 : -1];

static const ge_niels NIELS_IDENTITY = {{1, 0, 0, 0, 0}, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 0}, 0};

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

/* Two limbs at a time: SSE2 on x86-64, NEON on arm64 (gcc and clang vector extension). */
typedef uint64_t eip_v2 __attribute__((vector_size(16)));

/* t = b * (window entry), b in [-8, 8]: reads all 8 entries and selects by mask (one
 * mask per entry over its 16 limbs, 8 vector operations), then negates by swapping
 * y+x / y-x and negating 2dxy under a mask. Loads go through memcpy: no alignment is
 * assumed of the table (the Python side allocates it 8-byte aligned). */
static inline void table_select(ge_niels *t, const ge_niels row[EIP_MULTS], int8_t b)
{
    const uint32_t bneg = ((uint32_t)(int32_t)b >> 31) & 1U;
    const uint32_t babs = (uint32_t)((int32_t)b - (((-(int32_t)bneg) & (int32_t)b) * 2));
    eip_v2 acc[EIP_NIELS_LIMBS / 2], e[EIP_NIELS_LIMBS / 2];
    memcpy(acc, &NIELS_IDENTITY, sizeof acc);
    for (uint32_t j = 0; j < EIP_MULTS; j++) {
        const uint64_t m = value_barrier((uint64_t)0 - (uint64_t)ct_eq_small(babs, j + 1));
        const eip_v2 mv = {m, m};
        memcpy(e, &row[j], sizeof e);
        for (int w = 0; w < EIP_NIELS_LIMBS / 2; w++) {
            acc[w] ^= mv & (acc[w] ^ e[w]);
        }
    }
    memcpy(t, acc, sizeof *t);
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

/* Signed radix 16: k = sum e_i 16^i with e_i in [-8, 8), e_63 in [0, 8]; k is 32
 * little-endian bytes, bit 255 ignored (like libsodium's scalarmult). Branch-free. */
static void recode(int8_t e[EIP_WINDOWS], const uint8_t k[32])
{
    int8_t carry = 0;
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
}

/* r += k * P for the table's P, k given by its digits: 64 mixed additions. r may start
 * at any point (the identity, or a ciphertext component: the addition is free). */
static void fixed_madd(ge_p3 *r, const eip_table *tab, const int8_t e[EIP_WINDOWS])
{
    ge_niels t;
    for (int i = 0; i < EIP_WINDOWS; i++) {
        table_select(&t, tab->e[i], e[i]);
        ge_madd(r, r, &t);
    }
    secure_wipe(&t, sizeof t);
}

/* ------------------------------------------------------------ scalars mod L */

/* L, the order of ristretto255, in 64-bit little-endian limbs. */
static const uint64_t SC_L[4] = {0x5812631a5cf5d3edULL, 0x14def9dea2f79cd6ULL, 0,
                                 0x1000000000000000ULL};

/* h = (k' + (k' & 1) L) / 2 as 32 little-endian bytes, where k' is k with bit 255
 * cleared: an integer below 2^255 with 2h = k' (mod L). Branch-free. */
static void scalar_half(uint8_t h[32], const uint8_t k[32])
{
    uint64_t w[4];
    u128 acc = 0;
    for (int i = 0; i < 4; i++) {
        w[i] = load64_le(k + 8 * i);
    }
    w[3] &= 0x7fffffffffffffffULL;
    const uint64_t odd = value_barrier((uint64_t)0 - (w[0] & 1));
    for (int i = 0; i < 4; i++) {
        acc += (u128)w[i] + (SC_L[i] & odd);
        w[i] = (uint64_t)acc;
        acc >>= 64;
    }
    /* k' < 2^255 and L < 2^253: the sum fits in 256 bits (acc is 0 here). */
    for (int i = 0; i < 3; i++) {
        store64_le(h + 8 * i, (w[i] >> 1) | (w[i + 1] << 63));
    }
    store64_le(h + 24, w[3] >> 1);
    secure_wipe(w, sizeof w);
}

/* floor(2^512 / L), 260 bits, for Barrett reduction of 512-bit values. */
static const uint64_t SC_MU[5] = {0xed9ce5a30a2c131bULL, 0x2106215d086329a7ULL,
                                  0xffffffffffffffebULL, 0xffffffffffffffffULL, 0xfULL};

/* w (4 limbs, w < 2L + 2^64) -> w mod L: subtract L when that does not borrow. */
static void sc_sub_l_if_ge(uint64_t w[4])
{
    uint64_t t[4], borrow = 0;
    for (int i = 0; i < 4; i++) {
        const u128 d = (u128)w[i] - SC_L[i] - borrow;
        t[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    const uint64_t keep = value_barrier((uint64_t)0 - borrow); /* all ones: w < L */
    for (int i = 0; i < 4; i++) {
        w[i] = (w[i] & keep) | (t[i] & ~keep);
    }
    secure_wipe(t, sizeof t);
}

/* w = x mod L for the 512-bit little-endian x (Barrett): q = floor(x mu / 2^512) is
 * floor(x / L) or one less, so x - qL lies in [0, 2L) and one conditional subtraction
 * finishes. Fixed loops, no branch on x. */
static void sc_reduce_wide(uint64_t w[4], const uint8_t x[64])
{
    uint64_t xl[8], p[13] = {0}, q[5], r[5];
    for (int i = 0; i < 8; i++) {
        xl[i] = load64_le(x + 8 * i);
    }
    for (int i = 0; i < 8; i++) {
        u128 acc = 0;
        for (int j = 0; j < 5; j++) {
            acc += (u128)xl[i] * SC_MU[j] + p[i + j];
            p[i + j] = (uint64_t)acc;
            acc >>= 64;
        }
        p[i + 5] = (uint64_t)acc;
    }
    memcpy(q, p + 8, sizeof q);
    /* r = x - qL mod 2^320: the true difference is below 2L < 2^320 */
    for (int i = 0; i < 5; i++) {
        r[i] = xl[i];
    }
    /* schoolbook qL truncated to 5 limbs, then subtract */
    uint64_t ql[5] = {0};
    for (int i = 0; i < 5; i++) {
        u128 acc = 0;
        for (int j = 0; j < 4 && i + j < 5; j++) {
            acc += (u128)q[i] * SC_L[j] + ql[i + j];
            ql[i + j] = (uint64_t)acc;
            acc >>= 64;
        }
        if (i + 4 < 5) {
            ql[i + 4] = (uint64_t)acc; /* only i = 0; later carries fall past 2^320 */
        }
    }
    uint64_t borrow = 0;
    for (int i = 0; i < 5; i++) {
        const u128 d = (u128)r[i] - ql[i] - borrow;
        r[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    memcpy(w, r, 4 * sizeof w[0]); /* r[4] is 0: r < 2L < 2^254 */
    sc_sub_l_if_ge(w);
    secure_wipe(xl, sizeof xl);
    secure_wipe(p, sizeof p);
    secure_wipe(q, sizeof q);
    secure_wipe(r, sizeof r);
    secure_wipe(ql, sizeof ql);
}

static void sc_store(uint8_t out[32], const uint64_t w[4])
{
    for (int i = 0; i < 4; i++) {
        store64_le(out + 8 * i, w[i]);
    }
}

/* ------------------------------------------------------------ batch encoding of 2P */

/* ENCODE needs an inverse square root per point, but the encoding of 2P is a rational
 * function of P (the Decaf/Ristretto papers; curve25519-dalek's double_and_compress_batch
 * uses the same identities), so a batch of them shares one field inversion (Montgomery's
 * trick). With P = (X:Y:Z:T) and a = -1, the doubling's intermediate values are
 *   e = 2XY, f = Z^2 + dT^2, g = Y^2 + X^2, h = Z^2 - dT^2,
 * and 2P = (ef : gh : fh : eg). Only the inverses 1/(fh) and 1/(eg) are needed. */
#define EIP_BATCH 64 /* points per field inversion: 64 * 280 bytes of state on the stack */

typedef struct {
    fe e, f, g, h, eg, fh, efgh;
} dbl_state;

static void dbl_prepare(dbl_state *s, const ge_p3 *p)
{
    fe xx, yy, zz, dtt, y2;
    fe_sq(xx, p->X);
    fe_sq(yy, p->Y);
    fe_sq(zz, p->Z);
    fe_sq(dtt, p->T);
    fe_mul(dtt, dtt, FE_D);
    fe_add(y2, p->Y, p->Y);
    fe_mul(s->e, p->X, y2);
    fe_add(s->f, zz, dtt);
    fe_carry(s->f);
    fe_add(s->g, yy, xx);
    fe_carry(s->g);
    fe_sub(s->h, zz, dtt);
    fe_mul(s->eg, s->e, s->g);
    fe_mul(s->fh, s->f, s->h);
    fe_mul(s->efgh, s->eg, s->fh);
}

/* *outs[j] = ENCODE(2 P_j) for the m prepared points (m <= EIP_BATCH), constant time.
 * efgh = 0 exactly when 2P is in the 4-torsion, i.e. the identity of the group: such
 * a factor is replaced by 1 so it cannot zero the batch's product, and its encoding is
 * set to zero at the end (both by masks). */
static void dbl_encode_batch(uint8_t *const *outs, dbl_state *st, size_t m)
{
    static const fe zero = {0, 0, 0, 0, 0};
    fe acc[EIP_BATCH], inv, inv_j, zinv, tinv, e, g, h, minus_e, f_i, magic, t, s;
    int is_id[EIP_BATCH];

    if (m == 0 || m > EIP_BATCH) {
        return;
    }
    for (size_t j = 0; j < m; j++) {
        is_id[j] = fe_is_zero(st[j].efgh);
        fe_cmov(st[j].efgh, FE_ONE, is_id[j]);
        if (j == 0) {
            fe_copy(acc[0], st[0].efgh);
        } else {
            fe_mul(acc[j], acc[j - 1], st[j].efgh);
        }
    }
    fe_invert(inv, acc[m - 1]);
    for (size_t jj = m; jj-- > 0;) {
        const dbl_state *p = &st[jj];
        if (jj > 0) {
            fe_mul(inv_j, inv, acc[jj - 1]);
            fe_mul(inv, inv, p->efgh);
        } else {
            fe_copy(inv_j, inv);
        }
        fe_mul(zinv, p->eg, inv_j);      /* 1 / (fh) */
        fe_mul(tinv, p->fh, inv_j);      /* 1 / (eg) */
        fe_copy(e, p->e);
        fe_copy(g, p->g);
        fe_copy(h, p->h);
        fe_neg(minus_e, p->e);
        fe_mul(f_i, p->f, FE_SQRT_M1);
        fe_copy(magic, FE_INVSQRT_A_MINUS_D);
        /* rotate when T/Z of 2P (= eg / fh) is negative */
        fe_mul(t, p->eg, zinv);
        const int rotate = fe_is_negative(t);
        fe_cmov(e, g, rotate);
        fe_cmov(g, minus_e, rotate);
        fe_cmov(h, f_i, rotate);
        fe_cmov(magic, FE_SQRT_M1, rotate);
        fe_mul(t, h, e);
        fe_mul(t, t, zinv);
        fe_cneg(g, fe_is_negative(t));
        fe_sub(s, h, g);
        fe_mul(t, g, tinv);
        fe_mul(t, t, magic);
        fe_mul(s, s, t);
        fe_abs(s, s);
        fe_cmov(s, zero, is_id[jj]);
        fe_tobytes(outs[jj], s);
    }
    secure_wipe(acc, sizeof acc);
    secure_wipe(is_id, sizeof is_id);
    secure_wipe(st, m * sizeof *st);
}

/* Points waiting for the batch encoding of their doubles: each push prepares one and
 * records where its encoding goes; every EIP_BATCH points, and at the end, share one
 * field inversion. */
typedef struct {
    dbl_state st[EIP_BATCH];
    uint8_t *dst[EIP_BATCH];
    size_t m;
} dbl_queue;

static void dbl_flush(dbl_queue *q)
{
    if (q->m > 0) {
        dbl_encode_batch(q->dst, q->st, q->m); /* wipes the states */
        q->m = 0;
    }
}

static void dbl_push(dbl_queue *q, const ge_p3 *p, uint8_t *out)
{
    dbl_prepare(&q->st[q->m], p);
    q->dst[q->m++] = out;
    if (q->m == EIP_BATCH) {
        dbl_flush(q);
    }
}

/* ------------------------------------------------------------ rows of fixed-base sums */

#define EIP_MAX_BASES 64
#define EIP_POINTS_MAGIC 0x7374703535327265ULL /* "er255pts" */

/* Decoded public points (Z = 1), e.g. the halves of a codebook's components. */
typedef struct {
    uint64_t magic;
    uint64_t count;
    ge_p3 p[];
} eip_points;

static int tables_ok(const void *const *tables, size_t nb)
{
    if (tables == NULL || nb < 1 || nb > EIP_MAX_BASES) {
        return 0;
    }
    for (size_t k = 0; k < nb; k++) {
        if (!table_ok(tables[k])) {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------ 4-way AVX2 mixed additions */

/* The 64 mixed additions of fixed_madd dominate SampDist (~90 % of a row). On x86-64
 * with AVX2 they run four (row, base) pairs at once, one per 64-bit lane, in radix
 * 2^25.5 (10 limbs of 26/25 bits, products by vpmuludq): the lanes are independent
 * points with their own table and digits. Each lane's window entry is chosen by the
 * same constant-time table_select as the portable path, then the four entries are
 * transposed into lanes. The result is identical, bit for bit, to the portable path
 * (the same group operations on the same points; only the field representation
 * differs, and both are converted to the same radix-51 point before encoding).
 * Chosen at run time (eip_simd): a CPU or OS without AVX2 runs the portable code.
 *
 * Limb bounds (unsigned, per lane). "Carried": limbs < 2^26 (even) / 2^25 (odd),
 * limb 1 and 5 up to 2^13..2^18 more. vfe_mul accepts limbs up to 3 * 2^26 (even) and
 * 3 * 2^25 (odd) plus that excess in either operand: then 19 g_j < 2^32 and each output
 * coefficient, a sum of 10 products each < 2^60.4, stays below 2^64. vfe_sub(f, g)
 * adds 2p, so it needs g carried (or a sum of two carried values' halves) and returns
 * limbs < 3 * 2^26 / 3 * 2^25 for a carried f. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(EIP_NO_AVX2)
#define EIP_HAVE_AVX2 1
#include <immintrin.h>

#define EIP_AVX2 __attribute__((target("avx2")))
/* the field helpers are forced inline: as calls, gcc copied their 320-byte results with
 * `rep movsq` and spilled every accumulator */
#define EIP_AVX2_INLINE __attribute__((target("avx2"), always_inline))

typedef struct {
    __m256i v[10];
} vfe;

typedef struct {
    vfe X, Y, Z, T;
} vge;

typedef struct {
    vfe ypx, ymx, xy2d;
} vniels;

EIP_AVX2_INLINE static inline void vfe_add(vfe *h, const vfe *f, const vfe *g)
{
#pragma GCC unroll 16
    for (int i = 0; i < 10; i++) {
        h->v[i] = _mm256_add_epi64(f->v[i], g->v[i]);
    }
}

/* f - g + 2p (no carry) */
EIP_AVX2_INLINE static inline void vfe_sub(vfe *h, const vfe *f, const vfe *g)
{
    const __m256i p0 = _mm256_set1_epi64x(0x7ffffdaLL);
    const __m256i pe = _mm256_set1_epi64x(0x7fffffeLL);
    const __m256i po = _mm256_set1_epi64x(0x3fffffeLL);
#pragma GCC unroll 16
    for (int i = 0; i < 10; i++) {
        const __m256i p = (i == 0) ? p0 : ((i & 1) ? po : pe);
        h->v[i] = _mm256_sub_epi64(_mm256_add_epi64(f->v[i], p), g->v[i]);
    }
}

/* 19 * c for c < 2^45 (no vpmuludq: c may exceed 32 bits) */
EIP_AVX2_INLINE static inline __m256i v19(__m256i c)
{
    return _mm256_add_epi64(_mm256_add_epi64(c, _mm256_slli_epi64(c, 1)),
                            _mm256_slli_epi64(c, 4));
}

/* Carries any limbs < 2^64 down to "carried" (two interleaved chains, as in ref10). */
EIP_AVX2_INLINE static inline void vfe_carry(__m256i h[10])
{
    const __m256i m26 = _mm256_set1_epi64x((1LL << 26) - 1);
    const __m256i m25 = _mm256_set1_epi64x((1LL << 25) - 1);
#define EIP_VC(i, bits, mask)                                                                  \
    do {                                                                                       \
        const __m256i c_ = _mm256_srli_epi64(h[i], bits);                                      \
        h[i] = _mm256_and_si256(h[i], mask);                                                   \
        h[i + 1] = _mm256_add_epi64(h[i + 1], c_);                                             \
    } while (0)
    EIP_VC(0, 26, m26);
    EIP_VC(4, 26, m26);
    EIP_VC(1, 25, m25);
    EIP_VC(5, 25, m25);
    EIP_VC(2, 26, m26);
    EIP_VC(6, 26, m26);
    EIP_VC(3, 25, m25);
    EIP_VC(7, 25, m25);
    EIP_VC(4, 26, m26);
    EIP_VC(8, 26, m26);
    {
        const __m256i c9 = _mm256_srli_epi64(h[9], 25);
        h[9] = _mm256_and_si256(h[9], m25);
        h[0] = _mm256_add_epi64(h[0], v19(c9));
    }
    EIP_VC(0, 26, m26);
#undef EIP_VC
}

/* g19[j] = 19 g_j (j >= 1), for the products that wrap past 2^255; shared by two
 * multiplications by the same g. */
EIP_AVX2_INLINE static inline void vfe_times19(__m256i g19[10], const vfe *g)
{
    const __m256i n19 = _mm256_set1_epi64x(19);
    g19[0] = _mm256_setzero_si256(); /* unused: i + j >= 10 needs j >= 1 */
#pragma GCC unroll 16
    for (int j = 1; j < 10; j++) {
        g19[j] = _mm256_mul_epu32(g->v[j], n19);
    }
}

/* h = f * g (schoolbook over 10 limbs, 2^255 = 19 folded in), carried; g19 from
 * vfe_times19(g). Operand scanning: the 10 accumulators stay in registers while f's
 * limbs are taken one at a time (16 ymm registers; product scanning made gcc spill
 * every product). */
EIP_AVX2_INLINE static inline void vfe_mul19(vfe *h, const vfe *f, const vfe *g,
                                             const __m256i g19[10])
{
    __m256i r[10];
#pragma GCC unroll 16
    for (int k = 0; k < 10; k++) {
        r[k] = _mm256_mul_epu32(f->v[0], g->v[k]);
    }
#pragma GCC unroll 9
    for (int i = 1; i < 10; i++) {
        const __m256i fi = f->v[i];
        const __m256i fi2 = (i & 1) ? _mm256_add_epi64(fi, fi) : fi;
#pragma GCC unroll 10
        for (int j = 0; j < 10; j++) {
            const int k = (i + j) % 10;
            const __m256i a = ((i & 1) && (j & 1)) ? fi2 : fi;
            const __m256i b = (i + j >= 10) ? g19[j] : g->v[j];
            r[k] = _mm256_add_epi64(r[k], _mm256_mul_epu32(a, b));
        }
        /* keeps gcc from hoisting all 100 products ahead of the additions (and spilling
         * them): each row's products are summed before the next row's are formed */
        __asm__("" : "+x"(r[0]), "+x"(r[1]), "+x"(r[2]), "+x"(r[3]), "+x"(r[4]), "+x"(r[5]),
                "+x"(r[6]), "+x"(r[7]), "+x"(r[8]), "+x"(r[9]));
    }
    vfe_carry(r);
#pragma GCC unroll 16
    for (int i = 0; i < 10; i++) {
        h->v[i] = r[i];
    }
}

EIP_AVX2_INLINE static inline void vfe_mul(vfe *h, const vfe *f, const vfe *g)
{
    __m256i g19[10];
    vfe_times19(g19, g);
    vfe_mul19(h, f, g, g19);
}

/* r = p + q, q affine Niels (the same formulas as ge_madd). */
EIP_AVX2_INLINE static inline void vge_madd(vge *r, const vniels *q)
{
    vfe a, b, c, d, e, f, g, h;
    vfe_sub(&a, &r->Y, &r->X);
    vfe_mul(&a, &a, &q->ymx);
    vfe_add(&b, &r->Y, &r->X);
    vfe_mul(&b, &b, &q->ypx);
    vfe_mul(&c, &r->T, &q->xy2d);
    vfe_add(&d, &r->Z, &r->Z);
    vfe_sub(&e, &b, &a);
    vfe_sub(&f, &d, &c);
    vfe_carry(f.v); /* 2Z - c + 2p may reach 2^28: carried before it is multiplied */
    vfe_add(&g, &d, &c);
    vfe_add(&h, &b, &a);
    {
        __m256i f19[10], h19[10]; /* f and h are each the second factor twice */
        vfe_times19(f19, &f);
        vfe_times19(h19, &h);
        vfe_mul19(&r->X, &e, &f, f19);
        vfe_mul19(&r->Z, &g, &f, f19);
        vfe_mul19(&r->Y, &g, &h, h19);
        vfe_mul19(&r->T, &e, &h, h19);
    }
}

/* Four radix-51 field elements (lane l = in[l]) -> radix 2^25.5 lanes. */
EIP_AVX2_INLINE static inline void vfe_from_radix51(vfe *h, const __m256i limb51[5])
{
    const __m256i m26 = _mm256_set1_epi64x((1LL << 26) - 1);
#pragma GCC unroll 16
    for (int i = 0; i < 5; i++) {
        h->v[2 * i] = _mm256_and_si256(limb51[i], m26);
        h->v[2 * i + 1] = _mm256_srli_epi64(limb51[i], 26);
    }
}

/* Transposes 4 x 4 64-bit words: rows a, b, c, d (lanes 0..3) -> columns. */
EIP_AVX2_INLINE static inline void transpose4(__m256i out[4], __m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i ab_lo = _mm256_unpacklo_epi64(a, b); /* a0 b0 a2 b2 */
    const __m256i ab_hi = _mm256_unpackhi_epi64(a, b); /* a1 b1 a3 b3 */
    const __m256i cd_lo = _mm256_unpacklo_epi64(c, d);
    const __m256i cd_hi = _mm256_unpackhi_epi64(c, d);
    out[0] = _mm256_permute2x128_si256(ab_lo, cd_lo, 0x20); /* a0 b0 c0 d0 */
    out[1] = _mm256_permute2x128_si256(ab_hi, cd_hi, 0x20);
    out[2] = _mm256_permute2x128_si256(ab_lo, cd_lo, 0x31);
    out[3] = _mm256_permute2x128_si256(ab_hi, cd_hi, 0x31);
}

typedef struct {
    ge_niels t[4] __attribute__((aligned(32)));
    int64_t neg[4] __attribute__((aligned(32)));
} vselect_scratch; /* secret: wiped by the caller once, not per window */

/* q = lane l's window entry digits[l][w] * (its base's 16^w multiple), l < 4: each lane
 * reads all 8 entries of its row and keeps one by mask (four 256-bit words per entry),
 * the entries are transposed into lanes, and the negative digits' lanes swap y+x / y-x
 * and negate 2dxy (2p - 2dxy) under a lane mask. Constant time in the digits. */
EIP_AVX2_INLINE static inline void vselect4(vniels *q, vselect_scratch *s,
                                            const eip_table *const tabs[4],
                                            const int8_t *const digits[4], int w)
{
    ge_niels *t = s->t;
    int64_t *neg = s->neg;
    __m256i col[16];
#pragma GCC unroll 4
    for (int l = 0; l < 4; l++) {
        const int8_t b = digits[l][w];
        const uint32_t bneg = ((uint32_t)(int32_t)b >> 31) & 1U;
        const uint32_t babs = (uint32_t)((int32_t)b - (((-(int32_t)bneg) & (int32_t)b) * 2));
        const __m256i *row = (const __m256i *)tabs[l]->e[w];
        /* entry j's mask: vpcmpeqq of |b| against j + 1, lane-wide, no branch */
        const __m256i bv = _mm256_set1_epi64x((long long)value_barrier(babs));
        /* exactly one of the 9 masks (|b| = 0: the identity, or entry |b| - 1) is all
         * ones, so the selection is an OR of masked words */
        const __m256i m0 = _mm256_cmpeq_epi64(bv, _mm256_setzero_si256());
        __m256i a0 = _mm256_and_si256(m0, _mm256_loadu_si256((const __m256i *)&NIELS_IDENTITY));
        __m256i a1 = _mm256_and_si256(m0, _mm256_loadu_si256((const __m256i *)&NIELS_IDENTITY + 1));
        __m256i a2 = _mm256_and_si256(m0, _mm256_loadu_si256((const __m256i *)&NIELS_IDENTITY + 2));
        __m256i a3 = _mm256_and_si256(m0, _mm256_loadu_si256((const __m256i *)&NIELS_IDENTITY + 3));
#pragma GCC unroll 8
        for (uint32_t j = 0; j < EIP_MULTS; j++) {
            const __m256i mv = _mm256_cmpeq_epi64(bv, _mm256_set1_epi64x((long long)j + 1));
            a0 = _mm256_or_si256(a0, _mm256_and_si256(mv, _mm256_loadu_si256(row + 4 * j)));
            a1 = _mm256_or_si256(a1, _mm256_and_si256(mv, _mm256_loadu_si256(row + 4 * j + 1)));
            a2 = _mm256_or_si256(a2, _mm256_and_si256(mv, _mm256_loadu_si256(row + 4 * j + 2)));
            a3 = _mm256_or_si256(a3, _mm256_and_si256(mv, _mm256_loadu_si256(row + 4 * j + 3)));
        }
        _mm256_store_si256((__m256i *)&t[l], a0);
        _mm256_store_si256((__m256i *)&t[l] + 1, a1);
        _mm256_store_si256((__m256i *)&t[l] + 2, a2);
        _mm256_store_si256((__m256i *)&t[l] + 3, a3);
        neg[l] = (int64_t)value_barrier((uint64_t)0 - (uint64_t)bneg);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        transpose4(col + 4 * c, _mm256_load_si256((const __m256i *)&t[0] + c),
                   _mm256_load_si256((const __m256i *)&t[1] + c),
                   _mm256_load_si256((const __m256i *)&t[2] + c),
                   _mm256_load_si256((const __m256i *)&t[3] + c));
    }
    vfe_from_radix51(&q->ypx, col);
    vfe_from_radix51(&q->ymx, col + 5);
    vfe_from_radix51(&q->xy2d, col + 10);
    {
        const __m256i nm = _mm256_load_si256((const __m256i *)neg);
        const vfe zero = {{_mm256_setzero_si256()}};
        vfe minus;
        vfe_sub(&minus, &zero, &q->xy2d);
#pragma GCC unroll 10
        for (int i = 0; i < 10; i++) {
            const __m256i x = _mm256_and_si256(nm, _mm256_xor_si256(q->ypx.v[i], q->ymx.v[i]));
            q->ypx.v[i] = _mm256_xor_si256(q->ypx.v[i], x);
            q->ymx.v[i] = _mm256_xor_si256(q->ymx.v[i], x);
            q->xy2d.v[i] = _mm256_xor_si256(
                q->xy2d.v[i], _mm256_and_si256(nm, _mm256_xor_si256(q->xy2d.v[i], minus.v[i])));
        }
    }
}

/* Four radix-51 points -> lanes, and back. The way back takes vge_madd's outputs, which
 * are carried (limbs of 26/25 bits plus the small excess of limbs 1 and 5), so each pair
 * recombines into a radix-51 limb < 2^52, a valid input of the field code. */
EIP_AVX2 static void vge_load(vge *r, const ge_p3 p[4])
{
    vfe *dst[4] = {&r->X, &r->Y, &r->Z, &r->T};
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
        const uint64_t *s0 = ((const uint64_t *)&p[0]) + 5 * c;
        const uint64_t *s1 = ((const uint64_t *)&p[1]) + 5 * c;
        const uint64_t *s2 = ((const uint64_t *)&p[2]) + 5 * c;
        const uint64_t *s3 = ((const uint64_t *)&p[3]) + 5 * c;
        __m256i limb[5];
#pragma GCC unroll 16
        for (int i = 0; i < 5; i++) {
            limb[i] = _mm256_set_epi64x((long long)s3[i], (long long)s2[i], (long long)s1[i],
                                        (long long)s0[i]);
        }
        vfe_from_radix51(dst[c], limb);
    }
}

EIP_AVX2 static void vge_store(ge_p3 p[4], vge *r)
{
    vfe *src[4] = {&r->X, &r->Y, &r->Z, &r->T};
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
#pragma GCC unroll 16
        for (int i = 0; i < 5; i++) {
            uint64_t w[4];
            const __m256i v = _mm256_add_epi64(src[c]->v[2 * i],
                                               _mm256_slli_epi64(src[c]->v[2 * i + 1], 26));
            _mm256_storeu_si256((__m256i *)w, v);
#pragma GCC unroll 16
            for (int l = 0; l < 4; l++) {
                ((uint64_t *)&p[l])[5 * c + i] = w[l];
            }
        }
    }
}

/* p[l] += k_l * P_l for four lanes: tabs[l] and digits[l] per lane. */
EIP_AVX2 static void fixed_madd4(ge_p3 p[4], const eip_table *const tabs[4],
                                 const int8_t *const digits[4])
{
    vge r;
    vniels q;
    vselect_scratch s;
    vge_load(&r, p);
    for (int i = 0; i < EIP_WINDOWS; i++) {
        vselect4(&q, &s, tabs, digits, i);
        vge_madd(&r, &q);
    }
    vge_store(p, &r);
    secure_wipe(&r, sizeof r);
    secure_wipe(&q, sizeof q);
    secure_wipe(&s, sizeof s);
}
#endif /* x86-64 AVX2 */

/* 1 when fixed_rows may use the AVX2 lanes: the CPU and OS support AVX2 and eip_simd
 * has not turned it off. Decided once (a benign race: every thread computes the same). */
static int eip_simd_state = -1; /* -1 undecided, 0 portable, 1 AVX2 */

static int simd_supported(void)
{
#ifdef EIP_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static int simd_on(void)
{
    int s = __atomic_load_n(&eip_simd_state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = simd_supported();
        __atomic_store_n(&eip_simd_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

#ifdef EIP_HAVE_AVX2
/* x[t] += (digits dd[t]) * (the base of tt[t]) for t < count, four at a time on the AVX2
 * lanes; the spare lanes of a last, partial group run the identity with zero digits and
 * their results are dropped. */
EIP_AVX2 static void fixed_madd_lanes(ge_p3 *x, const eip_table *const *tt,
                                      const int8_t *const *dd, size_t count)
{
    static const int8_t zero_digits[EIP_WINDOWS] = {0};
    ge_p3 p[4];
    for (size_t t0 = 0; t0 < count; t0 += 4) {
        const eip_table *lt[4];
        const int8_t *ld[4];
        for (size_t l = 0; l < 4; l++) {
            if (t0 + l < count) {
                p[l] = x[t0 + l];
                lt[l] = tt[t0 + l];
                ld[l] = dd[t0 + l];
            } else {
                ge_identity(&p[l]);
                lt[l] = tt[0];
                ld[l] = zero_digits;
            }
        }
        fixed_madd4(p, lt, ld);
        for (size_t l = 0; l < 4 && t0 + l < count; l++) {
            x[t0 + l] = p[l];
        }
    }
    secure_wipe(p, sizeof p);
}

/* fixed_rows (below) on AVX2 lanes: 4 rows at a time, their nb * 4 (row, base) pairs
 * through fixed_madd_lanes. Same outputs, same order of encodings as the portable loop. */
EIP_AVX2 static void fixed_rows_avx2(const eip_table *const *tabs, size_t nb,
                                     const eip_points *starts, const uint32_t *slots,
                                     const uint8_t *scalars, const uint8_t *scalars2,
                                     size_t split, size_t n, uint8_t *const *outs, size_t stride)
{
    dbl_queue q;
    int8_t e[4][2][EIP_WINDOWS];
    uint8_t half[32];
    ge_p3 x[4 * EIP_MAX_BASES];
    const eip_table *tt[4 * EIP_MAX_BASES];
    const int8_t *dd[4 * EIP_MAX_BASES];

    size_t used = 0; /* entries of x written: only those are wiped (x is 40 KiB) */

    q.m = 0;
    for (size_t i0 = 0; i0 < n; i0 += 4) {
        const size_t rows = (n - i0 < 4) ? n - i0 : 4;
        used = (rows * nb > used) ? rows * nb : used;
        for (size_t r = 0; r < rows; r++) {
            scalar_half(half, scalars + 32 * (i0 + r));
            recode(e[r][0], half);
            if (scalars2 != NULL) {
                scalar_half(half, scalars2 + 32 * (i0 + r));
                recode(e[r][1], half);
            }
            for (size_t k = 0; k < nb; k++) {
                const size_t t = r * nb + k;
                tt[t] = tabs[k];
                /* bases from `split` on take the second scalar (k and split are public) */
                dd[t] = e[r][(scalars2 != NULL && k >= split) ? 1 : 0];
                if (starts != NULL) {
                    x[t] = starts->p[(size_t)slots[i0 + r] * nb + k];
                } else {
                    ge_identity(&x[t]);
                }
            }
        }
        fixed_madd_lanes(x, tt, dd, rows * nb);
        for (size_t t = 0; t < rows * nb; t++) {
            dbl_push(&q, &x[t], outs[t % nb] + (i0 + t / nb) * stride);
        }
    }
    dbl_flush(&q);
    secure_wipe(e, sizeof e);
    secure_wipe(half, sizeof half);
    secure_wipe(x, used * sizeof *x);
}
#endif

/* outs[k] + i * stride receives ENCODE(S_ik + r_i * base_k) for rows i < n and bases
 * k < nb, where S_ik = 2 * starts->p[slots[i] * nb + k] (or the identity when starts is
 * NULL). Computed as ENCODE(2 (starts->p[.] + (r_i / 2) base_k)): one recoding of r_i / 2
 * for all the bases, 64 mixed additions per base starting from the stored half, and the
 * batch encoding of doubles above (no square root). */
static void fixed_rows(const eip_table *const *tabs, size_t nb, const eip_points *starts,
                       const uint32_t *slots, const uint8_t *scalars, const uint8_t *scalars2,
                       size_t split, size_t n, uint8_t *const *outs, size_t stride)
{
    dbl_queue q;
    int8_t e[EIP_WINDOWS], e2[EIP_WINDOWS];
    uint8_t half[32];
    ge_p3 x;

#ifdef EIP_HAVE_AVX2
    if (simd_on()) {
        fixed_rows_avx2(tabs, nb, starts, slots, scalars, scalars2, split, n, outs, stride);
        return;
    }
#endif
    q.m = 0;
    for (size_t i = 0; i < n; i++) {
        scalar_half(half, scalars + 32 * i);
        recode(e, half);
        if (scalars2 != NULL) {
            scalar_half(half, scalars2 + 32 * i);
            recode(e2, half);
        }
        for (size_t k = 0; k < nb; k++) {
            if (starts != NULL) {
                x = starts->p[(size_t)slots[i] * nb + k];
            } else {
                ge_identity(&x);
            }
            /* bases from `split` on take the second scalar (k and split are public) */
            fixed_madd(&x, tabs[k], (scalars2 != NULL && k >= split) ? e2 : e);
            dbl_push(&q, &x, outs[k] + i * stride);
        }
    }
    dbl_flush(&q);
    secure_wipe(e, sizeof e);
    secure_wipe(e2, sizeof e2);
    secure_wipe(half, sizeof half);
    secure_wipe(&x, sizeof x);
}

/* ------------------------------------------------------------ variable-base, for Dec */

/* A point ready to be added: (Y+X, Y-X, Z, 2dT). */
typedef struct {
    fe ypx, ymx, z, t2d;
} ge_cached;

static void ge_to_cached(ge_cached *c, const ge_p3 *p)
{
    fe_add(c->ypx, p->Y, p->X);
    fe_carry(c->ypx);
    fe_sub(c->ymx, p->Y, p->X);
    fe_copy(c->z, p->Z);
    fe_mul(c->t2d, p->T, FE_D2);
}

/* r = p + q (add-2008-hwcd-3 with q's products precomputed). */
static void ge_add_cached(ge_p3 *r, const ge_p3 *p, const ge_cached *q)
{
    fe a, b, c, d, e, f, g, h;
    fe_sub(a, p->Y, p->X);
    fe_mul(a, a, q->ymx);
    fe_add(b, p->Y, p->X);
    fe_mul(b, b, q->ypx);
    fe_mul(c, p->T, q->t2d);
    fe_mul(d, p->Z, q->z);
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

/* t = b * P from tab[j] = (j+1) P, b in [-8, 8], reading every entry (as table_select). */
static void cached_select(ge_cached *t, const ge_cached tab[EIP_MULTS], int8_t b)
{
    const uint32_t bneg = ((uint32_t)(int32_t)b >> 31) & 1U;
    const uint32_t babs = (uint32_t)((int32_t)b - (((-(int32_t)bneg) & (int32_t)b) * 2));
    fe_one(t->ypx);
    fe_one(t->ymx);
    fe_one(t->z);
    fe_zero(t->t2d);
    for (uint32_t j = 0; j < EIP_MULTS; j++) {
        const int hit = ct_eq_small(babs, j + 1);
        fe_cmov(t->ypx, tab[j].ypx, hit);
        fe_cmov(t->ymx, tab[j].ymx, hit);
        fe_cmov(t->z, tab[j].z, hit);
        fe_cmov(t->t2d, tab[j].t2d, hit);
    }
    fe_cswap(t->ypx, t->ymx, (int)bneg);
    fe_cneg(t->t2d, (int)bneg);
}

/* r = a P + b Q for secret a, b (32 bytes, bit 255 ignored) and public P, Q: signed
 * radix 16, both scalars sharing the 4 doublings per window; constant time in a, b. */
static void double_scalarmult(ge_p3 *r, const uint8_t a[32], const ge_p3 *p, const uint8_t b[32],
                              const ge_p3 *q)
{
    ge_cached tp[EIP_MULTS], tq[EIP_MULTS], t;
    ge_p3 mp = *p, mq = *q;
    int8_t ea[EIP_WINDOWS], eb[EIP_WINDOWS];

    for (int j = 0; j < EIP_MULTS; j++) {
        if (j > 0) {
            ge_add(&mp, &mp, p);
            ge_add(&mq, &mq, q);
        }
        ge_to_cached(&tp[j], &mp);
        ge_to_cached(&tq[j], &mq);
    }
    recode(ea, a);
    recode(eb, b);
    ge_identity(r);
    for (int i = EIP_WINDOWS - 1; i >= 0; i--) {
        if (i < EIP_WINDOWS - 1) {
            for (int d = 0; d < 4; d++) {
                ge_add(r, r, r); /* complete: also a doubling */
            }
        }
        cached_select(&t, tp, ea[i]);
        ge_add_cached(r, r, &t);
        cached_select(&t, tq, eb[i]);
        ge_add_cached(r, r, &t);
    }
    secure_wipe(ea, sizeof ea);
    secure_wipe(eb, sizeof eb);
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
            n->pad = 0;
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

/* Bytes for eip_points_init with `count` points (8-byte aligned buffer). */
EIP_EXPORT size_t eip_points_bytes(size_t count)
{
    return sizeof(eip_points) + count * sizeof(ge_p3);
}

/* Decode `count` public encodings into `buf`. -1 ok, -2 no buffer, else the first
 * invalid index. */
EIP_EXPORT long eip_points_init(void *buf, const uint8_t *encodings, size_t count)
{
    eip_points *pts = (eip_points *)buf;
    if (pts == NULL) {
        return -2;
    }
    pts->magic = 0;
    for (size_t i = 0; i < count; i++) {
        if (r255_decode(&pts->p[i], encodings + 32 * i) != 0) {
            return (long)i;
        }
    }
    pts->count = count;
    pts->magic = EIP_POINTS_MAGIC;
    return -1;
}

/* The vector backend in use: want < 0 only asks; 0 forces the portable code; 1 asks for
 * AVX2 (granted only where the CPU and OS support it). Returns the level now in effect:
 * 0 portable, 1 AVX2. For tests and benchmarks; not meant to change under running calls. */
EIP_EXPORT int eip_simd(int want)
{
    if (want == 0) {
        __atomic_store_n(&eip_simd_state, 0, __ATOMIC_RELAXED);
    } else if (want > 0) {
        __atomic_store_n(&eip_simd_state, simd_supported(), __ATOMIC_RELAXED);
    }
    return simd_on();
}

/* out[i * nb + k] = ENCODE(scalars[i] * base_k) for n rows and nb bases (32 bytes
 * each). 0 ok, -2 a table not initialised or nb out of [1, 64]. */
EIP_EXPORT int eip_fixed_rows(const void *const *tables, size_t nb, const uint8_t *scalars,
                              size_t n, uint8_t *out)
{
    uint8_t *outs[EIP_MAX_BASES];
    if (!tables_ok(tables, nb)) {
        return -2;
    }
    for (size_t k = 0; k < nb; k++) {
        outs[k] = out + 32 * k;
    }
    fixed_rows((const eip_table *const *)tables, nb, NULL, NULL, scalars, NULL, nb, n, outs,
               32 * nb);
    return 0;
}

/* SampDist of codebook rows: out row i (nb * 32 bytes) = ENCODE(c_k + scalars[i] *
 * base_k) for k < nb, where c = codebook entry slots[i] and `halves` holds the decoded
 * points c_k / 2 (entry slot * nb + k). -1 ok, -2 a table or halves not initialised or
 * nb out of range, else the first row whose slot is out of range (nothing written). The
 * slot is public here (as the ciphertexts are in eip_sampdist); r is not. */
/* SampDist of codebook entries with two scalars per row: bases [0, split) take
 * scalars[i], bases [split, nb) take scalars2[i] (format 2's r and r + K m), all nb
 * components in one call and one batch of encodings. -1 on success, -2 for a bad table
 * or halves, else the first row whose slot is out of range. */
EIP_EXPORT long eip_sampdist_slots2(const void *const *tables, size_t nb, size_t split,
                                    const void *halves, const uint32_t *slots,
                                    const uint8_t *scalars, const uint8_t *scalars2, size_t n,
                                    uint8_t *out)
{
    const eip_points *h = (const eip_points *)halves;
    uint8_t *outs[EIP_MAX_BASES];
    if (!tables_ok(tables, nb) || h == NULL || h->magic != EIP_POINTS_MAGIC || split > nb) {
        return -2;
    }
    for (size_t i = 0; i < n; i++) {
        if ((size_t)slots[i] >= h->count / nb) {
            return (long)i;
        }
    }
    for (size_t k = 0; k < nb; k++) {
        outs[k] = out + 32 * k;
    }
    fixed_rows((const eip_table *const *)tables, nb, h, slots, scalars, scalars2, split, n, outs,
               32 * nb);
    return -1;
}

EIP_EXPORT long eip_sampdist_slots(const void *const *tables, size_t nb, const void *halves,
                                   const uint32_t *slots, const uint8_t *scalars, size_t n,
                                   uint8_t *out)
{
    return eip_sampdist_slots2(tables, nb, nb, halves, slots, scalars, NULL, n, out);
}

#ifdef EIP_HAVE_AVX2
/* eip_sampdist_n on AVX2 lanes: up to 4 rows are decoded (stopping before an invalid
 * one, whose index is returned after the rows before it are done), then their (row, base)
 * pairs go through fixed_madd_lanes. */
EIP_AVX2 static long sampdist_n_avx2(const eip_table *const *tabs, size_t nb,
                                     const uint8_t *cts, const uint8_t *scalars, size_t n,
                                     uint8_t *out)
{
    ge_p3 x[4 * EIP_MAX_BASES];
    const eip_table *tt[4 * EIP_MAX_BASES];
    const int8_t *dd[4 * EIP_MAX_BASES];
    int8_t e[4][EIP_WINDOWS];
    long bad = -1;
    size_t used = 0; /* entries of x written: only those are wiped (x is 40 KiB) */

    for (size_t i0 = 0; i0 < n && bad < 0; i0 += 4) {
        size_t rows = (n - i0 < 4) ? n - i0 : 4;
        used = (rows * nb > used) ? rows * nb : used;
        for (size_t r = 0; r < rows; r++) {
            for (size_t k = 0; k < nb && bad < 0; k++) {
                if (r255_decode(&x[r * nb + k], cts + 32 * (nb * (i0 + r) + k)) != 0) {
                    bad = (long)(i0 + r);
                }
                tt[r * nb + k] = tabs[k];
                dd[r * nb + k] = e[r];
            }
            if (bad >= 0) {
                rows = r;
                break;
            }
            recode(e[r], scalars + 32 * (i0 + r));
        }
        fixed_madd_lanes(x, tt, dd, rows * nb);
        for (size_t t = 0; t < rows * nb; t++) {
            r255_encode(out + 32 * (nb * i0 + t), &x[t]);
        }
    }
    secure_wipe(x, used * sizeof *x);
    secure_wipe(e, sizeof e);
    return bad;
}
#endif

/* SampDist of arbitrary wire rows (nb components of 32 bytes): out row i =
 * ENCODE(DECODE(u_ik) + scalars[i] * base_k). -1 ok, -2 a table not initialised or nb
 * out of range, else the first row holding an invalid encoding (rows before it are
 * written). One decode and one encode per component: the codebook path above avoids
 * both. */
EIP_EXPORT long eip_sampdist_n(const void *const *tables, size_t nb, const uint8_t *cts,
                               const uint8_t *scalars, size_t n, uint8_t *out)
{
    const eip_table *const *tabs = (const eip_table *const *)tables;
    ge_p3 u[EIP_MAX_BASES];
    int8_t e[EIP_WINDOWS];
    if (!tables_ok(tables, nb)) {
        return -2;
    }
#ifdef EIP_HAVE_AVX2
    if (simd_on()) {
        return sampdist_n_avx2(tabs, nb, cts, scalars, n, out);
    }
#endif
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < nb; k++) {
            if (r255_decode(&u[k], cts + 32 * (nb * i + k)) != 0) {
                secure_wipe(u, sizeof u);
                return (long)i;
            }
        }
        recode(e, scalars + 32 * i);
        for (size_t k = 0; k < nb; k++) {
            fixed_madd(&u[k], tabs[k], e);
            r255_encode(out + 32 * (nb * i + k), &u[k]);
        }
    }
    secure_wipe(u, sizeof u);
    secure_wipe(e, sizeof e);
    return -1;
}

/* out[i] = encode(scalars[i] * base) for n rows; 0 ok, -2 table not initialised. */
EIP_EXPORT int eip_scalarmult_fixed(const void *t, const uint8_t *scalars, size_t n,
                                    uint8_t *out)
{
    return eip_fixed_rows(&t, 1, scalars, n, out);
}

/* o_k[i] = encode(scalars[i] * base_k), k = 1..3; 0 ok, -2 a table not initialised. */
EIP_EXPORT int eip_rerandomizers(const void *t1, const void *t2, const void *t3,
                                 const uint8_t *scalars, size_t n, uint8_t *o1, uint8_t *o2,
                                 uint8_t *o3)
{
    const void *tabs[3] = {t1, t2, t3};
    uint8_t *outs[3] = {o1, o2, o3};
    if (!tables_ok(tabs, 3)) {
        return -2;
    }
    fixed_rows((const eip_table *const *)tabs, 3, NULL, NULL, scalars, NULL, 3, n, outs, 32);
    return 0;
}

/* SampDist on n wire rows (u1||u2||u3, 96 bytes each): eip_sampdist_n with three
 * bases. -1 ok, the index of the first invalid row, or -2. */
EIP_EXPORT long eip_sampdist(const void *t1, const void *t2, const void *t3,
                             const uint8_t *cts, const uint8_t *scalars, size_t n, uint8_t *out)
{
    const void *tabs[3] = {t1, t2, t3};
    return eip_sampdist_n(tabs, 3, cts, scalars, n, out);
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

/* Dec of n wire rows (u1||u2||u3, public) under the secret key (a, b): out[i] =
 * ENCODE(u3 - (a u1 + b u2)). Constant time in a and b: the secret-derived mask is never
 * encoded or decoded, only added. -1 ok, else the first row holding an invalid encoding
 * (rows before it are written). */
EIP_EXPORT long eip_dec(const uint8_t *cts, const uint8_t a[32], const uint8_t b[32], size_t n,
                        uint8_t *out)
{
    ge_p3 u[3], mask;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) {
            if (r255_decode(&u[k], cts + 96 * i + 32 * k) != 0) {
                secure_wipe(&mask, sizeof mask);
                return (long)i;
            }
        }
        double_scalarmult(&mask, a, &u[0], b, &u[1]);
        ge_neg(&mask);
        ge_add(&mask, &u[2], &mask);
        r255_encode(out + 32 * i, &mask);
    }
    secure_wipe(&mask, sizeof mask);
    return -1;
}

/* 1 if s is a valid canonical encoding (RFC 9496, top bit included), else 0. */
/* Scalars for a batch from random bytes (the caller's secrets.token_bytes): out[i] =
 * raw[64i..64i+64) mod L, as 32 little-endian bytes (statistical distance from uniform
 * below 2^-250, as RFC 9496's hash-to-scalar). Constant time; -1 on success. */
EIP_EXPORT long eip_scalars_wide(const uint8_t *raw, size_t n, uint8_t *out)
{
    uint64_t w[4];
    for (size_t i = 0; i < n; i++) {
        sc_reduce_wide(w, raw + 64 * i);
        sc_store(out + 32 * i, w);
    }
    secure_wipe(w, sizeof w);
    return -1;
}

/* Format 2's per-row pair (r, r + k m mod L) from 96 random bytes a row: r from the first
 * 64 (as eip_scalars_wide), m = floor(u range / 2^256) for the 256-bit u in the last 32,
 * which is uniform in [0, range) within statistical distance range / 2^256. out holds
 * the n r's, then the n shifted ones (32 bytes each). Constant time. Returns -1, or 0
 * when range is outside [1, 2^20] or k outside [1, 2^32). */
EIP_EXPORT long eip_shift_scalars(const uint8_t *raw, size_t n, uint64_t k, uint64_t range,
                                  uint8_t *out)
{
    uint8_t *const r_out = out, *const shifted_out = out + 32 * n;
    if (range < 1 || range > ((uint64_t)1 << 20) || k < 1 || k >= ((uint64_t)1 << 32)) {
        return 0;
    }
    uint64_t w[4], m, u;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *row = raw + 96 * i;
        sc_reduce_wide(w, row);
        sc_store(r_out + 32 * i, w);
        u128 acc = 0;
        for (int j = 0; j < 4; j++) {
            u = load64_le(row + 64 + 8 * j);
            acc += (u128)u * range;
            acc >>= 64; /* the limb below 2^256 is dropped; the carry goes up */
        }
        m = (uint64_t)acc; /* floor(u range / 2^256) < range */
        /* w + k m < L + 2^52: one conditional subtraction */
        u128 c = (u128)w[0] + (u128)k * m;
        w[0] = (uint64_t)c;
        for (int j = 1; j < 4; j++) {
            c = (c >> 64) + w[j];
            w[j] = (uint64_t)c;
        }
        sc_sub_l_if_ge(w);
        sc_store(shifted_out + 32 * i, w);
    }
    secure_wipe(w, sizeof w);
    secure_wipe(&m, sizeof m);
    secure_wipe(&u, sizeof u);
    return -1;
}

EIP_EXPORT int eip_is_valid(const uint8_t s[32])
{
    ge_p3 p;
    return r255_decode(&p, s) == 0;
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

/* Secure format v2 label table: out[i] = ENCODE(2 (start + i * step)) for i < count,
 * i.e. the progression M_i = M_start + i h when start and step are the halves of M_start
 * and h. One addition per entry and the batch encoding of doubles (no square root).
 * Public data only. -1 on success, -2 for an invalid start or step encoding. */
EIP_EXPORT long eip_progression(const uint8_t start[32], const uint8_t step[32], size_t count,
                                uint8_t *out)
{
    dbl_state st[EIP_BATCH];
    uint8_t *dst[EIP_BATCH];
    ge_p3 q, s;
    size_t m = 0;
    if (r255_decode(&q, start) != 0 || r255_decode(&s, step) != 0) {
        return -2;
    }
    for (size_t i = 0; i < count; i++) {
        dbl_prepare(&st[m], &q);
        dst[m++] = out + 32 * i;
        if (m == EIP_BATCH) {
            dbl_encode_batch(dst, st, m);
            m = 0;
        }
        ge_add(&q, &q, &s);
    }
    if (m > 0) {
        dbl_encode_batch(dst, st, m);
    }
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
