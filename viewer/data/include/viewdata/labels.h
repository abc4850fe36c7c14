// Short run labels for lists, legends and titles: the policy, its budget and the parameters that
// differ from the policy's defaults ("h2o 256", "quant bits=2", "quant residual=0,format=q8_0",
// "full"), from the run's canonical spec and the defaults `kvscope policies --json` lists.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "viewdata/replay_backend.h"
#include "viewdata/results.h"

namespace kvs::view {

// "h2o:budget=256,recent=32" -> {"h2o", {{"budget","256"},{"recent","32"}}}. A spec without
// parameters gives an empty list; a part without '=' is kept with an empty value.
std::pair<std::string, std::vector<std::pair<std::string, std::string>>> parse_spec(
    const std::string& spec);

// Two parameter values are the same default: equal strings, or equal numbers ("0.90" == "0.9").
bool same_value(const std::string& a, const std::string& b);

// The short label of a run. Without a description of its policy in `policies` (kvscope not
// available, or an unknown policy) the full spec. Prefill-mode runs get " (prefill P)".
std::string short_label(const RunInfo& info, const std::vector<PolicyDesc>& policies);

// Makes labels unique in place: the second and later copies of a label get " #2", " #3", ...
void make_unique_labels(std::vector<std::string>& labels);

}  // namespace kvs::view
