// Checks a kvscope-view screenshot, for the screenshot test:
//   kvs_check_png size  IMG W H              the image is W x H
//   kvs_check_png busy  IMG X0 Y0 X1 Y1 N    the region holds at least N distinct colours
//   kvs_check_png differ IMG1 IMG2 X0 Y0 X1 Y1 FRAC   at least FRAC of the region's pixels differ
//   kvs_check_png colour IMG X0 Y0 X1 Y1 RRGGBB TOL MIN MAX   the share of the region's pixels
//                        within TOL (per channel) of colour RRGGBB (hex) is in [MIN, MAX]
// Prints what it measured; exit 0 = pass, 1 = fail, 2 = usage / unreadable image.
#include <stb_image.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

namespace {

struct Img {
    int w = 0, h = 0;
    unsigned char* px = nullptr;
    explicit Img(const char* path) {
        int n = 0;
        px = stbi_load(path, &w, &h, &n, 3);
        if (!px) {
            std::fprintf(stderr, "check_png: cannot read '%s': %s\n", path, stbi_failure_reason());
            std::exit(2);
        }
    }
    ~Img() { stbi_image_free(px); }
    unsigned rgb(int x, int y) const {
        const unsigned char* p = px + (size_t(y) * size_t(w) + size_t(x)) * 3;
        return unsigned(p[0]) << 16 | unsigned(p[1]) << 8 | p[2];
    }
};

}  // namespace

int main(int argc, char** argv) {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "size" && argc == 5) {
        Img a(argv[2]);
        const int w = std::atoi(argv[3]), h = std::atoi(argv[4]);
        std::printf("%s: %d x %d (want %d x %d)\n", argv[2], a.w, a.h, w, h);
        return a.w == w && a.h == h ? 0 : 1;
    }
    if (cmd == "busy" && argc == 8) {
        Img a(argv[2]);
        const int x0 = std::atoi(argv[3]), y0 = std::atoi(argv[4]), x1 = std::atoi(argv[5]),
                  y1 = std::atoi(argv[6]), n = std::atoi(argv[7]);
        std::set<unsigned> colours;
        for (int y = y0; y < y1 && y < a.h; ++y)
            for (int x = x0; x < x1 && x < a.w; ++x) colours.insert(a.rgb(x, y));
        std::printf("%s: %zu distinct colours in [%d,%d)x[%d,%d) (want >= %d)\n", argv[2],
                    colours.size(), x0, x1, y0, y1, n);
        return int(colours.size()) >= n ? 0 : 1;
    }
    if (cmd == "differ" && argc == 9) {
        Img a(argv[2]), b(argv[3]);
        if (a.w != b.w || a.h != b.h) {
            std::printf("sizes differ\n");
            return 1;
        }
        const int x0 = std::atoi(argv[4]), y0 = std::atoi(argv[5]), x1 = std::atoi(argv[6]),
                  y1 = std::atoi(argv[7]);
        const double want = std::atof(argv[8]);
        long diff = 0, total = 0;
        for (int y = y0; y < y1 && y < a.h; ++y)
            for (int x = x0; x < x1 && x < a.w; ++x) {
                ++total;
                diff += a.rgb(x, y) != b.rgb(x, y);
            }
        const double f = total ? double(diff) / double(total) : 0;
        std::printf("%s vs %s: %.3f of [%d,%d)x[%d,%d) differs (want >= %.3f)\n", argv[2], argv[3],
                    f, x0, x1, y0, y1, want);
        return f >= want ? 0 : 1;
    }
    if (cmd == "colour" && argc == 11) {
        Img a(argv[2]);
        const int x0 = std::atoi(argv[3]), y0 = std::atoi(argv[4]), x1 = std::atoi(argv[5]),
                  y1 = std::atoi(argv[6]);
        const unsigned want = unsigned(std::strtoul(argv[7], nullptr, 16));
        const int tol = std::atoi(argv[8]);
        const double lo = std::atof(argv[9]), hi = std::atof(argv[10]);
        long hit = 0, total = 0;
        for (int y = y0; y < y1 && y < a.h; ++y)
            for (int x = x0; x < x1 && x < a.w; ++x) {
                ++total;
                const unsigned c = a.rgb(x, y);
                bool near = true;
                for (int sh : {16, 8, 0})
                    near =
                        near && std::abs(int((c >> sh) & 0xFFu) - int((want >> sh) & 0xFFu)) <= tol;
                hit += near;
            }
        const double f = total ? double(hit) / double(total) : 0;
        std::printf("%s: %.4f of [%d,%d)x[%d,%d) is #%06x +- %d (want in [%.4f, %.4f])\n", argv[2],
                    f, x0, x1, y0, y1, want, tol, lo, hi);
        return f >= lo && f <= hi ? 0 : 1;
    }
    std::fprintf(stderr,
                 "usage: kvs_check_png size IMG W H | busy IMG X0 Y0 X1 Y1 N | "
                 "differ IMG1 IMG2 X0 Y0 X1 Y1 FRAC | colour IMG X0 Y0 X1 Y1 RRGGBB TOL MIN MAX\n");
    return 2;
}
