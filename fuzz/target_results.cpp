// fuzz_results: an HDF5 results file (docs/results-format.md), written to a scratch file and
// read with read_results. When it reads, summarizes every run and prints the table.
#include "fuzz_entries.h"
#include "simulator/results_io.h"

void kvs::fuzz::results(const uint8_t* data, size_t size) {
    const std::string path = scratch_file("in.results.h5", data, size);
    attempt([&] {
        const auto runs = sim::read_results(path);
        for (const auto& run : runs) (void)sim::summarize(run);
        (void)sim::summary_table(runs);
    });
}
