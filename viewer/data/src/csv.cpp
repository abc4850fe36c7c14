// CSV export (see csv.h).
#include "viewdata/csv.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "engine/error.h"

namespace kvs::view {

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string o = "\"";
    for (char c : s) {
        if (c == '"') o += '"';
        o += c;
    }
    o += '"';
    return o;
}

std::string csv_number(double v) {
    if (std::isnan(v)) return "";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", int64_t(v));
    return fmt::format("{}", v);
}

CsvWriter::CsvWriter(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) fail("cannot write '{}': {}", path, std::strerror(errno));
}

CsvWriter::~CsvWriter() {
    if (f_) std::fclose(f_);
}

void CsvWriter::row(const std::vector<std::string>& fields) {
    for (size_t i = 0; i < fields.size(); ++i) {
        if (i) std::fputc(',', f_);
        const std::string f = csv_field(fields[i]);
        std::fwrite(f.data(), 1, f.size(), f_);
    }
    std::fputc('\n', f_);
}

void CsvWriter::close() {
    if (!f_) return;
    const bool bad = std::ferror(f_) != 0;
    const int rc = std::fclose(f_);
    f_ = nullptr;
    if (bad || rc != 0) fail("error writing '{}'", path_);
}

void write_matrix_csv(const std::string& path, const Matrix& m, int64_t r0, int64_t r1, int64_t c0,
                      int64_t c1, const std::vector<int32_t>& row_labels,
                      const std::string& row_name, const std::string& col_name,
                      const std::string& value_name) {
    write_matrix_csv(
        path, m.rows, m.cols,
        [&m](int64_t r) { return std::vector<float>(m.row(r), m.row(r) + m.cols); }, r0, r1, c0, c1,
        row_labels, row_name, col_name, value_name);
}

void write_matrix_csv(const std::string& path, int64_t rows, int64_t cols,
                      const std::function<std::vector<float>(int64_t)>& row, int64_t r0, int64_t r1,
                      int64_t c0, int64_t c1, const std::vector<int32_t>& row_labels,
                      const std::string& row_name, const std::string& col_name,
                      const std::string& value_name) {
    CsvWriter w(path);
    w.row({row_name, col_name, value_name});
    r0 = std::max<int64_t>(r0, 0);
    c0 = std::max<int64_t>(c0, 0);
    r1 = std::min(r1, rows);
    c1 = std::min(c1, cols);
    for (int64_t r = r0; r < r1; ++r) {
        const std::string rl =
            std::to_string(r < int64_t(row_labels.size()) ? int64_t(row_labels[size_t(r)]) : r);
        const std::vector<float> v = row(r);
        for (int64_t c = c0; c < c1; ++c) {
            if (std::isnan(v[size_t(c)])) continue;
            w.row({rl, std::to_string(c), csv_number(v[size_t(c)])});
        }
    }
    w.close();
}

}  // namespace kvs::view
