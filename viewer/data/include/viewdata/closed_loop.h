// The closed-loop view's data: the open runs grouped by (policy spec, mode), replay's metrics
// (open loop: `kvscope replay / sweep`) beside the closed loop's (`kvscope eval -o`: the runs
// carrying closed_loop_json) for the same spec, the points of the replay-error vs closed-loop-KL
// scatter, Spearman's rank correlation over them, and the table as CSV.
#pragma once
#include <string>
#include <vector>

#include "viewdata/results.h"

namespace kvs::view {

// One column of the table: `key` is the summary attribute (replay) or the closed_loop_json field
// (closed loop) it shows; `csv` its CSV header (the key itself, prefixed "replay_" or "eval_");
// `header` the table's (nullptr: CSV only); bytes are shown in MiB.
struct ClosedLoopColumn {
    const char* key;
    const char* csv;
    const char* header;
    const char* tooltip;
    bool replay;  // from the replay runs (else from the closed-loop runs)
    bool bytes;
};
const std::vector<ClosedLoopColumn>& closed_loop_columns();

// One (spec, mode): the runs of it (indices into the list given to closed_loop_rows) and the
// mean of each column over them (finite values only; NaN where none has it).
struct ClosedLoopRow {
    std::string spec, policy, budget, mode;
    std::string label;  // the first run's label, without its " (prefill P)" suffix
    std::string task;   // the closed-loop task ("ppl", "passkey", "needle"; "" without one)
    std::vector<int64_t> prefill_lens;  // the distinct P of its runs (prefill mode)
    std::vector<int> replay_runs, eval_runs;
    std::vector<double> values;  // one per closed_loop_columns()
    bool matched() const { return !replay_runs.empty() && !eval_runs.empty(); }
    double value(const std::string& key, bool replay) const;  // NaN when no such column
};

// A run's side: closed loop when it carries closed_loop_json; replay when it has replay metrics
// (a finite recall_mean or err_mean; `kvscope capture --policy` writes live decisions with NaN
// metrics: neither side). Rows come in the order their spec first appears; the runs of one
// (spec, mode) with different prefill lengths share a row (prefill_lens lists them). `labels`
// (one per run, may be empty) name the rows.
std::vector<ClosedLoopRow> closed_loop_rows(const std::vector<const RunInfo*>& runs,
                                            const std::vector<std::string>& labels);

// The scatter's points: matched rows with a finite replay err_mean (x) and a finite closed-loop
// y: kl_mean when any matched row has one (--task ppl), else 1 - accuracy (passkey / needle).
struct ClosedLoopPoints {
    std::vector<double> x, y;
    std::vector<int> row;  // the row of each point
    std::string y_key;     // "kl_mean" or "1-accuracy" ("" when no point)
};
ClosedLoopPoints closed_loop_points(const std::vector<ClosedLoopRow>& rows);

// Spearman's rank correlation (average ranks for ties); NaN for fewer than 2 points or a
// constant side.
double spearman(const std::vector<double>& x, const std::vector<double>& y);

// The table as CSV: label, spec, policy, budget, mode, prefill_len (distinct values joined with
// ' '), task, replay_runs, eval_runs, then every column's csv name (bytes in bytes). One row per
// ClosedLoopRow. Throws kvs::Error when the file cannot be written.
void write_closed_loop_csv(const std::string& path, const std::vector<ClosedLoopRow>& rows);

}  // namespace kvs::view
