// kernels/attend.h attend_packed_cpu and kernels/packed_rows.h: attention that reads the packed
// bytes of a compressed cache. Its contract: the same bits as attend_cpu over the rows that the
// formats' own unpack functions (quant_unpack_cpu, block_unpack_cpu) decode. The entries here mix
// every format in one store, laid out in a scrambled arena (rows need not be in order), over
// sizes that exercise the AVX2 paths (d, group multiples of 8), the scalar ones (odd d, group 12),
// several row blocks (16 rows) and key tiles (128 entries).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attend.h"
#include "kernels/detail/fp16.h"
#include "kernels/ggml_blocks.h"
#include "kernels/packed_rows.h"
#include "kernels/quant_pack.h"

using namespace kvs::kernels;

namespace {

uint16_t to_f16(float x) {  // via quant_pack's 16-bit passthrough (round to nearest even)
    uint8_t b[2];
    REQUIRE(quant_pack_cpu(&x, 1, 1, 16, 1, Axis::per_token, b) == Status::ok);
    return uint16_t(b[0] | (b[1] << 8));
}

// A store of n entries whose K and V rows are in `formats` (cycled per entry; KIVI key rows come
// in blocks of `blk` tokens), packed by the kernels' own pack functions. `dec_k/v` are the rows
// decoded by the unpack functions: the independent reading of the same bytes.
struct Store {
    std::vector<uint8_t> kdata, vdata;
    std::vector<uint32_t> koff, voff, kaux;
    std::vector<uint8_t> kfmt, vfmt;
    std::vector<float> dec_k, dec_v;
    PackedRows pk() const { return {kdata.data(), koff.data(), kaux.data(), kfmt.data(), group}; }
    PackedRows pv() const { return {vdata.data(), voff.data(), nullptr, vfmt.data(), group}; }
    int group = 32;
};

// Appends bytes to one of the arenas in front or at the back (scrambling the order of rows).
uint32_t put(std::vector<uint8_t>& a, const std::vector<uint8_t>& b, bool front,
             std::vector<uint32_t*> fix) {
    if (!front) {
        const auto o = uint32_t(a.size());
        a.insert(a.end(), b.begin(), b.end());
        return o;
    }
    a.insert(a.begin(), b.begin(), b.end());
    for (uint32_t* p : fix) *p += uint32_t(b.size());
    return 0;
}

void pack_row(RowFormat f, const float* x, int d, int group, std::vector<uint8_t>& bytes,
              float* dec) {
    switch (f) {
        case RowFormat::f32:
            bytes.resize(size_t(d) * 4);
            std::memcpy(bytes.data(), x, bytes.size());
            std::copy_n(x, d, dec);
            return;
        case RowFormat::f16:
            bytes.resize(size_t(d) * 2);
            for (int c = 0; c < d; ++c) {
                const uint16_t h = to_f16(x[c]);
                bytes[2 * size_t(c)] = uint8_t(h & 0xff);
                bytes[2 * size_t(c) + 1] = uint8_t(h >> 8);
            }
            REQUIRE(quant_unpack_cpu(bytes.data(), 1, d, 16, group, Axis::per_token, dec) ==
                    Status::ok);
            return;
        case RowFormat::q8_0:
        case RowFormat::q4_0: {
            const BlockFormat bf = f == RowFormat::q8_0 ? BlockFormat::q8_0 : BlockFormat::q4_0;
            bytes.resize(block_packed_bytes(bf, 1, d));
            REQUIRE(block_pack_cpu(bf, x, 1, d, bytes.data()) == Status::ok);
            REQUIRE(block_unpack_cpu(bf, bytes.data(), 1, d, dec) == Status::ok);
            return;
        }
        default: {
            const int bits = row_format_bits(f);
            bytes.resize(quant_packed_bytes(1, d, bits, group, Axis::per_token));
            REQUIRE(quant_pack_cpu(x, 1, d, bits, group, Axis::per_token, bytes.data()) ==
                    Status::ok);
            REQUIRE(quant_unpack_cpu(bytes.data(), 1, d, bits, group, Axis::per_token, dec) ==
                    Status::ok);
        }
    }
}

Store make_store(const std::vector<float>& k, const std::vector<float>& v, int n, int d, int group,
                 const std::vector<RowFormat>& formats, int blk, unsigned seed) {
    std::mt19937 rng(seed);
    Store s;
    s.group = group;
    s.koff.assign(size_t(n), 0);
    s.voff.assign(size_t(n), 0);
    s.kaux.assign(size_t(n), 0);
    s.kfmt.assign(size_t(n), 0);
    s.vfmt.assign(size_t(n), 0);
    s.dec_k.assign(size_t(n) * d, 0.0f);
    s.dec_v.assign(size_t(n) * d, 0.0f);
    std::vector<uint8_t> bytes;
    auto all_k = [&] {
        std::vector<uint32_t*> p;
        for (auto& o : s.koff) p.push_back(&o);
        for (auto& o : s.kaux) p.push_back(&o);
        return p;
    };
    auto all_v = [&] {
        std::vector<uint32_t*> p;
        for (auto& o : s.voff) p.push_back(&o);
        return p;
    };
    size_t fi = 0;
    for (int j = 0; j < n;) {
        const RowFormat f = formats[fi++ % formats.size()];
        const bool kivi = f == RowFormat::kv2 || f == RowFormat::kv4 || f == RowFormat::kv8;
        const int nt = kivi ? std::min(blk, n - j) : 1;
        const int bits = row_format_bits(f);
        if (kivi) {
            // Keys of nt tokens per channel: params once, then one code row per token.
            std::vector<uint8_t> packed(quant_packed_bytes(nt, d, bits, nt, Axis::per_channel));
            REQUIRE(quant_pack_cpu(k.data() + size_t(j) * d, nt, d, bits, nt, Axis::per_channel,
                                   packed.data()) == Status::ok);
            REQUIRE(quant_unpack_cpu(packed.data(), nt, d, bits, nt, Axis::per_channel,
                                     s.dec_k.data() + size_t(j) * d) == Status::ok);
            const size_t params = 4 * size_t(d), rb = (size_t(d) * bits + 7) / 8;
            const uint32_t aux = put(s.kdata, {packed.begin(), packed.begin() + ptrdiff_t(params)},
                                     rng() % 2 == 0, all_k());
            for (int t = 0; t < nt; ++t) s.kaux[size_t(j + t)] = aux;
            for (int t = 0; t < nt; ++t) {
                const auto b0 = packed.begin() + ptrdiff_t(params + size_t(t) * rb);
                const uint32_t o = put(s.kdata, {b0, b0 + ptrdiff_t(rb)}, rng() % 2 == 0, all_k());
                s.koff[size_t(j + t)] = o;
                s.kfmt[size_t(j + t)] = uint8_t(f);
                // Values of a KIVI token: per token at the same width.
                const RowFormat vf = bits == 2   ? RowFormat::pt2
                                     : bits == 4 ? RowFormat::pt4
                                                 : RowFormat::pt8;
                pack_row(vf, v.data() + size_t(j + t) * d, d, group, bytes,
                         s.dec_v.data() + size_t(j + t) * d);
                s.voff[size_t(j + t)] = put(s.vdata, bytes, rng() % 2 == 0, all_v());
                s.vfmt[size_t(j + t)] = uint8_t(vf);
            }
        } else {
            pack_row(f, k.data() + size_t(j) * d, d, group, bytes, s.dec_k.data() + size_t(j) * d);
            s.koff[size_t(j)] = put(s.kdata, bytes, rng() % 2 == 0, all_k());
            s.kfmt[size_t(j)] = uint8_t(f);
            pack_row(f, v.data() + size_t(j) * d, d, group, bytes, s.dec_v.data() + size_t(j) * d);
            s.voff[size_t(j)] = put(s.vdata, bytes, rng() % 2 == 0, all_v());
            s.vfmt[size_t(j)] = uint8_t(f);
        }
        j += nt;
    }
    return s;
}

const std::vector<RowFormat> kAll = {
    RowFormat::f32, RowFormat::f16, RowFormat::pt2, RowFormat::pt4,  RowFormat::pt8,
    RowFormat::kv2, RowFormat::kv4, RowFormat::kv8, RowFormat::q8_0, RowFormat::q4_0};

}  // namespace

