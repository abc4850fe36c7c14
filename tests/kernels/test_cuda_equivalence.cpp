// CUDA vs CPU, one table for every op (in the spirit of llama.cpp's test-backend-ops): shapes
// with odd sizes (1, 19, 111, 989), every bit width and axis. Packed bytes must be identical;
// unpacked values identical; attention within NMSE 1e-10 and 1e-5 relative on lse. On failure
// it prints NMSE, max diff and the first mismatching bytes. Tagged [cuda]: without a device
// (or in a build without CUDA) each case is reported as skipped, with the reason (kvs_skip.h).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/device.h"
#include "kernels/ggml_blocks.h"
#include "kernels/mixed_attend.h"
#include "kernels/quant_pack.h"
#include "kvs_skip.h"

using namespace kvs::kernels;
using kvs_test::Rng;

namespace {

bool have_device() {
    const char* why = "";
    if (cuda_device_count(&why) > 0) return true;
    kvs_test::skip(std::string("no CUDA device (") + why + ")");
    return false;
}

// A device allocation freed on scope exit.
struct Dev {
    void* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t bytes) : n(bytes) {
        REQUIRE(device_alloc(&p, bytes ? bytes : 4) == Status::ok);
    }
    template <class T>
    explicit Dev(const std::vector<T>& v) : Dev(v.size() * sizeof(T)) {
        if (n) REQUIRE(copy_to_device(p, v.data(), n) == Status::ok);
    }
    ~Dev() { device_free(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    template <class T>
    std::vector<T> get() const {
        REQUIRE(device_synchronize() == Status::ok);
        std::vector<T> v(n / sizeof(T));
        if (n) REQUIRE(copy_to_host(v.data(), p, n) == Status::ok);
        return v;
    }
    template <class T>
    T* as() const {
        return static_cast<T*>(p);
    }
};

enum class Op { quant_pack, block_pack, mixed_attend, zscore_pack };
struct Case {
    Op op;
    int n_tok, d, bits, group;
    Axis axis;
    BlockFormat fmt;
    std::string name() const {
        std::ostringstream s;
        const char* ops[] = {"quant_pack", "block_pack", "mixed_attend", "zscore_pack"};
        s << ops[int(op)] << " n_tok=" << n_tok << " d=" << d;
        if (op == Op::quant_pack) s << " bits=" << bits << " g=" << group << " axis=" << int(axis);
        if (op == Op::zscore_pack) s << " bits=" << bits << " g=" << group;
        if (op == Op::block_pack) s << (fmt == BlockFormat::q8_0 ? " q8_0" : " q4_0");
        if (op == Op::mixed_attend) s << " g=" << group;
        return s.str();
    }
};

std::vector<Case> cases() {
    std::vector<Case> cs;
    for (int n_tok : {1, 19, 111, 989}) {
        for (int d : {1, 19, 64, 111, 128}) {
            for (int bits : {2, 4, 8, 16}) {
                for (int g : {7, 32}) {
                    for (Axis a : {Axis::per_token, Axis::per_channel}) {
                        cs.push_back({Op::quant_pack, n_tok, d, bits, g, a, BlockFormat::q8_0});
                    }
                    cs.push_back(
                        {Op::zscore_pack, n_tok, d, bits, g, Axis::per_token, BlockFormat::q8_0});
                }
            }
            for (BlockFormat f : {BlockFormat::q8_0, BlockFormat::q4_0}) {
                cs.push_back({Op::block_pack, n_tok, d, 0, 32, Axis::per_token, f});
            }
            cs.push_back({Op::mixed_attend, n_tok, d, 0, 32, Axis::per_token, BlockFormat::q8_0});
        }
    }
    return cs;
}

void check_bytes(const std::vector<uint8_t>& cpu, const std::vector<uint8_t>& gpu) {
    const std::string diff = kvs_test::byte_mismatches(cpu, gpu);
    INFO(diff);
    CHECK(diff.empty());
}
void check_values(const std::vector<float>& cpu, const std::vector<float>& gpu, double max_nmse) {
    const double e = kvs_test::nmse(cpu, gpu);
    INFO("NMSE " << e << " max diff " << kvs_test::max_abs_diff(cpu, gpu));
    CHECK(e <= max_nmse);
}

void run_quant_pack(const Case& c, Rng& rng) {
    auto x = kvs_test::kv_like(rng, c.n_tok, c.d);
    x[0] = std::numeric_limits<float>::infinity();  // the non-finite policy too
    const size_t n = quant_packed_bytes(c.n_tok, c.d, c.bits, c.group, c.axis);
    std::vector<uint8_t> cpu(n);
    quant_pack_cpu(x.data(), c.n_tok, c.d, c.bits, c.group, c.axis, cpu.data());
    Dev dx(x), dout(n);
    REQUIRE(quant_pack_cuda(dx.as<float>(), c.n_tok, c.d, c.bits, c.group, c.axis,
                            dout.as<uint8_t>(), nullptr) == Status::ok);
    check_bytes(cpu, dout.get<uint8_t>());
    std::vector<float> y(x.size());
    quant_unpack_cpu(cpu.data(), c.n_tok, c.d, c.bits, c.group, c.axis, y.data());
    Dev dp(cpu), dy(y.size() * 4);
    REQUIRE(quant_unpack_cuda(dp.as<uint8_t>(), c.n_tok, c.d, c.bits, c.group, c.axis,
                              dy.as<float>(), nullptr) == Status::ok);
    check_values(y, dy.get<float>(), 0.0);
}

void run_zscore_pack(const Case& c, Rng& rng) {
    auto x = kvs_test::kv_like(rng, c.n_tok, c.d);
    x[0] = std::numeric_limits<float>::quiet_NaN();  // the non-finite policy too
    const size_t n = quant_packed_bytes(c.n_tok, c.d, c.bits, c.group, Axis::per_token);
    std::vector<uint8_t> cpu(n);
    zscore_pack_cpu(x.data(), c.n_tok, c.d, c.bits, c.group, 2.5f, cpu.data());
    Dev dx(x), dout(n);
    REQUIRE(zscore_pack_cuda(dx.as<float>(), c.n_tok, c.d, c.bits, c.group, 2.5f,
                             dout.as<uint8_t>(), nullptr) == Status::ok);
    check_bytes(cpu, dout.get<uint8_t>());
}

void run_block_pack(const Case& c, Rng& rng) {
    const auto x = kvs_test::kv_like(rng, c.n_tok, c.d);
    const size_t n = block_packed_bytes(c.fmt, c.n_tok, c.d);
    std::vector<uint8_t> cpu(n);
    block_pack_cpu(c.fmt, x.data(), c.n_tok, c.d, cpu.data());
    Dev dx(x), dout(n);
    REQUIRE(block_pack_cuda(c.fmt, dx.as<float>(), c.n_tok, c.d, dout.as<uint8_t>(), nullptr) ==
            Status::ok);
    check_bytes(cpu, dout.get<uint8_t>());
    std::vector<float> y(x.size());
    block_unpack_cpu(c.fmt, cpu.data(), c.n_tok, c.d, y.data());
    Dev dp(cpu), dy(y.size() * 4);
    REQUIRE(block_unpack_cuda(c.fmt, dp.as<uint8_t>(), c.n_tok, c.d, dy.as<float>(), nullptr) ==
            Status::ok);
    check_values(y, dy.get<float>(), 0.0);
}

void run_mixed_attend(const Case& c, Rng& rng) {
    // n_tok tokens spread over the four widths (some classes may be empty).
    const int widths[4] = {16, 8, 4, 2};
    int sizes[4] = {c.n_tok / 7, c.n_tok / 3, c.n_tok / 4, 0};
    sizes[3] = c.n_tok - sizes[0] - sizes[1] - sizes[2];
    std::vector<std::vector<uint8_t>> kb(4), vb(4);
    std::vector<std::vector<int32_t>> pos(4);
    int next = 0;
    std::vector<PackedClass> host(4);
    for (int i = 0; i < 4; ++i) {
        const auto k = kvs_test::kv_like(rng, sizes[i], c.d),
                   v = kvs_test::kv_like(rng, sizes[i], c.d);
        kb[i].resize(quant_packed_bytes(sizes[i], c.d, widths[i], c.group, Axis::per_token));
        vb[i].resize(kb[i].size());
        quant_pack_cpu(k.data(), sizes[i], c.d, widths[i], c.group, Axis::per_token, kb[i].data());
        quant_pack_cpu(v.data(), sizes[i], c.d, widths[i], c.group, Axis::per_token, vb[i].data());
        for (int t = 0; t < sizes[i]; ++t) pos[i].push_back((next++ * 7919) % c.n_tok);
        host[i] = {widths[i], sizes[i], kb[i].data(), vb[i].data(), pos[i].data()};
    }
    std::vector<float> q(static_cast<size_t>(c.d));
    for (auto& v : q) v = rng.normal();
    const float scale = 1.0f / std::sqrt(float(c.d));
    std::vector<float> out(static_cast<size_t>(c.d)), probs(static_cast<size_t>(c.n_tok), 0.0f);
    float lse;
    REQUIRE(mixed_attend_cpu(q.data(), c.d, c.group, host.data(), 4, scale, out.data(), &lse,
                             probs.data(), c.n_tok) == Status::ok);

    std::vector<std::unique_ptr<Dev>> keep;
    std::vector<PackedClass> dev = host;
    for (int i = 0; i < 4; ++i) {
        keep.push_back(std::make_unique<Dev>(kb[i]));
        dev[i].k = keep.back()->as<uint8_t>();
        keep.push_back(std::make_unique<Dev>(vb[i]));
        dev[i].v = keep.back()->as<uint8_t>();
        keep.push_back(std::make_unique<Dev>(pos[i]));
        dev[i].pos = keep.back()->as<int32_t>();
    }
    Dev dq(q), dout(out.size() * 4), dlse(4), dprobs(probs.size() * 4);
    REQUIRE(device_memset(dprobs.p, 0, dprobs.n) == Status::ok);
    const size_t ws_bytes = mixed_attend_cuda_workspace_bytes(dev.data(), 4, c.d);
    Dev ws(ws_bytes);
    REQUIRE(mixed_attend_cuda(dq.as<float>(), c.d, c.group, dev.data(), 4, scale, dout.as<float>(),
                              dlse.as<float>(), dprobs.as<float>(), c.n_tok, ws.p, ws_bytes,
                              nullptr) == Status::ok);
    check_values(out, dout.get<float>(), 1e-10);
    check_values(probs, dprobs.get<float>(), 1e-10);
    const float glse = dlse.get<float>()[0];
    INFO("lse cpu " << lse << " cuda " << glse);
    CHECK(std::fabs(glse - lse) <= 1e-5 * std::max(1.0f, std::fabs(lse)));
}

}  // namespace

TEST_CASE("CUDA kernels equal the CPU reference (every op, odd shapes)", "[cuda]") {
    if (!have_device()) return;
    Rng rng(41);
    for (const Case& c : cases()) {
        INFO(c.name());
        switch (c.op) {
            case Op::quant_pack:
                run_quant_pack(c, rng);
                break;
            case Op::block_pack:
                run_block_pack(c, rng);
                break;
            case Op::mixed_attend:
                run_mixed_attend(c, rng);
                break;
            case Op::zscore_pack:
                run_zscore_pack(c, rng);
                break;
        }
    }
}

TEST_CASE("CUDA entry points reject bad arguments", "[cuda]") {
    if (!have_device()) return;
    CHECK(quant_pack_cuda(nullptr, 1, 64, 3, 32, Axis::per_token, nullptr, nullptr) ==
          Status::invalid_argument);
    CHECK(block_pack_cuda(BlockFormat::q4_0, nullptr, 1, 0, nullptr, nullptr) ==
          Status::invalid_argument);
    PackedClass c;
    c.bits = 5;
    c.n_tok = 1;
    float f = 0;
    CHECK(mixed_attend_cuda(&f, 8, 4, &c, 1, 1.0f, &f, &f, nullptr, 0, nullptr, 0, nullptr) ==
          Status::invalid_argument);
}

TEST_CASE("without a device the CUDA entry points say why", "[cpu]") {
    const char* why = nullptr;
    if (cuda_device_count(&why) > 0) return;
    REQUIRE(why != nullptr);
    CHECK(std::string(why).size() > 0);
#if !defined(KVS_HAVE_CUDA)
    CHECK(quant_pack_cuda(nullptr, 1, 64, 4, 32, Axis::per_token, nullptr, nullptr) ==
          Status::cuda_unavailable);
#endif
}
