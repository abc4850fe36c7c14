// CPU attend (kernels/include/kernels/attend.h): the one attention routine.
//
// Written for the exactness contract of the header: every dot product is one 8-lane FMA chain
// over the channels in order, reduced in a fixed pattern, whatever block it is computed in;
// every output channel is one FMA chain over the visible entries in order. Blocks (2 rows x 4
// keys for the scores, 2 rows x 32 channels for the weighted sum) only decide which independent
// chains run side by side, never the arithmetic of one chain. With AVX2+FMA the chains run in
// vector registers; otherwise the same operations run in scalar code (fmaf), in the same order.
#include "kernels/attend.h"

#include "kernels/packed_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KVS_ATTEND_AVX2 1
#endif

namespace kvs::kernels {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The fixed reduction of 8 partial sums: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)), the order of the
// AVX2 horizontal sum below.
inline float reduce8(const float a[8]) {
    const float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
    return (b0 + b2) + (b1 + b3);
}

#if KVS_ATTEND_AVX2
inline float hsum(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// Batched hsum with hsum's additions (so the same bits): b = lower + upper half, then
// (b0 + b2) + (b1 + b3). half_sums pairs the halves of two vectors with permute2f128 and
// reorders each to (b0, b2, b1, b3), so that hadd then adds the right pairs:
// [x's b0 b2 b1 b3 | y's b0 b2 b1 b3].
inline __m256 half_sums(__m256 x, __m256 y) {
    const __m256 b =
        _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
    return _mm256_permute_ps(b, _MM_SHUFFLE(3, 1, 2, 0));
}

// Lane i = hsum(v_i), 8 vectors.
inline __m256 hsum8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5, __m256 v6,
                    __m256 v7) {
    // c = [v0: b0+b2, b1+b3, v2: .., .. | v1: .., .., v3: .., ..], likewise for v4..v7.
    const __m256 ca = _mm256_hadd_ps(half_sums(v0, v1), half_sums(v2, v3));
    const __m256 cb = _mm256_hadd_ps(half_sums(v4, v5), half_sums(v6, v7));
    const __m256 r = _mm256_hadd_ps(ca, cb);  // [r0 r2 r4 r6 | r1 r3 r5 r7]
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Lane i = hsum(v_i), 4 vectors.
inline __m128 hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    const __m256 c = _mm256_hadd_ps(half_sums(v0, v1), half_sums(v2, v3));
    const __m256 r = _mm256_hadd_ps(c, c);  // [r0 r2 r0 r2 | r1 r3 r1 r3]
    return _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0)));
}
#endif

// dot(q, k) over d channels: lanes c % 8 of the first d8 = d - d % 8 channels, reduced by
// reduce8, then the remaining channels added in order.
inline float dot_scalar(const float* q, const float* k, int d) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int d8 = d - d % 8;
    for (int c = 0; c < d8; c += 8)
        for (int l = 0; l < 8; ++l) a[l] = std::fmaf(q[c + l], k[c + l], a[l]);
    float s = reduce8(a);
    for (int c = d8; c < d; ++c) s = std::fmaf(q[c], k[c], s);
    return s;
}