TEST_CASE("packed rows: dequant_rows equals the formats' own unpack functions", "[cpu]") {
    for (int d : {64, 72, 13, 8}) {
        for (int group : {32, 12, 8}) {
            const int n = 61;
            std::mt19937 rng(unsigned(d * 100 + group));
            std::normal_distribution<float> nd(0.0f, 2.0f);
            std::vector<float> k(size_t(n) * d), v(k.size());
            for (auto& x : k) x = nd(rng);
            for (auto& x : v) x = nd(rng);
            const Store s = make_store(k, v, n, d, group, kAll, 5, unsigned(d + group));
            std::vector<float> xk(k.size()), xv(v.size());
            dequant_rows(s.pk(), 0, n, d, xk.data());
            dequant_rows(s.pv(), 0, n, d, xv.data());
            INFO("d " << d << " group " << group);
            CHECK(std::memcmp(xk.data(), s.dec_k.data(), xk.size() * 4) == 0);
            CHECK(std::memcmp(xv.data(), s.dec_v.data(), xv.size() * 4) == 0);
            // The rows really are different from the originals (the formats are lossy), so the
            // comparison above is not trivially true.
            CHECK(std::memcmp(xk.data(), k.data(), xk.size() * 4) != 0);
        }
    }
}

TEST_CASE("packed rows: bytes per row are the formats' sizes", "[cpu]") {
    CHECK(row_format_bytes(RowFormat::f32, 64, 32) == 256);
    CHECK(row_format_bytes(RowFormat::f16, 64, 32) == 128);
    // Per token: 2 groups x 4 bytes of {scale, zero} + 64 x 4 bits.
    CHECK(row_format_bytes(RowFormat::pt4, 64, 32) ==
          quant_packed_bytes(1, 64, 4, 32, Axis::per_token));
    CHECK(row_format_bytes(RowFormat::pt4, 64, 32) == 8 + 32);
    CHECK(row_format_bytes(RowFormat::pt2, 72, 32) == 12 + 18);
    // KIVI rows: codes only (the block's params are shared).
    CHECK(row_format_bytes(RowFormat::kv2, 64, 32) == 16);
    CHECK(row_format_bytes(RowFormat::q8_0, 64, 32) ==
          block_packed_bytes(BlockFormat::q8_0, 1, 64));
    CHECK(row_format_bytes(RowFormat::q4_0, 64, 32) == 36);
}

