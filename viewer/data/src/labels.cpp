// Short run labels (see labels.h).
#include "viewdata/labels.h"

#include <cstdlib>
#include <map>

namespace kvs::view {

std::pair<std::string, std::vector<std::pair<std::string, std::string>>> parse_spec(
    const std::string& spec) {
    std::pair<std::string, std::vector<std::pair<std::string, std::string>>> out;
    const size_t colon = spec.find(':');
    out.first = spec.substr(0, colon);
    if (colon == std::string::npos) return out;
    size_t b = colon + 1;
    while (b <= spec.size()) {
        size_t e = spec.find(',', b);
        if (e == std::string::npos) e = spec.size();
        const std::string part = spec.substr(b, e - b);
        if (!part.empty()) {
            const size_t eq = part.find('=');
            if (eq == std::string::npos)
                out.second.emplace_back(part, "");
            else
                out.second.emplace_back(part.substr(0, eq), part.substr(eq + 1));
        }
        b = e + 1;
    }
    return out;
}

namespace {
bool as_number(const std::string& s, double* v) {
    if (s.empty()) return false;
    char* end = nullptr;
    *v = std::strtod(s.c_str(), &end);
    return end && *end == '\0';
}
}  // namespace

bool same_value(const std::string& a, const std::string& b) {
    if (a == b) return true;
    double x = 0, y = 0;
    return as_number(a, &x) && as_number(b, &y) && x == y;
}

std::string short_label(const RunInfo& info, const std::vector<PolicyDesc>& policies) {
    const std::string spec = info.spec.empty() ? info.policy : info.spec;
    const auto [name, params] = parse_spec(spec);
    const PolicyDesc* pd = nullptr;
    for (const PolicyDesc& p : policies)
        if (p.name == name) pd = &p;
    std::string s;
    if (!pd) {
        s = spec;
    } else {
        std::map<std::string, std::string> defaults;
        for (const PolicyParam& p : pd->params) defaults[p.name] = p.default_value;
        s = name;
        std::string budget = info.budget;
        std::string diff;
        for (const auto& [k, v] : params) {
            if (k == "budget") {
                if (budget.empty()) budget = v;
                continue;
            }
            auto it = defaults.find(k);
            if (it != defaults.end() && same_value(it->second, v)) continue;
            diff += (diff.empty() ? "" : ",") + k + "=" + v;
        }
        if (!budget.empty()) s += " " + budget;
        if (!diff.empty()) s += " " + diff;
    }
    if (info.mode == "prefill") s += " (prefill " + std::to_string(info.prefill_len) + ")";
    return s;
}

void make_unique_labels(std::vector<std::string>& labels) {
    std::map<std::string, int> seen;
    for (std::string& l : labels) {
        const int n = ++seen[l];
        if (n > 1) l += " #" + std::to_string(n);
    }
}

}  // namespace kvs::view