// s[r][j] = dot(q_r, k_j) for rows r in [0, nr) (nr <= 2) and keys j in [j0, j1); kt holds the
// rows of keys j0.. (kt[0] is key j0).
void dots(const float* const* qr, int nr, const float* kt, int j0, int j1, int d, float* const* s) {
#if KVS_ATTEND_AVX2
    if (d % 8 == 0) {
        int j = j0;
        if (nr == 2) {
            for (; j + 4 <= j1; j += 4) {
                const float* k0 = kt + size_t(j - j0) * size_t(d);
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
                __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
                for (int c = 0; c < d; c += 8) {
                    const __m256 q0 = _mm256_loadu_ps(qr[0] + c), q1 = _mm256_loadu_ps(qr[1] + c);
                    const __m256 b0 = _mm256_loadu_ps(k0 + c);
                    const __m256 b1 = _mm256_loadu_ps(k0 + size_t(d) + c);
                    const __m256 b2 = _mm256_loadu_ps(k0 + 2 * size_t(d) + c);
                    const __m256 b3 = _mm256_loadu_ps(k0 + 3 * size_t(d) + c);
                    a00 = _mm256_fmadd_ps(q0, b0, a00);
                    a01 = _mm256_fmadd_ps(q0, b1, a01);
                    a02 = _mm256_fmadd_ps(q0, b2, a02);
                    a03 = _mm256_fmadd_ps(q0, b3, a03);
                    a10 = _mm256_fmadd_ps(q1, b0, a10);
                    a11 = _mm256_fmadd_ps(q1, b1, a11);
                    a12 = _mm256_fmadd_ps(q1, b2, a12);
                    a13 = _mm256_fmadd_ps(q1, b3, a13);
                }
                const __m256 r = hsum8(a00, a01, a02, a03, a10, a11, a12, a13);
                _mm_storeu_ps(s[0] + j, _mm256_castps256_ps128(r));
                _mm_storeu_ps(s[1] + j, _mm256_extractf128_ps(r, 1));
            }
        }
        for (int r = 0; r < nr; ++r) {
            int jj = j;
            for (; jj + 4 <= j1; jj += 4) {
                const float* k0 = kt + size_t(jj - j0) * size_t(d);
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int c = 0; c < d; c += 8) {
                    const __m256 q0 = _mm256_loadu_ps(qr[r] + c);
                    a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k0 + c), a0);
                    a1 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k0 + size_t(d) + c), a1);
                    a2 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k0 + 2 * size_t(d) + c), a2);
                    a3 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k0 + 3 * size_t(d) + c), a3);
                }
                _mm_storeu_ps(s[r] + jj, hsum4(a0, a1, a2, a3));
            }
            for (; jj < j1; ++jj) {
                const float* kr = kt + size_t(jj - j0) * size_t(d);
                __m256 a0 = _mm256_setzero_ps();
                for (int c = 0; c < d; c += 8)
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qr[r] + c), _mm256_loadu_ps(kr + c), a0);
                s[r][jj] = hsum(a0);
            }
        }
        return;
    }
#endif
    for (int r = 0; r < nr; ++r)
        for (int j = j0; j < j1; ++j)
            s[r][j] = dot_scalar(qr[r], kt + size_t(j - j0) * size_t(d), d);
}

