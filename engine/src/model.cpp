// The transformer forward pass shared by every registered architecture (see models/).
//
// Per layer, for a chunk of n_tok tokens (x: [n_tok, n_embd]):
//   h = rmsnorm(x) * attn_norm
//   q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)     -> [n_heads, n_tok, d], RoPE on q, k
//   cache.append(k, v); o, lse = cache.attend(q)          -> hook "attn.*" published here
//   x += o Wo^T
//   h = rmsnorm(x) * ffn_norm;  x += (silu(h Wg^T) * h Wu^T) Wd^T
// then logits = rmsnorm(x) * output_norm  Wout^T (Wout = token embedding when tied).
#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "engine/error.h"
#include "engine/parallel.h"
#include "engine/quant_matvec.h"
#include "engine/rope.h"
#include "engine/weights.h"

namespace kvs {

namespace {

// y[n, out] = x[n, in] * w[out, in]^T. The output features are cut into slices (a function of
// `out` only) that the engine's threads (engine/parallel.h) take one at a time, each computed
// single-threaded.
// The slices do not depend on the thread count, so neither do the results (bit for bit): Eigen
// gives other roundings for other slice widths (measured on a tiny model, tests/engine/
// test_parallel.cpp). Eigen's own GEMM threading spends most of its
// time spinning on 2 cores (measured: 2 threads slower than 1), and it does not thread the GEMV
// at all (the build defines EIGEN_DONT_PARALLELIZE). For a few rows (decode), weights that the
// file stores as ggml blocks are read directly (quant_matvec): fewer bytes per weight.
// y_data: row-major [n, out], written in place (the logits go straight into the caller's buffer).
void matmul_into(const MatrixRM& x, const Weight& w, float* y_data) {
    const Eigen::Index out = w.f32.rows(), n = x.rows();
    Eigen::Map<MatrixRM> y(y_data, n, out);
    const bool direct = w.q_data && n <= 2;
    if (direct) {
        // Each feature's dot product is the same whatever the slice: 4 slices per thread (so
        // that a thread that is late to start leaves its share to the others), aligned to 16
        // features (whole cache lines of y).
        parallel_run(4 * parallel_threads(), [&](int t, int nt) {
            const Eigen::Index r0 = out * t / nt / 16 * 16;
            const Eigen::Index r1 = t + 1 == nt ? out : out * (t + 1) / nt / 16 * 16;
            for (Eigen::Index i = 0; r1 > r0 && i < n; ++i)
                quant_matvec(w.q_type, w.q_data, w.q_row_bytes, x.cols(), x.row(i).data(),
                             y.row(i).data() + r0, r0, r1);
        });
        return;
    }
    // 12 slices (whole for 1, 2, 3, 4 and 6 threads), of a multiple of 16 features, at most 256.
    const Eigen::Index width =
        std::min<Eigen::Index>(256, std::max<Eigen::Index>(16, ((out + 11) / 12 + 15) / 16 * 16));
    parallel_for_dynamic((out + width - 1) / width, [&](int64_t s) {
        const Eigen::Index r0 = s * width, r1 = std::min(out, r0 + width);
        y.middleCols(r0, r1 - r0).noalias() = x * w.f32.middleRows(r0, r1 - r0).transpose();
    });
}

void matmul(const MatrixRM& x, const Weight& w, MatrixRM& y) {
    y.resize(x.rows(), w.f32.rows());
    matmul_into(x, w, y.data());
}

void rmsnorm(const MatrixRM& x, const Eigen::VectorXf& w, float eps, MatrixRM& y) {
    y.resize(x.rows(), x.cols());
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
        const float ms = x.row(t).squaredNorm() / float(x.cols());
        y.row(t) = x.row(t).cwiseProduct(w.transpose()) * (1.0f / std::sqrt(ms + eps));
    }
}

// [n_tok, n_heads*d] -> [n_heads, n_tok, d]
void split_heads(const MatrixRM& x, int n_heads, int d, std::vector<float>& out) {
    const Eigen::Index n_tok = x.rows();
    out.resize(size_t(n_heads) * n_tok * d);
    for (int h = 0; h < n_heads; ++h)
        for (Eigen::Index t = 0; t < n_tok; ++t)
            std::copy_n(x.data() + t * x.cols() + h * d, d,
                        out.data() + (size_t(h) * n_tok + t) * d);
}

// [n_heads, n_tok, d] -> [n_tok, n_heads*d]
void merge_heads(const std::vector<float>& in, int n_heads, int n_tok, int d, MatrixRM& x) {
    x.resize(n_tok, Eigen::Index(n_heads) * d);
    for (int h = 0; h < n_heads; ++h)
        for (int t = 0; t < n_tok; ++t)
            std::copy_n(in.data() + (size_t(h) * n_tok + t) * d, d,
                        x.data() + t * x.cols() + h * d);
}

Weight load_matrix(const WeightSource& src, const std::string& name, int64_t rows, int64_t cols) {
    const auto shape = src.shape(name);
    if (shape.size() != 2 || shape[0] != rows || shape[1] != cols)
        fail("{}: tensor '{}' has shape [{}], expected [{}, {}]", src.path(), name,
             fmt::join(shape, ", "), rows, cols);
    const std::vector<float> data = src.read(name);
    Weight w;
    w.f32 = Eigen::Map<const MatrixRM>(data.data(), rows, cols);
    if (auto raw = src.raw(name); raw && quant_matvec_supported(raw->type)) {
        w.q_type = raw->type;
        w.q_data = raw->data;
        w.q_row_bytes = raw->row_bytes;
    }
    return w;
}

Eigen::VectorXf load_vector(const WeightSource& src, const std::string& name, int64_t n) {
    const auto shape = src.shape(name);
    if (shape.size() != 1 || shape[0] != n)
        fail("{}: tensor '{}' has shape [{}], expected [{}]", src.path(), name,
             fmt::join(shape, ", "), n);
    const std::vector<float> data = src.read(name);
    return Eigen::Map<const Eigen::VectorXf>(data.data(), n);
}

}  // namespace