TEST_CASE("attend_packed: the same bits as attend_cpu over the decoded rows", "[cpu]") {
    struct Shape {
        int nq, n, d, group;
        bool causal, bias;
    };
    // Decode-like (3 rows), chunk-like (37 rows: 3 row blocks), long stores (300: 3 key tiles).
    for (const Shape sh : {Shape{3, 300, 64, 32, false, false}, Shape{37, 150, 64, 32, true, true},
                           Shape{5, 263, 72, 8, true, false}, Shape{19, 77, 13, 12, true, true},
                           Shape{1, 1, 64, 32, false, false}}) {
        std::mt19937 rng(unsigned(sh.nq * 1000 + sh.n));
        std::normal_distribution<float> nd(0.0f, 1.5f);
        std::vector<float> q(size_t(sh.nq) * sh.d), k(size_t(sh.n) * sh.d), v(k.size());
        for (auto* x : {&q, &k, &v})
            for (auto& e : *x) e = nd(rng);
        std::vector<int32_t> kpos(size_t(sh.n)), qpos;
        for (int j = 0; j < sh.n; ++j) kpos[size_t(j)] = 2 * j;
        for (int i = 0; sh.causal && i < sh.nq; ++i)
            qpos.push_back(int32_t(rng() % uint32_t(2 * sh.n + 2)) - 1);
        std::vector<float> bias;
        for (int j = 0; sh.bias && j < sh.n; ++j) bias.push_back(std::log(float(1 + rng() % 4)));
        const Store s = make_store(k, v, sh.n, sh.d, sh.group, kAll, 7, 42u);
        const float scale = 0.125f;
        const size_t od = size_t(sh.nq) * sh.d, pn = size_t(sh.nq) * sh.n;
        std::vector<float> o1(od), o2(od), l1(size_t(sh.nq)), l2(size_t(sh.nq)), p1(pn), p2(pn);
        const int32_t* qp = sh.causal ? qpos.data() : nullptr;
        const float* bp = sh.bias ? bias.data() : nullptr;
        REQUIRE(attend_cpu(q.data(), qp, sh.nq, s.dec_k.data(), s.dec_v.data(), kpos.data(), bp,
                           sh.n, sh.d, scale, o1.data(), l1.data(), p1.data()) == Status::ok);
        REQUIRE(attend_packed_cpu(q.data(), qp, sh.nq, s.pk(), s.pv(), kpos.data(), bp, sh.n, sh.d,
                                  scale, o2.data(), l2.data(), p2.data()) == Status::ok);
        INFO("nq " << sh.nq << " n " << sh.n << " d " << sh.d << " group " << sh.group);
        CHECK(std::memcmp(o1.data(), o2.data(), od * 4) == 0);
        CHECK(std::memcmp(l1.data(), l2.data(), size_t(sh.nq) * 4) == 0);
        CHECK(std::memcmp(p1.data(), p2.data(), pn * 4) == 0);
        // Without probabilities (the decode path) the output is the same too.
        std::vector<float> o3(od), l3(size_t(sh.nq));
        REQUIRE(attend_packed_cpu(q.data(), qp, sh.nq, s.pk(), s.pv(), kpos.data(), bp, sh.n, sh.d,
                                  scale, o3.data(), l3.data(), nullptr) == Status::ok);
        CHECK(std::memcmp(o1.data(), o3.data(), od * 4) == 0);
        // And the decoded rows are not the originals: attention over the originals differs
        // (where the store has lossy entries: a single entry is the f32 one).
        if (sh.n == 1) continue;
        std::vector<float> o4(od), l4(size_t(sh.nq));
        REQUIRE(attend_cpu(q.data(), qp, sh.nq, k.data(), v.data(), kpos.data(), bp, sh.n, sh.d,
                           scale, o4.data(), l4.data(), nullptr) == Status::ok);
        CHECK(std::memcmp(o1.data(), o4.data(), od * 4) != 0);
    }
}