#if KVS_ATTEND_AVX2
// The AVX2 body of weighted() for NR rows and NC vectors of 8 channels from c0: fixed counts, so
// that the accumulators stay in registers (a runtime-sized array of them is kept in memory,
// which makes every FMA wait for a store).
template <int NR, int NC>
inline void weighted_block(const float* const* p, const uint8_t* const* vis, const float* vt,
                           size_t ld, int j0, int j1, int jall, int c0, float* const* o) {
    __m256 acc[NR][NC];
    for (int r = 0; r < NR; ++r)
        for (int b = 0; b < NC; ++b) acc[r][b] = _mm256_loadu_ps(o[r] + c0 + 8 * b);
    int j = j0;
    for (; j < std::min(j1, jall); ++j) {  // every row sees these: no visibility test
        const float* vr = vt + size_t(j - j0) * ld;
        __m256 vb[NC];
        for (int b = 0; b < NC; ++b) vb[b] = _mm256_loadu_ps(vr + 8 * b);
        for (int r = 0; r < NR; ++r) {
            const __m256 w = _mm256_set1_ps(p[r][j]);
            for (int b = 0; b < NC; ++b) acc[r][b] = _mm256_fmadd_ps(w, vb[b], acc[r][b]);
        }
    }
    for (; j < j1; ++j) {
        const float* vr = vt + size_t(j - j0) * ld;
        __m256 vb[NC];
        for (int b = 0; b < NC; ++b) vb[b] = _mm256_loadu_ps(vr + 8 * b);
        for (int r = 0; r < NR; ++r) {
            if (!vis[r][j]) continue;
            const __m256 w = _mm256_set1_ps(p[r][j]);
            for (int b = 0; b < NC; ++b) acc[r][b] = _mm256_fmadd_ps(w, vb[b], acc[r][b]);
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int b = 0; b < NC; ++b) _mm256_storeu_ps(o[r] + c0 + 8 * b, acc[r][b]);
}

template <int NR>
inline void weighted_rows(const float* const* p, const uint8_t* const* vis, const float* vt,
                          size_t ld, int j0, int j1, int jall, int c0, int nc, float* const* o) {
    switch (nc) {
        case 4:
            return weighted_block<NR, 4>(p, vis, vt, ld, j0, j1, jall, c0, o);
        case 3:
            return weighted_block<NR, 3>(p, vis, vt, ld, j0, j1, jall, c0, o);
        case 2:
            return weighted_block<NR, 2>(p, vis, vt, ld, j0, j1, jall, c0, o);
        default:
            return weighted_block<NR, 1>(p, vis, vt, ld, j0, j1, jall, c0, o);
    }
}
#endif

// o[r] += sum_{j in [j0, j1), visible} p[r][j] v_j for nr <= 2 rows, continuing each output
// channel's FMA chain (o holds the chain's value after entries [0, j0); zero at the start); vt
// holds the rows of values j0.. . Entries with vis[r][j] false (p exactly 0) are skipped; every
// row sees the entries below jall (its visibility need not be tested there).
void weighted(const float* const* p, const uint8_t* const* vis, int nr, const float* vt, int j0,
              int j1, int jall, int d, float* const* o) {
#if KVS_ATTEND_AVX2
    if (d % 8 == 0) {
        for (int c0 = 0; c0 < d; c0 += 32) {
            const int nc = std::min(32, d - c0) / 8;  // 1..4 vectors
            if (nr == 2)
                weighted_rows<2>(p, vis, vt + c0, size_t(d), j0, j1, jall, c0, nc, o);
            else
                weighted_rows<1>(p, vis, vt + c0, size_t(d), j0, j1, jall, c0, nc, o);
        }
        return;
    }
#else
    (void)jall;
#endif
    for (int r = 0; r < nr; ++r) {
        float* orow = o[r];
        for (int j = j0; j < j1; ++j) {
            if (!vis[r][j]) continue;
            const float w = p[r][j];
            const float* vr = vt + size_t(j - j0) * size_t(d);
            for (int c = 0; c < d; ++c) orow[c] = std::fmaf(w, vr[c], orow[c]);
        }
    }
}

// exp(x) for x <= 0 (a softmax's s - max): Cephes' expf (x = n ln2 + r, |r| <= ln2 / 2, a
// degree-7 polynomial in r, times 2^n), relative error within 2 ulp of the true value; 0 below
// -87.3 (where exp is no longer a normal float). The AVX2 version runs the same operations on 8
// lanes, so both give the same bits; 8 at a time it is ~10x faster than libm's expf per element.
constexpr float kExpLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

inline float exp_neg(float x) {
    if (!(x >= kExpLo)) return 0.0f;  // also -inf
    x = std::min(x, 0.0f);
    const float n = std::nearbyint(x * kLog2e);
    float r = std::fmaf(n, -kLn2Hi, x);
    r = std::fmaf(n, -kLn2Lo, r);
    const float z = r * r;
    float y = std::fmaf(kP0, r, kP1);
    y = std::fmaf(y, r, kP2);
    y = std::fmaf(y, r, kP3);
    y = std::fmaf(y, r, kP4);
    y = std::fmaf(y, r, kP5);
    y = std::fmaf(y, z, r);
    y = y + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float two_n;
    std::memcpy(&two_n, &bits, 4);
    return y * two_n;
}

#if KVS_ATTEND_AVX2
inline __m256 exp_neg8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(kExpLo);
    const __m256 valid = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_setzero_ps());
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
    const __m256 z = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(kP0), r, _mm256_set1_ps(kP1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP5));
    y = _mm256_fmadd_ps(y, z, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), valid);
}
#endif

// Row i's softmax over its scores sr[0, j1) (raw dots; entries from j1 on are visible to it
// nowhere): scale, bias, causal mask (vr[j]), max, exp, the sum in double, normalisation;
// sr[j1, n) = 0. Returns the row's lse (-inf when it sees nothing, then sr = 0).
// The sum z: 8 partial sums in double, the r-th visible entry (ascending j) into partial r % 8,
// reduced ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)): it depends on the visible entries in
// order only, and when they are a prefix of the store (the causal case) it runs 8 wide.
float softmax_row(float* sr, uint8_t* vr, int j1, int n, const int32_t* kpos, const int32_t* qpos,
                  int i, const float* bias, float scale, int* lead) {
    *lead = 0;  // entries [0, lead) are all visible (set when the visible ones are a prefix)
    const int32_t qp = qpos ? qpos[i] : std::numeric_limits<int32_t>::max();
    float m = kNegInf;
    int nv = 0, last = -1;  // visible entries, the last visible index
    int j = 0;
#if KVS_ATTEND_AVX2
    {
        const __m256 sv = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(kNegInf);
        const __m256i qv = _mm256_set1_epi32(qp);
        __m256 mv = ninf;
        for (; j + 8 <= j1; j += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(sr + j), sv);
            if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + j));
            _mm256_storeu_ps(sr + j, x);
            const __m256i hidden = _mm256_cmpgt_epi32(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kpos + j)), qv);
            mv = _mm256_max_ps(mv, _mm256_blendv_ps(x, ninf, _mm256_castsi256_ps(hidden)));
            const unsigned seen =
                ~unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(hidden))) & 0xffu;
            for (int l = 0; l < 8; ++l) vr[j + l] = uint8_t((seen >> l) & 1u);
            if (seen) {
                nv += __builtin_popcount(seen);
                last = j + 31 - __builtin_clz(seen);
            }
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        m = _mm_cvtss_f32(h);
    }
