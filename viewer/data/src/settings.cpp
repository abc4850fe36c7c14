// Settings persistence (see settings.h).
#include "viewdata/settings.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kvs::view {

void Settings::add_recent(const std::string& path) {
    std::string p = path;
    std::error_code ec;
    const auto abs = std::filesystem::absolute(path, ec);
    if (!ec) p = abs.lexically_normal().string();
    recent_files.erase(std::remove(recent_files.begin(), recent_files.end(), p),
                       recent_files.end());
    recent_files.insert(recent_files.begin(), p);
    if (recent_files.size() > 10) recent_files.resize(10);
}

std::string settings_dir() {
    const char* x = std::getenv("XDG_CONFIG_HOME");
    if (x && *x) return std::string(x) + "/kvscope";
    const char* h = std::getenv("HOME");
    if (h && *h) return std::string(h) + "/.config/kvscope";
    return "";
}

Settings load_settings(const std::string& path, std::string* warning) {
    Settings s;
    std::ifstream in(path);
    if (!in) return s;
    try {
        const nlohmann::json j = nlohmann::json::parse(in);
        auto get = [&](const char* k, auto& v) {
            if (j.contains(k)) v = j.at(k).get<std::decay_t<decltype(v)>>();
        };
        get("win_w", s.win_w);
        get("win_h", s.win_h);
        get("colormap", s.colormap);
        get("reduce", s.reduce);
        get("quantity", s.quantity);
        get("view", s.view);
        get("log_scale", s.log_scale);
        get("sidebar_w", s.sidebar_w);
        get("export_scale", s.export_scale);
        get("recent_files", s.recent_files);
        s.win_w = std::clamp(s.win_w, 320, 16384);
        s.win_h = std::clamp(s.win_h, 240, 16384);
        s.sidebar_w = std::clamp(s.sidebar_w, 150.0f, 2000.0f);
        s.export_scale = std::clamp(s.export_scale, 1.0f, 8.0f);
    } catch (const std::exception& e) {
        if (warning) *warning = "settings '" + path + "' ignored: " + e.what();
        return Settings{};
    }
    return s;
}

bool save_settings(const Settings& s, const std::string& path) {
    nlohmann::json j = {{"win_w", s.win_w},
                        {"win_h", s.win_h},
                        {"colormap", s.colormap},
                        {"reduce", s.reduce},
                        {"quantity", s.quantity},
                        {"view", s.view},
                        {"log_scale", s.log_scale},
                        {"sidebar_w", s.sidebar_w},
                        {"export_scale", s.export_scale},
                        {"recent_files", s.recent_files}};
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        if (!out) return false;
        out << j.dump(2) << "\n";
        if (!out) return false;
    }
    std::filesystem::rename(tmp, path, ec);
    return !ec;
}

}  // namespace kvs::view
