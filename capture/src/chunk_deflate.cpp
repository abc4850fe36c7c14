// The gzip:1 chunk encoder (see chunk_deflate.h). Stream layout (RFC 1950 / 1951):
//   zlib header 78 01
//   planes 0 .. elt-2: stored blocks (BTYPE 00, <= 65535 bytes each)
//   plane elt-1: dynamic-Huffman blocks (BTYPE 10) of literals, one code for the whole plane;
//                the last block is final
//   Adler-32 of the shuffled bytes, big-endian
// Runs of >= 1 KiB of zero bytes in any plane (the padding of a trace's last, partial chunk)
// become fixed-Huffman blocks (BTYPE 01) of one literal 0 and copies at distance 1.
// A dynamic block's header sends 257 literal/length code lengths and one distance code of
// length 0 (no distances: literals only), each length coded with the code-length code (symbols
// 0-15, no run-length symbols: the header is < 300 bytes against >= 64 KiB chunks).
#include "capture/chunk_deflate.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <queue>

#include "engine/error.h"

namespace kvs::capture {

namespace {

constexpr int kLitCodes = 257;  // 256 literals + end-of-block
constexpr int kEob = 256;
// The order in which a dynamic block header lists the code-length code lengths.
constexpr int kClOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

// LSB-first bit packing into a buffer sized in advance (with 8 bytes of slack at its end):
// put() always stores the whole 64-bit accumulator and advances by the bytes completed, so the
// Huffman loop has no data-dependent branch.
class BitWriter {
  public:
    explicit BitWriter(uint8_t* p) : p_(p) {}
    void put(uint64_t bits, int n) {  // n <= 56
        acc_ |= bits << fill_;
        fill_ += n;
        std::memcpy(p_, &acc_, 8);  // little-endian host (x86-64)
        const int done = fill_ >> 3;
        p_ += done;
        acc_ = done == 8 ? 0 : acc_ >> (8 * done);
        fill_ &= 7;
    }
    void align() {
        if (fill_ > 0) *p_++ = uint8_t(acc_);
        acc_ = 0;
        fill_ = 0;
    }
    void bytes(const uint8_t* src, size_t n) {  // after align()
        std::memcpy(p_, src, n);
        p_ += n;
    }
    uint8_t* pos() const { return p_; }

