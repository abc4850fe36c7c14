// fuzz_policy_spec: the text of a --policy argument ("name:key=value,...") and of a budget.
// Parses it with and without a required budget, builds the policy from what parsed, replaces
// its budget, and parses the text as a budget.
#include <string>

#include "fuzz_entries.h"
#include "simulator/policy.h"

void kvs::fuzz::policy_spec(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    for (bool require : {false, true})
        attempt([&] {
            const sim::PolicySpec s = sim::parse_spec(text, require);
            (void)s.entry->make(s.params);
            // The canonical form must parse to itself.
            const sim::PolicySpec again = sim::parse_spec(s.canonical, require);
            if (again.canonical != s.canonical) std::abort();
            if (s.entry->info.takes_budget) attempt([&] { (void)sim::with_budget(s, "7"); });
        });
    attempt([&] {
        const sim::Budget b = sim::parse_budget(text);
        for (int64_t n : {0, 1, 7, 1000000})
            if (b.tokens(n) < 0) std::abort();
    });
}
