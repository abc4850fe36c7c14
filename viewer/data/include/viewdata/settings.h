// Settings that persist between runs of kvscope-view, as JSON in
// $XDG_CONFIG_HOME/kvscope/viewer.json (default ~/.config/kvscope/viewer.json). ImGui's own
// window layout goes to imgui.ini in the same folder.
#pragma once
#include <string>
#include <vector>

namespace kvs::view {

struct Settings {
    int win_w = 1600, win_h = 1000;
    std::string colormap = "viridis";
    std::string reduce = "mean";
    std::string quantity = "attention";
    std::string view = "timeline";
    bool log_scale = true;
    float sidebar_w = 330;
    float export_scale = 2;
    std::vector<std::string> recent_files;  // most recent first, at most 10

    void add_recent(const std::string& path);
};

std::string settings_dir();  // "" when neither XDG_CONFIG_HOME nor HOME is set
// Missing file: defaults. Unreadable or malformed: defaults, and *warning says why.
Settings load_settings(const std::string& path, std::string* warning = nullptr);
bool save_settings(const Settings& s, const std::string& path);  // false on failure

}  // namespace kvs::view
