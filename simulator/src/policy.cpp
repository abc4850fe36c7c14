#include "simulator/policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "engine/error.h"

namespace kvs::sim {

int64_t Budget::tokens(int64_t n) const {
    if (!set) return -1;
    if (!fraction) return int64_t(value);
    const int64_t f = int64_t(std::ceil(value * double(n) - 1e-9));
    return std::max(f, std::min(n, kMinFractionTokens));
}

Budget parse_budget(const std::string& s) {
    Budget b;
    b.text = s;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
        fail("budget '{}' is not a number (a token count like 256 or a fraction like 0.2)", s);
    if (v <= 0) fail("budget must be > 0 (got '{}')", s);
    const bool looks_fraction = s.find_first_of(".eE") != std::string::npos;
    if (looks_fraction) {
        if (v > 1) fail("budget '{}': a fraction must be in (0, 1]; a token count has no '.'", s);
        b.fraction = true;
    } else {
        if (v > 1e9) fail("budget '{}' is too large", s);
    }
    b.value = v;
    b.set = true;
    return b;
}

double Params::real(const std::string& k) const {
    auto it = values.find(k);
    KVS_ASSERT(it != values.end());
    return std::strtod(it->second.c_str(), nullptr);
}
int Params::integer(const std::string& k) const {
    return int(std::lround(real(k)));
}
const std::string& Params::str(const std::string& k) const {
    auto it = values.find(k);
    KVS_ASSERT(it != values.end());
    return it->second;
}
Budget Params::budget() const {
    auto it = values.find("budget");
    if (it == values.end() || it->second.empty()) return {};
    return parse_budget(it->second);
}
GqaReduce Params::gqa() const {
    auto it = values.find("gqa");
    if (it == values.end() || it->second == "mean") return GqaReduce::mean;
    return it->second == "max" ? GqaReduce::max : GqaReduce::sum;
}

ParamDef param_budget(const std::string& help) {
    ParamDef p;
    p.name = "budget";
    p.kind = ParamKind::budget;
    p.help = help.empty() ? "tokens held per (layer, KV head): a count (256) or a fraction of the "
                            "tokens so far (0.2; at least 16 tokens)"
                          : help;
    return p;
}
ParamDef param_gqa() {
    return param_choice("gqa", "mean", {"mean", "max", "sum"},
                        "how the scores of the query heads sharing a KV head combine");
}
ParamDef param_bits(const std::string& def) {
    return param_int("bits", def, 2, 16,
                     "storage bits of held tokens (snapped to 2, 4, 8 or 16; per-token groups)");
}
ParamDef param_group() {
    return param_int("group", "32", 1, 4096, "quantization group size (elements per scale/zero)");
}
ParamDef param_int(const std::string& name, const std::string& def, double min, double max,
                   const std::string& help) {
    ParamDef p;
    p.name = name;
    p.kind = ParamKind::integer;
    p.def = def;
    p.min = min;
    p.max = max;
    p.help = help;
    return p;
}
ParamDef param_real(const std::string& name, const std::string& def, double min, double max,
                    const std::string& help) {
    ParamDef p = param_int(name, def, min, max, help);
    p.kind = ParamKind::real;
    return p;
}
ParamDef param_choice(const std::string& name, const std::string& def,
                      std::vector<std::string> choices, const std::string& help) {
    ParamDef p;
    p.name = name;
    p.kind = ParamKind::choice;
    p.def = def;
    p.choices = std::move(choices);
    p.help = help;
    return p;
}

const PolicyEntry* find_policy(const std::string& name) {
    for (const auto& e : policy_registry())
        if (e.info.name == name) return &e;
    return nullptr;
}

namespace {

std::string join_names(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

std::string fmt_num(double v) {
    std::string s = fmt::format("{:.6g}", v);
    return s;
}

// Validates one value against its definition; returns the canonical text.
std::string check_value(const PolicyInfo& info, const ParamDef& p, const std::string& v) {
    const std::string where = fmt::format("policy '{}': parameter '{}'", info.name, p.name);
    if (p.kind == ParamKind::budget) return parse_budget(v).text;
    if (p.kind == ParamKind::choice) {
        if (std::find(p.choices.begin(), p.choices.end(), v) == p.choices.end())
            fail("{} must be one of {} (got '{}')", where, join_names(p.choices), v);
        return v;
    }
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x))
        fail("{} must be a number (got '{}')", where, v);
    if (p.kind == ParamKind::integer && x != std::floor(x))
        fail("{} must be an integer (got '{}')", where, v);
    if (p.min <= p.max && (x < p.min || x > p.max))
        fail("{} must be in [{}, {}] (got '{}')", where, fmt_num(p.min), fmt_num(p.max), v);
    return p.kind == ParamKind::integer ? fmt::format("{}", int64_t(x)) : fmt_num(x);
}

std::string canonical_of(const PolicyInfo& info, const Params& ps) {
    std::string s = info.name;
    bool first = true;
    for (const auto& p : info.params) {
        const std::string& v = ps.values.at(p.name);
        if (v.empty()) continue;
        s += first ? ":" : ",";
        first = false;
        s += p.name + "=" + v;
    }
    return s;
}

}  // namespace

