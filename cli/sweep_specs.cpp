// Runs of a sweep or an eval (sweep_specs.h).
#include "sweep_specs.h"

#include <fmt/format.h>

#include <cstdio>

#include "engine/error.h"
#include "kernels/quant_pack.h"

namespace kvs::cli {

using sim::PolicySpec;

std::vector<PolicySpec> parse_specs(const std::vector<std::string>& texts, bool quiet,
                                    bool require_budget) {
    std::vector<PolicySpec> out;
    for (const auto& t : texts) {
        out.push_back(sim::parse_spec(t, require_budget));
        for (const char* key : {"bits", "b_min", "b_max"}) {
            auto it = out.back().params.values.find(key);
            if (it == out.back().params.values.end()) continue;
            const int b = std::stoi(it->second);
            if (!quiet && !kernels::bits_supported(b))
                fmt::print(stderr,
                           "note: {}: {}={} is stored at {} bits (the packed format holds 2, 4, 8 "
                           "and 16)\n",
                           out.back().entry->info.name, key, b, kernels::snap_bits(b));
        }
    }
    return out;
}

std::vector<PolicySpec> expand_specs(const std::vector<std::string>& policies,
                                     const std::string& budget_list, bool quiet) {
    std::vector<std::string> budgets;
    size_t i = 0;
    while (!budget_list.empty() && i <= budget_list.size()) {
        const size_t j = std::min(budget_list.find(',', i), budget_list.size());
        const std::string b = budget_list.substr(i, j - i);
        if (!b.empty()) budgets.push_back(sim::parse_budget(b).text);
        i = j + 1;
    }
    const std::vector<PolicySpec> base = parse_specs(policies, quiet, false);
    std::vector<PolicySpec> specs;
    for (const auto& s : base) {
        const bool has_size = !s.params.values.count("budget") ||
                              !s.params.values.at("budget").empty() ||
                              (s.params.values.count("recent") && s.entry->info.name == "window" &&
                               s.params.values.at("recent") != "0");
        if (!s.entry->info.takes_budget || has_size || budgets.empty()) {
            if (s.entry->info.needs_budget && s.params.values.at("budget").empty())
                fail("policy '{}' needs a budget: give --budgets or budget= in the spec",
                     s.entry->info.name);
            specs.push_back(s);
            continue;
        }
        for (const auto& b : budgets) specs.push_back(sim::with_budget(s, b));
    }
    return specs;
}

}  // namespace kvs::cli