TEST_CASE("attend_packed: bad arguments are refused without writing", "[cpu]") {
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8] = {7, 7, 7, 7, 7, 7, 7, 7}, lse = 7;
    const int32_t kpos[1] = {0};
    const uint32_t off[1] = {0};
    const uint8_t fmt[1] = {uint8_t(RowFormat::f32)};
    const PackedRows ok{reinterpret_cast<const uint8_t*>(q), off, nullptr, fmt, 32};
    PackedRows no_data = ok, no_fmt = ok, bad_group = ok;
    no_data.data = nullptr;
    no_fmt.fmt = nullptr;
    bad_group.group = 0;
    CHECK(attend_packed_cpu(q, nullptr, 1, no_data, ok, kpos, nullptr, 1, 8, 1, out, &lse,
                            nullptr) == Status::invalid_argument);
    CHECK(attend_packed_cpu(q, nullptr, 1, ok, no_fmt, kpos, nullptr, 1, 8, 1, out, &lse,
                            nullptr) == Status::invalid_argument);
    CHECK(attend_packed_cpu(q, nullptr, 1, bad_group, ok, kpos, nullptr, 1, 8, 1, out, &lse,
                            nullptr) == Status::invalid_argument);
    CHECK(attend_packed_cpu(q, nullptr, 1, ok, ok, nullptr, nullptr, 1, 8, 1, out, &lse, nullptr) ==
          Status::invalid_argument);
    CHECK((out[0] == 7 && lse == 7));
    // The valid store: one f32 entry, attention gives back its value row.
    REQUIRE(attend_packed_cpu(q, nullptr, 1, ok, ok, kpos, nullptr, 1, 8, 1, out, &lse, nullptr) ==
            Status::ok);
    CHECK(std::memcmp(out, q, sizeof(q)) == 0);
}