#endif
    for (; j < j1; ++j) {
        vr[j] = kpos[j] <= qp;
        if (!vr[j]) continue;
        float x = sr[j] * scale;
        if (bias) x += bias[j];
        sr[j] = x;
        m = std::max(m, x);
        ++nv;
        last = j;
    }
    if (m == kNegInf) {  // nothing visible
        std::fill(sr, sr + n, 0.0f);
        std::fill(vr, vr + j1, uint8_t(0));
        return kNegInf;
    }
    // The exponentials (of every entry below j1; the invisible ones' are not used).
    j = 0;
#if KVS_ATTEND_AVX2
    const __m256 mv = _mm256_set1_ps(m);
    for (; j + 8 <= j1; j += 8)
        _mm256_storeu_ps(sr + j, exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), mv)));
#endif
    for (; j < j1; ++j) sr[j] = exp_neg(sr[j] - m);
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const bool prefix = last == nv - 1;  // the visible entries are [0, nv)
    if (prefix) {
        *lead = nv;
        j = 0;
#if KVS_ATTEND_AVX2
        __m256d p0 = _mm256_setzero_pd(), p1 = p0;
        for (; j + 8 <= nv; j += 8) {
            p0 = _mm256_add_pd(p0, _mm256_cvtps_pd(_mm_loadu_ps(sr + j)));
            p1 = _mm256_add_pd(p1, _mm256_cvtps_pd(_mm_loadu_ps(sr + j + 4)));
        }
        _mm256_storeu_pd(part, p0);
        _mm256_storeu_pd(part + 4, p1);
#endif
        for (; j < nv; ++j) part[j % 8] += double(sr[j]);
    } else {
        for (int r = 0, e = 0; e < j1; ++e)
            if (vr[e]) part[r++ % 8] += double(sr[e]);
    }
    const double z =
        ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    const float inv = float(1.0 / z);
    if (prefix) {
        for (j = 0; j < nv; ++j) sr[j] *= inv;
        std::fill(sr + nv, sr + n, 0.0f);
    } else {
        for (j = 0; j < j1; ++j) sr[j] = vr[j] ? sr[j] * inv : 0.0f;
        std::fill(sr + j1, sr + n, 0.0f);
    }
    return m + float(std::log(z));
}

// Where attention reads the rows of entries [j0, j1) from: fp32 rows in place, or packed rows
// decoded into a tile buffer (the same values quant_unpack gives).
struct F32Rows {
    const float* x;
    const float* rows(int j0, int, int d, float*) const { return x + size_t(j0) * size_t(d); }
};
struct PackedSrc {
    const PackedRows* r;
    const float* rows(int j0, int j1, int d, float* buf) const {
        dequant_rows(*r, j0, j1, d, buf);
        return buf;
    }
};

constexpr int kRowBlock = 16;  // rows whose scores are computed together (8 pairs)
constexpr int kTile = 64;      // entries per K / V tile (decoded once for the row block)