PolicySpec parse_spec(const std::string& text, bool require_budget) {
    PolicySpec out;
    out.given = text;
    const size_t colon = text.find(':');
    const std::string name = text.substr(0, colon);
    out.entry = find_policy(name);
    if (!out.entry) {
        std::vector<std::string> names;
        for (const auto& e : policy_registry()) names.push_back(e.info.name);
        fail("unknown policy '{}' (valid: {})", name, join_names(names));
    }
    const PolicyInfo& info = out.entry->info;
    std::map<std::string, std::string> given;
    if (colon != std::string::npos) {
        const std::string rest = text.substr(colon + 1);
        size_t i = 0;
        while (i <= rest.size()) {
            const size_t comma = std::min(rest.find(',', i), rest.size());
            const std::string kv = rest.substr(i, comma - i);
            i = comma + 1;
            if (kv.empty()) {
                if (comma >= rest.size()) break;
                fail("policy '{}': empty parameter in '{}'", name, text);
            }
            const size_t eq = kv.find('=');
            if (eq == std::string::npos || eq == 0)
                fail("policy '{}': '{}' is not key=value", name, kv);
            const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
            auto def = std::find_if(info.params.begin(), info.params.end(),
                                    [&](const ParamDef& p) { return p.name == k; });
            if (def == info.params.end()) {
                std::vector<std::string> valid;
                for (const auto& p : info.params) valid.push_back(p.name);
                fail("policy '{}' has no parameter '{}' (valid: {})", name, k,
                     valid.empty() ? std::string("none") : join_names(valid));
            }
            if (given.count(k)) fail("policy '{}': parameter '{}' given twice", name, k);
            given[k] = check_value(info, *def, v);
        }
    }
    for (const auto& p : info.params) {
        auto it = given.find(p.name);
        out.params.values[p.name] = it != given.end() ? it->second : p.def;
    }
    if (require_budget && info.needs_budget && out.params.values["budget"].empty())
        fail("policy '{}' needs a budget (e.g. {}:budget=256 or budget=0.2)", name, name);
    out.canonical = canonical_of(info, out.params);
    return out;
}

PolicySpec with_budget(const PolicySpec& s, const std::string& budget) {
    PolicySpec out = s;
    KVS_ASSERT(s.entry && s.entry->info.takes_budget);
    out.params.values["budget"] = parse_budget(budget).text;
    out.canonical = canonical_of(s.entry->info, out.params);
    return out;
}

void reduce_gqa(const float* probs, int n_q, int n, GqaReduce how, float* out) {
    for (int i = 0; i < n; ++i) out[i] = probs[i];
    for (int h = 1; h < n_q; ++h) {
        const float* row = probs + size_t(h) * size_t(n);
        if (how == GqaReduce::max) {
            for (int i = 0; i < n; ++i) out[i] = std::max(out[i], row[i]);
        } else {
            for (int i = 0; i < n; ++i) out[i] += row[i];
        }
    }
    if (how == GqaReduce::mean && n_q > 1) {
        const float inv = 1.0f / float(n_q);
        for (int i = 0; i < n; ++i) out[i] *= inv;
    }
}

LayerContext layer_context(const PlanContext& c, int slot, const void* plan) {
    LayerContext lc;
    lc.layer = c.layers.at(size_t(slot));
    lc.slot = slot;
    lc.n_layer = c.n_layer;
    lc.n_replayed = int(c.layers.size());
    lc.n_head = c.n_head;
    lc.n_kv = c.n_kv;
    lc.d = c.d;
    lc.n_tokens = c.n_tokens;
    lc.prefill_len = c.prefill_len;
    lc.mode = c.mode;
    lc.attn_scale = c.attn_scale;
    lc.plan = plan;
    return lc;
}

}  // namespace kvs::sim
