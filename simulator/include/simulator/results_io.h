// Results files (results_schema.h), the one-row-per-run summary CSV, and the terminal table.
#pragma once
#include <string>
#include <vector>

#include "simulator/replay.h"

namespace kvs::sim {

// Writes every run to `path` (through `path`.partial, renamed when complete: a failure leaves
// no half-written file). Throws kvs::Error naming the path.
void write_results(const std::string& path, const std::vector<RunResult>& runs,
                   const std::string& command_line);
// Throws kvs::Error when `path` cannot be written (its directory is missing, or it is a
// directory); the commands call it before replaying, not after.
void check_output_path(const std::string& path);
// Reads a results file back (validating format, schema version and shapes; one-line errors).
std::vector<RunResult> read_results(const std::string& path);

// One row per run: trace, policy, spec, budget, mode, metrics (mean / tail), bytes, ratio,
// seconds. Written through a .partial file like the results.
void write_summary_csv(const std::string& path, const std::vector<RunResult>& runs);
// A fixed-width table for a terminal, one row per run.
std::string summary_table(const std::vector<RunResult>& runs);

}  // namespace kvs::sim