  private:
    uint8_t* p_;
    uint64_t acc_ = 0;
    int fill_ = 0;
};

// Lengths of a Huffman code for freq[0..n) (0 = unused symbol), at most max_bits long: an
// optimal code, or, when that is too deep, the optimal code of flattened frequencies.
void huffman_lengths(const uint64_t* freq_in, int n, int max_bits, uint8_t* len) {
    std::vector<uint64_t> freq(freq_in, freq_in + n);
    std::vector<int> parent(size_t(2 * n));
    for (;;) {
        using Node = std::pair<uint64_t, int>;  // (weight, node); leaves are 0..n-1
        std::priority_queue<Node, std::vector<Node>, std::greater<Node>> heap;
        for (int s = 0; s < n; ++s)
            if (freq[size_t(s)] > 0) heap.push({freq[size_t(s)], s});
        std::fill(len, len + n, uint8_t(0));
        if (heap.size() == 1) {
            len[heap.top().second] = 1;
            return;
        }
        int next = n;
        while (heap.size() > 1) {
            const Node a = heap.top();
            heap.pop();
            const Node b = heap.top();
            heap.pop();
            parent[size_t(a.second)] = parent[size_t(b.second)] = next;
            heap.push({a.first + b.first, next++});
        }
        const int root = next - 1;
        int deepest = 0;
        for (int s = 0; s < n; ++s) {
            if (freq[size_t(s)] == 0) continue;
            int d = 0;
            for (int v = s; v != root; v = parent[size_t(v)]) ++d;
            len[s] = uint8_t(std::min(d, 255));
            deepest = std::max(deepest, d);
        }
        if (deepest <= max_bits) return;
        for (uint64_t& f : freq)
            if (f > 0) f = (f + 1) / 2;  // halve the spread, keep every symbol
    }
}

// Canonical codes (RFC 1951, 3.2.2), bit-reversed for LSB-first output.
void canonical_codes(const uint8_t* len, int n, uint32_t* code) {
    int count[16] = {};
    for (int s = 0; s < n; ++s) ++count[len[s]];
    count[0] = 0;
    uint32_t next[16] = {};
    uint32_t c = 0;
    for (int b = 1; b < 16; ++b) {
        c = (c + uint32_t(count[b - 1])) << 1;
        next[b] = c;
    }
    for (int s = 0; s < n; ++s) {
        if (len[s] == 0) continue;
        const uint32_t v = next[len[s]]++;
        uint32_t r = 0;
        for (int i = 0; i < len[s]; ++i) r |= ((v >> i) & 1u) << (len[s] - 1 - i);
        code[s] = r;
    }
}

// A run of zero bytes, or of data, in a byte plane.
struct Segment {
    size_t b, e;
    bool zero;
};

// Splits plane [0, n) into data and runs of >= kMinZeroRun zero bytes (the padding of a last,
// partial chunk: rows of zeros after each head's tokens).
constexpr size_t kMinZeroRun = 1024;
void split_zero_runs(const uint8_t* p, size_t n, std::vector<Segment>& seg) {
    seg.clear();
    size_t data_b = 0, i = 0;
    while (i < n) {
        if (p[i] != 0) {
            ++i;
            continue;
        }
        size_t e = i;
        while (e + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, p + e, 8);
            if (w != 0) break;
            e += 8;
        }
        while (e < n && p[e] == 0) ++e;
        if (e - i >= kMinZeroRun) {
            if (i > data_b) seg.push_back({data_b, i, false});
            seg.push_back({i, e, true});
            data_b = e;
        }
        i = e;
    }
    if (n > data_b) seg.push_back({data_b, n, false});
}

// A fixed-Huffman block (BTYPE 01) holding `len` zero bytes: a literal 0, then copies of
// distance 1 (length 258, then the rest).
void zero_run_block(BitWriter& bw, size_t len, bool final) {
    // Fixed codes (RFC 1951, 3.2.6), bit-reversed: literal 0 = 00110000 (8 bits), symbols
    // 256-279 = 7 bits from 0000000, 280-287 = 8 bits from 11000000; distance code 0 = 00000.
    auto rev = [](uint32_t v, int n) {
        uint32_t r = 0;
        for (int i = 0; i < n; ++i) r |= ((v >> i) & 1u) << (n - 1 - i);
        return r;
    };
    auto length_symbol = [&](int sym) {
        if (sym < 280)
            bw.put(rev(uint32_t(sym - 256), 7), 7);
        else
            bw.put(rev(uint32_t(0xc0 + sym - 280), 8), 8);
    };
    auto literal0 = [&] { bw.put(rev(0x30, 8), 8); };
    bw.put(final ? 1 : 0, 1);
    bw.put(1, 2);  // BTYPE 01
    literal0();
    size_t rest = len - 1;
    while (rest >= 3) {
        const int l = int(std::min<size_t>(rest, 258));
        if (l == 258) {
            length_symbol(285);
        } else {
            // Length codes 257-284: base lengths and extra bits (RFC 1951, 3.2.5).
            static constexpr int kBase[28] = {3,  4,  5,  6,   7,   8,   9,   10, 11, 13,
                                              15, 17, 19, 23,  27,  31,  35,  43, 51, 59,
                                              67, 83, 99, 115, 131, 163, 195, 227};
            static constexpr int kExtra[28] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2,
                                               2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5};
            int k = 27;
            while (kBase[k] > l) --k;
            length_symbol(257 + k);
            bw.put(uint32_t(l - kBase[k]), kExtra[k]);
        }
        bw.put(0, 5);  // distance code 0: distance 1
        rest -= size_t(l);
    }
    for (; rest > 0; --rest) literal0();
    length_symbol(256);  // end of block
}

}  // namespace