TEST_CASE("packed rows: low-rank rows are their coefficients times the basis, by hand", "[cpu]") {
    // d = 4, basis b0 = (1, 0, 0, 0), b1 = (0, 0.6, 0.8, 0); row 0 (lr32): c = (2, 5) ->
    // (2, 3, 4, 0); row 1 (lr16): c = (-1, 0.5) as fp16 -> (-1, 0.3, 0.4, 0) (0.6 * 0.5 etc.
    // in fp32).
    const int d = 4;
    std::vector<uint8_t> data;
    auto put_u32 = [&](uint32_t x) {
        uint8_t b[4];
        std::memcpy(b, &x, 4);
        data.insert(data.end(), b, b + 4);
    };
    auto put_f32 = [&](float x) {
        uint8_t b[4];
        std::memcpy(b, &x, 4);
        data.insert(data.end(), b, b + 4);
    };
    auto put_f16 = [&](float x) {
        const uint16_t h = kvs::kernels::detail::fp32_to_fp16_rne(x);
        data.push_back(uint8_t(h & 0xff));
        data.push_back(uint8_t(h >> 8));
    };
    const uint32_t basis = uint32_t(data.size());
    put_u32(2);
    for (float x : {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.6f, 0.8f, 0.0f}) put_f32(x);
    const uint32_t r0 = uint32_t(data.size());
    put_f32(2.0f);
    put_f32(5.0f);
    const uint32_t r1 = uint32_t(data.size());
    put_f16(-1.0f);
    put_f16(0.5f);
    const uint32_t off[2] = {r0, r1}, aux[2] = {basis, basis};
    const uint8_t fmt[2] = {uint8_t(RowFormat::lr32), uint8_t(RowFormat::lr16)};
    const PackedRows rows{data.data(), off, aux, fmt, 32};
    std::vector<float> x(8);
    dequant_rows(rows, 0, 2, d, x.data());
    CHECK(x == std::vector<float>{2.0f, std::fmaf(5.0f, 0.6f, 0.0f), std::fmaf(5.0f, 0.8f, 0.0f),
                                  0.0f, -1.0f, 0.5f * 0.6f, 0.5f * 0.8f, 0.0f});
    CHECK(low_rank_of(data.data() + basis) == 2);
    CHECK(row_format_bytes(RowFormat::lr16, 2, 32) == 4);  // d = the rank: 2 coefficients
    CHECK(row_format_bytes(RowFormat::lr32, 2, 32) == 8);
    // Attention over them: the bits of attend_cpu over the decoded rows.
    const std::vector<float> q = {0.3f, -0.2f, 0.1f, 0.5f};
    const int32_t kpos[2] = {0, 1}, qpos[1] = {1};
    float o1[4], o2[4], l1, l2;
    REQUIRE(attend_packed_cpu(q.data(), qpos, 1, rows, rows, kpos, nullptr, 2, d, 0.5f, o1, &l1,
                              nullptr) == Status::ok);
    REQUIRE(attend_cpu(q.data(), qpos, 1, x.data(), x.data(), kpos, nullptr, 2, d, 0.5f, o2, &l2,
                       nullptr) == Status::ok);
    CHECK(std::memcmp(o1, o2, sizeof o1) == 0);
    CHECK(l1 == l2);
}
