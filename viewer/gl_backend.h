// The GLFW + OpenGL side of kvscope-view, in one place: the window and the ImGui backends,
// fonts, RGBA textures, and reading a rendered frame back (screenshots and PNG export, at a
// chosen scale through an offscreen framebuffer). Everything else draws through ImGui.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct GLFWwindow;
struct ImFont;

namespace kvs::view {

class Texture {
  public:
    Texture() = default;
    ~Texture();
    Texture(const Texture&) = delete;
    Texture& operator=(const Texture&) = delete;
    // Uploads w x h RGBA8 texels (row 0 at the top), nearest-neighbour sampling.
    void upload(int w, int h, const uint32_t* rgba);
    void* id() const;  // for ImGui::Image / AddImage
    int w() const { return w_; }
    int h() const { return h_; }

  private:
    unsigned tex_ = 0;
    int w_ = 0, h_ = 0;
};

struct RenderTarget;  // an offscreen framebuffer

class Window {
  public:
    // Creates the window and the ImGui context; throws kvs::Error without a display or
    // OpenGL 3.
    Window(int w, int h, const std::string& title, bool visible);
    ~Window();
    GLFWwindow* handle() const { return win_; }
    bool should_close() const;
    // Polls (or waits up to `wait_s` for) events, starts an ImGui frame. `fb_scale` > 0 forces
    // the framebuffer scale (offscreen rendering at a scale).
    void begin_frame(double wait_s, float fb_scale = 0);
    // Renders ImGui's draw data into the window's back buffer, or into an offscreen target of
    // the window's size times `scale` when scale > 0; returns the pixels (RGB8, top row first)
    // when `read` is set.
    void render(bool read, std::vector<uint8_t>* rgb, int* out_w, int* out_h, float scale = 0);
    void swap();
    void window_size(int* w, int* h) const;
    // A font for drawing at `scale` (1 to 4): the same point size rasterised scale times
    // larger, for crisp text in scaled exports.
    ImFont* font(int scale) const;
    bool offscreen_supported() const { return fbo_ok_; }
    std::string gl_renderer() const;

  private:
    GLFWwindow* win_ = nullptr;
    std::vector<ImFont*> fonts_;
    bool fbo_ok_ = false;
};

// Writes RGB8 pixels (top row first) as a PNG; false on failure.
bool write_png(const std::string& path, int w, int h, const uint8_t* rgb);

}  // namespace kvs::view
