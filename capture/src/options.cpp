// Parsing of the capture options that shape a trace: --compress and --layers.
#include <algorithm>
#include <string>
#include <vector>

#include "capture/trace_writer.h"
#include "engine/error.h"

namespace kvs::capture {

int parse_compression(const std::string& s) {
    if (s == "none") return 0;
    if (s == "gzip") return 1;
    if (s.rfind("gzip:", 0) == 0 && s.size() == 6 && s[5] >= '1' && s[5] <= '9') return s[5] - '0';
    fail("--compress '{}': expected none, gzip or gzip:L with L in 1..9", s);
}

std::string compression_name(int gzip_level) {
    return gzip_level == 0 ? "none" : fmt::format("gzip:{}", gzip_level);
}

std::vector<int> parse_layer_list(const std::string& s, int n_layer) {
    std::vector<int> out;
    if (s.empty() || s == "all") {
        for (int l = 0; l < n_layer; ++l) out.push_back(l);
        return out;
    }
    auto number = [&](const std::string& t) {
        if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos)
            fail("--layers '{}': '{}' is not a layer number", s, t);
        const int v = std::stoi(t);
        if (v >= n_layer)
            fail("--layers '{}': layer {} does not exist (the model has {})", s, v, n_layer);
        return v;
    };
    size_t at = 0;
    while (at <= s.size()) {
        const size_t comma = std::min(s.find(',', at), s.size());
        const std::string item = s.substr(at, comma - at);
        const size_t dash = item.find('-');
        if (dash == std::string::npos) {
            out.push_back(number(item));
        } else {
            const int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
            if (b < a) fail("--layers '{}': empty range '{}'", s, item);
            for (int l = a; l <= b; ++l) out.push_back(l);
        }
        at = comma + 1;
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

}  // namespace kvs::capture
