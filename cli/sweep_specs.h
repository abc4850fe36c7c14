// The runs of a sweep or an eval: policy specs crossed with --budgets (--shard: shard.h).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "simulator/policy.h"

namespace kvs::cli {

// Parses each spec (notes on stderr unless quiet for bit widths the packed formats round).
std::vector<sim::PolicySpec> parse_specs(const std::vector<std::string>& texts, bool quiet,
                                         bool require_budget = true);
// Each spec without budget= crosses with the comma-separated budgets (when its policy takes
// one); a spec with one, or a policy without budgets, runs once. Notes on stderr (unless quiet)
// for bit widths the packed formats round.
std::vector<sim::PolicySpec> expand_specs(const std::vector<std::string>& policies,
                                          const std::string& budgets, bool quiet);

}  // namespace kvs::cli
