// CSV export (RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled).
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "viewdata/matrix.h"

namespace kvs::view {

std::string csv_field(const std::string& s);
// A float as CSV: "" for NaN, shortest round-trip text otherwise.
std::string csv_number(double v);

class CsvWriter {
  public:
    explicit CsvWriter(const std::string& path);  // throws kvs::Error
    ~CsvWriter();
    CsvWriter(const CsvWriter&) = delete;
    CsvWriter& operator=(const CsvWriter&) = delete;
    void row(const std::vector<std::string>& fields);
    void close();  // throws kvs::Error on a write error

  private:
    std::string path_;
    std::FILE* f_ = nullptr;
};

// Long format "<row_name>,<col_name>,<value_name>" for the cells [r0, r1) x [c0, c1) of m;
// row r is labelled row_labels[r] when given (else r). NaN cells are skipped.
void write_matrix_csv(const std::string& path, const Matrix& m, int64_t r0, int64_t r1, int64_t c0,
                      int64_t c1, const std::vector<int32_t>& row_labels,
                      const std::string& row_name, const std::string& col_name,
                      const std::string& value_name);
// The same for a matrix given row by row (row(r) returns its `cols` cells).
void write_matrix_csv(const std::string& path, int64_t rows, int64_t cols,
                      const std::function<std::vector<float>(int64_t)>& row, int64_t r0, int64_t r1,
                      int64_t c0, int64_t c1, const std::vector<int32_t>& row_labels,
                      const std::string& row_name, const std::string& col_name,
                      const std::string& value_name);

}  // namespace kvs::view