std::unique_ptr<Model> Model::load(const WeightSource& src) {
    auto m = std::unique_ptr<Model>(new Model());
    m->cfg_ = src.config();
    const ModelConfig& c = m->cfg_;
    const ArchSpec* arch = find_arch(c.arch);
    if (!arch)
        fail("{}: unsupported architecture '{}' (supported: {})", src.path(), c.arch,
             supported_archs());
    if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 || c.head_dim <= 0 ||
        c.n_ff <= 0 || c.n_vocab <= 0)
        fail(
            "{}: invalid model dimensions (n_layer {}, n_embd {}, n_head {}, n_head_kv {}, "
            "head_dim {}, n_ff {}, n_vocab {})",
            src.path(), c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab);
    if (c.n_head % c.n_head_kv != 0)
        fail("{}: n_head {} is not a multiple of n_head_kv {}", src.path(), c.n_head, c.n_head_kv);
    if (c.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", src.path(), c.head_dim);

    const int64_t E = c.n_embd, D = c.head_dim, HQ = int64_t(c.n_head) * D,
                  HK = int64_t(c.n_head_kv) * D;
    m->tok_embd_ = load_matrix(src, "token_embd.weight", c.n_vocab, E);
    m->output_norm_ = load_vector(src, "output_norm.weight", E);
    if (src.has("output.weight")) m->output_ = load_matrix(src, "output.weight", c.n_vocab, E);
    m->cfg_.tied_embeddings = !src.has("output.weight");
    m->layers_.resize(size_t(c.n_layer));
    for (int il = 0; il < c.n_layer; ++il) {
        const std::string p = fmt::format("blk.{}.", il);
        LayerWeights& L = m->layers_[size_t(il)];
        L.attn_norm = load_vector(src, p + "attn_norm.weight", E);
        L.wq = load_matrix(src, p + "attn_q.weight", HQ, E);
        L.wk = load_matrix(src, p + "attn_k.weight", HK, E);
        L.wv = load_matrix(src, p + "attn_v.weight", HK, E);
        L.wo = load_matrix(src, p + "attn_output.weight", E, HQ);
        if (arch->qkv_bias || src.has(p + "attn_q.bias")) {
            L.bq = load_vector(src, p + "attn_q.bias", HQ);
            L.bk = load_vector(src, p + "attn_k.bias", HK);
            L.bv = load_vector(src, p + "attn_v.bias", HK);
        }
        L.ffn_norm = load_vector(src, p + "ffn_norm.weight", E);
        L.w_gate = load_matrix(src, p + "ffn_gate.weight", c.n_ff, E);
        L.w_up = load_matrix(src, p + "ffn_up.weight", c.n_ff, E);
        L.w_down = load_matrix(src, p + "ffn_down.weight", E, c.n_ff);
    }

    // RoPE frequencies: theta^(-2i/d), then the model's scaling.
    const int half = c.head_dim / 2;
    m->inv_freq_ = kvs::rope_inv_freq(c);
    if (m->inv_freq_.empty())
        fail("{}: unsupported RoPE scaling '{}' (supported: none, linear, llama3)", src.path(),
             c.rope_scaling.type);
    // GGUF Llama 3 files carry the scaling as per-frequency divisors.
    if (src.has("rope_freqs.weight")) {
        const Eigen::VectorXf div = load_vector(src, "rope_freqs.weight", half);
        for (int i = 0; i < half; ++i) m->inv_freq_[i] /= div[i];
    }
    return m;
}