template <class Src>
void attend_impl(const float* q, const int32_t* qpos, int nq, const Src& ks, const Src& vs,
                 const int32_t* kpos, const float* bias, int n, int d, float scale, float* out,
                 float* lse, float* probs) {
    // Entries in non-decreasing position order (the usual case: stores append in order) let a
    // pair of rows stop at the first entry neither of them sees.
    bool sorted = true;
    for (int j = 1; j < n && sorted; ++j) sorted = kpos[j - 1] <= kpos[j];

    thread_local std::vector<float> s_buf, tile;
    thread_local std::vector<uint8_t> vis_buf;
    if (!probs) s_buf.resize(size_t(kRowBlock) * size_t(n));
    vis_buf.resize(size_t(kRowBlock) * size_t(n));
    tile.resize(size_t(kTile) * size_t(d));

    for (int b0 = 0; b0 < nq; b0 += kRowBlock) {
        const int nb = std::min(kRowBlock, nq - b0);
        const int npair = (nb + 1) / 2;
        const float* qr[kRowBlock];
        float* s[kRowBlock];
        uint8_t* vis[kRowBlock];
        float* o[kRowBlock];
        int jp[kRowBlock / 2];  // entries [jp, n) are visible to neither row of the pair
        int jmax = 0;
        for (int r = 0; r < nb; ++r) {
            const int i = b0 + r;
            qr[r] = q + size_t(i) * size_t(d);
            s[r] = probs ? probs + size_t(i) * size_t(n) : s_buf.data() + size_t(r) * size_t(n);
            vis[r] = vis_buf.data() + size_t(r) * size_t(n);
            o[r] = out ? out + size_t(i) * size_t(d) : nullptr;
        }
        for (int pr = 0; pr < npair; ++pr) {
            int32_t qp_max = std::numeric_limits<int32_t>::min();
            for (int r = 2 * pr; r < std::min(nb, 2 * pr + 2); ++r)
                qp_max =
                    std::max(qp_max, qpos ? qpos[b0 + r] : std::numeric_limits<int32_t>::max());
            jp[pr] = n;
            if (sorted && qpos) jp[pr] = int(std::upper_bound(kpos, kpos + n, qp_max) - kpos);
            jmax = std::max(jmax, jp[pr]);
        }
        // Scores, a tile of keys at a time (decoded once for all rows of the block).
        for (int t0 = 0; t0 < jmax; t0 += kTile) {
            const int t1 = std::min(jmax, t0 + kTile);
            const float* kt = ks.rows(t0, t1, d, tile.data());
            for (int pr = 0; pr < npair; ++pr) {
                if (jp[pr] <= t0) continue;
                const int nr = std::min(2, nb - 2 * pr);
                dots(qr + 2 * pr, nr, kt, t0, std::min(t1, jp[pr]), d, s + 2 * pr);
            }
        }
        // Softmax of each row.
        int lead[kRowBlock];
        for (int r = 0; r < nb; ++r)
            lse[b0 + r] =
                softmax_row(s[r], vis[r], jp[r / 2], n, kpos, qpos, b0 + r, bias, scale, &lead[r]);
        if (!out) continue;
        // Weighted sums, a tile of values at a time; each output channel's chain runs over the
        // visible entries in ascending order across tiles.
        for (int r = 0; r < nb; ++r) std::fill(o[r], o[r] + d, 0.0f);
        for (int t0 = 0; t0 < jmax; t0 += kTile) {
            const int t1 = std::min(jmax, t0 + kTile);
            const float* vt = vs.rows(t0, t1, d, tile.data());
            for (int pr = 0; pr < npair; ++pr) {
                if (jp[pr] <= t0) continue;
                const int nr = std::min(2, nb - 2 * pr);
                const int jall = nr == 2 ? std::min(lead[2 * pr], lead[2 * pr + 1]) : lead[2 * pr];
                weighted(s + 2 * pr, vis + 2 * pr, nr, vt, t0, std::min(t1, jp[pr]), jall, d,
                         o + 2 * pr);
            }
        }
        for (int r = 0; r < nb; ++r)
            if (lse[b0 + r] == kNegInf) std::fill(o[r], o[r] + d, 0.0f);
    }
}

bool rows_ok(const PackedRows& r) {
    return r.data && r.off && r.fmt && r.group >= 1;
}

// The argument rules of every entry point (attend.h).
Status check_args(int d, int nq, int n, const float* q, const float* lse, const float* out,
                  const float* probs, const int32_t* kpos, bool k_ok, bool v_ok) {
    if (d < 1 || nq < 0 || n < 0) return Status::invalid_argument;
    if (nq > 0 && (!q || !lse || (!out && !probs))) return Status::invalid_argument;
    if (n > 0 && (!kpos || !k_ok || (out && !v_ok))) return Status::invalid_argument;
    return Status::ok;
}

}  // namespace

Status attend_cpu(const float* q, const int32_t* qpos, int nq, const float* k, const float* v,
                  const int32_t* kpos, const float* bias, int n, int d, float scale, float* out,
                  float* lse, float* probs) {
    const Status st = check_args(d, nq, n, q, lse, out, probs, kpos, k, v);
    if (st != Status::ok || nq == 0) return st;
    attend_impl(q, qpos, nq, F32Rows{k}, F32Rows{v}, kpos, bias, n, d, scale, out, lse, probs);
    return Status::ok;
}

Status attend_packed_cpu(const float* q, const int32_t* qpos, int nq, const PackedRows& k,
                         const PackedRows& v, const int32_t* kpos, const float* bias, int n, int d,
                         float scale, float* out, float* lse, float* probs) {
    const Status st = check_args(d, nq, n, q, lse, out, probs, kpos, rows_ok(k), rows_ok(v));
    if (st != Status::ok || nq == 0) return st;
    attend_impl(q, qpos, nq, PackedSrc{&k}, PackedSrc{&v}, kpos, bias, n, d, scale, out, lse,
                probs);
    return Status::ok;
}

}  // namespace kvs::kernels