void deflate_chunk(const uint8_t* src, size_t n_elem, size_t elt, std::vector<uint8_t>& planes,
                   std::vector<uint8_t>& out) {
    KVS_ASSERT(n_elem > 0 && elt >= 1 && elt <= 8);
    const size_t n = n_elem * elt;
    // Shuffle: plane j holds byte j of every element (little-endian: plane elt-1 is the top).
    planes.resize(n);
    if (elt == 2) {
        uint8_t* lo = planes.data();
        uint8_t* hi = planes.data() + n_elem;
        for (size_t i = 0; i < n_elem; ++i) {
            lo[i] = src[2 * i];
            hi[i] = src[2 * i + 1];
        }
    } else {
        for (size_t i = 0; i < n_elem; ++i)
            for (size_t j = 0; j < elt; ++j) planes[j * n_elem + i] = src[i * elt + j];
    }
    const uint8_t* low = planes.data();
    const size_t n_low = (elt - 1) * n_elem;
    const uint8_t* top = planes.data() + n_low;
    std::vector<Segment> low_seg, top_seg;
    split_zero_runs(low, n_low, low_seg);
    split_zero_runs(top, n_elem, top_seg);

    // The literal code of the top plane's data.
    uint64_t freq[kLitCodes] = {};
    {
        uint32_t h[4][256] = {};
        for (const Segment& sg : top_seg) {
            if (sg.zero) continue;
            size_t i = sg.b;
            for (; i + 4 <= sg.e; i += 4) {
                ++h[0][top[i]];
                ++h[1][top[i + 1]];
                ++h[2][top[i + 2]];
                ++h[3][top[i + 3]];
            }
            for (; i < sg.e; ++i) ++h[0][top[i]];
        }
        for (int s = 0; s < 256; ++s) freq[s] = uint64_t(h[0][s]) + h[1][s] + h[2][s] + h[3][s];
        freq[kEob] = 1;
    }
    uint8_t lit_len[kLitCodes];
    uint32_t lit_code[kLitCodes] = {};
    huffman_lengths(freq, kLitCodes, 15, lit_len);
    canonical_codes(lit_len, kLitCodes, lit_code);

    // The code-length code, over the 257 literal/length lengths and one distance length (0).
    uint64_t cl_freq[19] = {};
    for (int s = 0; s < kLitCodes; ++s) ++cl_freq[lit_len[s]];
    ++cl_freq[0];
    int used = 0;
    for (uint64_t f : cl_freq) used += f > 0;
    if (used == 1) ++cl_freq[cl_freq[1] ? 2 : 1];  // inflate wants a complete code: two symbols
    uint8_t cl_len[19];
    uint32_t cl_code[19] = {};
    huffman_lengths(cl_freq, 19, 7, cl_len);
    canonical_codes(cl_len, 19, cl_code);

    // Bound: zlib header; stored data and 5 bytes per stored block; per top-plane data block a
    // header (< 400 bytes) and 15 bits per literal; per zero run ~13 bits per 258 bytes + 8
    // bytes; Adler-32.
    const size_t n_blocks = low_seg.size() + top_seg.size();
    const size_t bound = 2 + n_low + 5 * (n_low / 65535 + n_blocks) + 400 * n_blocks +
                         (n_elem * 15 + 7) / 8 + n / 64 + 8;
    if (out.size() < bound + 8) out.resize(bound + 8);  // + the bit writer's slack
    uint8_t* const begin = out.data();
    begin[0] = 0x78;  // deflate, 32 KiB window
    begin[1] = 0x01;  // no dictionary, "fastest"; (0x78 * 256 + 0x01) % 31 == 0
    BitWriter bw(begin + 2);
    for (const Segment& sg : low_seg) {
        if (sg.zero) {
            zero_run_block(bw, sg.e - sg.b, false);
            continue;
        }
        for (size_t at = sg.b; at < sg.e;) {
            const size_t k = std::min<size_t>(65535, sg.e - at);
            bw.put(0, 1);  // BFINAL 0
            bw.put(0, 2);  // BTYPE 00: stored
            bw.align();
            const uint8_t hdr[4] = {uint8_t(k), uint8_t(k >> 8), uint8_t(~k), uint8_t(~k >> 8)};
            bw.bytes(hdr, 4);
            bw.bytes(low + at, k);
            at += k;
        }
    }
    uint32_t packed[256];  // code | length << 24
    for (int s = 0; s < 256; ++s) packed[s] = lit_code[s] | uint32_t(lit_len[s]) << 24;
    for (size_t si = 0; si < top_seg.size(); ++si) {
        const Segment& sg = top_seg[si];
        const bool final = si + 1 == top_seg.size();
        if (sg.zero) {
            zero_run_block(bw, sg.e - sg.b, final);
            continue;
        }
        bw.put(final ? 1 : 0, 1);
        bw.put(2, 2);                // BTYPE 10: dynamic Huffman
        bw.put(kLitCodes - 257, 5);  // HLIT
        bw.put(0, 5);                // HDIST: one distance code
        bw.put(19 - 4, 4);           // HCLEN: all 19 code-length code lengths
        for (int i = 0; i < 19; ++i) bw.put(cl_len[kClOrder[i]], 3);
        for (int s = 0; s < kLitCodes; ++s) bw.put(cl_code[lit_len[s]], cl_len[lit_len[s]]);
        bw.put(cl_code[0], cl_len[0]);  // the distance code's length: 0
        // Three literals (<= 45 bits) per put: a shorter dependency chain through the writer.
        size_t i = sg.b;
        for (; i + 3 <= sg.e; i += 3) {
            const uint32_t p0 = packed[top[i]], p1 = packed[top[i + 1]], p2 = packed[top[i + 2]];
            const int l0 = int(p0 >> 24), l1 = int(p1 >> 24), l2 = int(p2 >> 24);
            const uint64_t bits = uint64_t(p0 & 0xffffffu) | uint64_t(p1 & 0xffffffu) << l0 |
                                  uint64_t(p2 & 0xffffffu) << (l0 + l1);
            bw.put(bits, l0 + l1 + l2);
        }
        for (; i < sg.e; ++i) {
            const uint32_t p = packed[top[i]];
            bw.put(p & 0xffffffu, int(p >> 24));
        }
        bw.put(lit_code[kEob], lit_len[kEob]);
    }
    bw.align();
    const uint32_t adler = uint32_t(adler32_z(1, planes.data(), n));
    const uint8_t tail[4] = {uint8_t(adler >> 24), uint8_t(adler >> 16), uint8_t(adler >> 8),
                             uint8_t(adler)};
    bw.bytes(tail, 4);
    const size_t size = size_t(bw.pos() - begin);
    KVS_ASSERT(size <= bound);
    out.resize(size);  // keeps the capacity for the next chunk
}

bool inflate_chunk(const uint8_t* in, size_t n_in, size_t n_elem, size_t elt,
                   std::vector<uint8_t>& out) {
    const size_t n = n_elem * elt;
    std::vector<uint8_t> planes(n + 1);
    uLongf got = uLongf(n + 1);
    if (uncompress(planes.data(), &got, in, uLong(n_in)) != Z_OK || got != n) return false;
    out.resize(n);
    for (size_t i = 0; i < n_elem; ++i)
        for (size_t j = 0; j < elt; ++j) out[i * elt + j] = planes[j * n_elem + i];
    return true;
}

}  // namespace kvs::capture