size_t Model::n_params() const {
    size_t n = size_t(tok_embd_.f32.size() + output_.f32.size() + output_norm_.size());
    for (const auto& L : layers_)
        n += size_t(L.attn_norm.size() + L.ffn_norm.size() + L.wq.f32.size() + L.wk.f32.size() +
                    L.wv.f32.size() + L.wo.f32.size() + L.bq.size() + L.bk.size() + L.bv.size() +
                    L.w_gate.f32.size() + L.w_up.f32.size() + L.w_down.f32.size());
    return n;
}

void Model::apply_rope(float* x, int n_heads, int n_tok, const int32_t* pos) const {
    const int d = cfg_.head_dim, half = d / 2;
    const bool inter = cfg_.rope_pairing == RopePairing::Interleaved;
    std::vector<float> cs(size_t(n_tok) * half), sn(size_t(n_tok) * half);
    for (int t = 0; t < n_tok; ++t)
        for (int i = 0; i < half; ++i) {
            const double a = double(pos[t]) * double(inv_freq_[i]);
            cs[size_t(t) * half + i] = float(std::cos(a));
            sn[size_t(t) * half + i] = float(std::sin(a));
        }
    for (int h = 0; h < n_heads; ++h)
        for (int t = 0; t < n_tok; ++t) {
            float* r = x + (size_t(h) * n_tok + t) * d;
            const float* c = cs.data() + size_t(t) * half;
            const float* s = sn.data() + size_t(t) * half;
            for (int i = 0; i < half; ++i) {
                const int a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + half;
                const float x0 = r[a], x1 = r[b];
                r[a] = x0 * c[i] - x1 * s[i];
                r[b] = x1 * c[i] + x0 * s[i];
            }
        }
}

void Model::forward(const int32_t* tokens, const int32_t* pos, int n_tok, KvCache& cache,
                    LogitsFor which, std::vector<float>& logits, ForwardObserver* obs) const {
    const ModelConfig& c = cfg_;
    const int d = c.head_dim;
    for (int t = 0; t < n_tok; ++t)
        if (tokens[t] < 0 || tokens[t] >= c.n_vocab)
            fail("token id {} out of range (vocabulary has {} tokens)", tokens[t], c.n_vocab);

    MatrixRM x(n_tok, c.n_embd);
    for (int t = 0; t < n_tok; ++t) x.row(t) = tok_embd_.f32.row(tokens[t]);

    MatrixRM h, q, k, v, o, tmp, gate, up;
    std::vector<float> qh, kh, vh, oh, lse;
    for (int il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = layers_[size_t(il)];
        rmsnorm(x, L.attn_norm, c.rms_eps, h);
        matmul(h, L.wq, q);
        matmul(h, L.wk, k);
        matmul(h, L.wv, v);
        if (L.bq.size()) {
            q.rowwise() += L.bq.transpose();
            k.rowwise() += L.bk.transpose();
            v.rowwise() += L.bv.transpose();
        }
        split_heads(q, c.n_head, d, qh);
        split_heads(k, c.n_head_kv, d, kh);
        split_heads(v, c.n_head_kv, d, vh);
        apply_rope(qh.data(), c.n_head, n_tok, pos);
        apply_rope(kh.data(), c.n_head_kv, n_tok, pos);

        cache.append(il, n_tok, pos, kh.data(), vh.data());
        oh.resize(qh.size());
        lse.resize(size_t(c.n_head) * n_tok);
        cache.attend(il, n_tok, pos, qh.data(), oh.data(), lse.data());
        if (obs) {
            LayerTap tap;
            tap.layer = il;
            tap.n_tok = n_tok;
            tap.n_head = c.n_head;
            tap.n_head_kv = c.n_head_kv;
            tap.head_dim = d;
            tap.tokens = tokens;
            tap.pos = pos;
            tap.q = qh.data();
            tap.k = kh.data();
            tap.v = vh.data();
            tap.out = oh.data();
            tap.lse = lse.data();
            obs->on_layer(tap);
        }
        merge_heads(oh, c.n_head, n_tok, d, o);
        matmul(o, L.wo, tmp);
        x += tmp;

        rmsnorm(x, L.ffn_norm, c.rms_eps, h);
        matmul(h, L.w_gate, gate);
        matmul(h, L.w_up, up);
        gate.array() = gate.array() / (1.0f + (-gate.array()).exp());  // silu
        gate.array() *= up.array();
        matmul(gate, L.w_down, tmp);
        x += tmp;
    }
    if (obs) obs->on_chunk_done(n_tok, pos);

    if (which == LogitsFor::None) {
        logits.clear();
        return;
    }
    const int first = which == LogitsFor::Last ? n_tok - 1 : 0;
    const MatrixRM xs = x.middleRows(first, n_tok - first);
    rmsnorm(xs, output_norm_, c.rms_eps, h);
    const Weight& out = output_.f32.size() ? output_ : tok_embd_;
    logits.resize(size_t(h.rows()) * size_t(out.f32.rows()));
    matmul_into(h, out, logits.data());
}

}  // namespace kvs
