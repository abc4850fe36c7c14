// A trace opened for viewing (see trace_data.h).
#include "viewdata/trace_data.h"

#include <algorithm>

namespace kvs::view {

std::mutex& hdf5_mutex() {
    static std::mutex m;
    return m;
}

int TraceData::layer_index(int model_layer) const {
    for (size_t i = 0; i < info.layers.size(); ++i)
        if (info.layers[i] == model_layer) return int(i);
    return -1;
}

std::vector<int> TraceData::q_heads_of(int kv) const {
    std::vector<int> out;
    for (size_t h = 0; h < info.kv_head_of_q_head.size(); ++h)
        if (info.kv_head_of_q_head[h] == kv) out.push_back(int(h));
    return out;
}

bool TraceData::is_answer(int64_t j) const {
    const auto& a = info.task.answer_positions;
    return std::find(a.begin(), a.end(), int32_t(j)) != a.end();
}

std::shared_ptr<TraceData> load_trace(const std::string& path) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    auto t = std::make_shared<TraceData>();
    t->reader = std::make_unique<capture::TraceReader>(path);
    t->info = t->reader->info();
    t->text = t->reader->token_text();
    t->positions = t->reader->positions();
    t->logprob = t->reader->logprob();
    return t;
}

std::string printable_token(const std::string& s, size_t max_bytes) {
    std::string o;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n && o.size() < max_bytes;) {
        const unsigned char c = p[i];
        if (c == '\n') {
            o += "\\n";
            ++i;
        } else if (c == '\t') {
            o += "\\t";
            ++i;
        } else if (c == '\r') {
            o += "\\r";
            ++i;
        } else if (c < 0x20 || c == 0x7f) {
            static const char* hex = "0123456789abcdef";
            o += "\\x";
            o += hex[c >> 4];
            o += hex[c & 15];
            ++i;
        } else if (c < 0x80) {
            o += char(c);
            ++i;
        } else {
            // A whole, valid UTF-8 sequence is copied; anything else becomes U+FFFD.
            const int len = (c & 0xE0) == 0xC0   ? 2
                            : (c & 0xF0) == 0xE0 ? 3
                            : (c & 0xF8) == 0xF0 ? 4
                                                 : 0;
            bool ok = len > 0 && i + size_t(len) <= n;
            for (int k = 1; ok && k < len; ++k) ok = (p[i + size_t(k)] & 0xC0) == 0x80;
            if (ok) {
                o.append(s, i, size_t(len));
                i += size_t(len);
            } else {
                o += "\xEF\xBF\xBD";
                ++i;
            }
        }
    }
    if (o.size() >= max_bytes) o += "...";
    return o;
}

}  // namespace kvs::view
