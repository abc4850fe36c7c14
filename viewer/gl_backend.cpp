// GLFW + OpenGL: window, ImGui backends, fonts, textures, frame read-back (see gl_backend.h).
#define GL_GLEXT_PROTOTYPES 0
#include "gl_backend.h"

#include <GL/gl.h>
#include <GL/glext.h>
#include <GLFW/glfw3.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui.h>
#include <stb_image_write.h>

#include <algorithm>
#include <filesystem>

#include "engine/error.h"

namespace kvs::view {

namespace {

// Framebuffer objects (GL 3.0), looked up at run time: libGL need not export them.
PFNGLGENFRAMEBUFFERSPROC p_glGenFramebuffers = nullptr;
PFNGLBINDFRAMEBUFFERPROC p_glBindFramebuffer = nullptr;
PFNGLDELETEFRAMEBUFFERSPROC p_glDeleteFramebuffers = nullptr;
PFNGLGENRENDERBUFFERSPROC p_glGenRenderbuffers = nullptr;
PFNGLBINDRENDERBUFFERPROC p_glBindRenderbuffer = nullptr;
PFNGLDELETERENDERBUFFERSPROC p_glDeleteRenderbuffers = nullptr;
PFNGLRENDERBUFFERSTORAGEPROC p_glRenderbufferStorage = nullptr;
PFNGLFRAMEBUFFERRENDERBUFFERPROC p_glFramebufferRenderbuffer = nullptr;
PFNGLCHECKFRAMEBUFFERSTATUSPROC p_glCheckFramebufferStatus = nullptr;

template <class F>
bool load(F* f, const char* name) {
    *f = reinterpret_cast<F>(glfwGetProcAddress(name));
    return *f != nullptr;
}

void glfw_error(int code, const char* msg) {
    std::fprintf(stderr, "kvscope-view: GLFW error %d: %s\n", code, msg);
}

}  // namespace

Texture::~Texture() {
    if (tex_) glDeleteTextures(1, &tex_);
}

void Texture::upload(int w, int h, const uint32_t* rgba) {
    if (!tex_) glGenTextures(1, &tex_);
    glBindTexture(GL_TEXTURE_2D, tex_);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
    glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
    glPixelStorei(GL_UNPACK_ROW_LENGTH, 0);
    if (w == w_ && h == h_)
        glTexSubImage2D(GL_TEXTURE_2D, 0, 0, 0, w, h, GL_RGBA, GL_UNSIGNED_BYTE, rgba);
    else
        glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, w, h, 0, GL_RGBA, GL_UNSIGNED_BYTE, rgba);
    w_ = w;
    h_ = h;
}

void* Texture::id() const {
    return reinterpret_cast<void*>(static_cast<intptr_t>(tex_));
}

Window::Window(int w, int h, const std::string& title, bool visible) {
    glfwSetErrorCallback(glfw_error);
    if (!glfwInit())
        fail(
            "cannot open a window: no display (set DISPLAY, or run under xvfb-run for "
            "--screenshot)");
    glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
    glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 3);
    glfwWindowHint(GLFW_OPENGL_PROFILE, GLFW_OPENGL_CORE_PROFILE);
    glfwWindowHint(GLFW_VISIBLE, visible ? GLFW_TRUE : GLFW_FALSE);
    glfwWindowHint(GLFW_DOUBLEBUFFER, GLFW_TRUE);
    win_ = glfwCreateWindow(w, h, title.c_str(), nullptr, nullptr);
    if (!win_) {
        glfwTerminate();
        fail("cannot create an OpenGL 3.3 window (is Mesa's libgl1-mesa-dri installed?)");
    }
    glfwMakeContextCurrent(win_);
    glfwSwapInterval(1);
    fbo_ok_ = load(&p_glGenFramebuffers, "glGenFramebuffers") &&
              load(&p_glBindFramebuffer, "glBindFramebuffer") &&
              load(&p_glDeleteFramebuffers, "glDeleteFramebuffers") &&
              load(&p_glGenRenderbuffers, "glGenRenderbuffers") &&
              load(&p_glBindRenderbuffer, "glBindRenderbuffer") &&
              load(&p_glDeleteRenderbuffers, "glDeleteRenderbuffers") &&
              load(&p_glRenderbufferStorage, "glRenderbufferStorage") &&
              load(&p_glFramebufferRenderbuffer, "glFramebufferRenderbuffer") &&
              load(&p_glCheckFramebufferStatus, "glCheckFramebufferStatus");

    IMGUI_CHECKVERSION();
    ImGui::CreateContext();
    ImGuiIO& io = ImGui::GetIO();
    io.IniFilename = nullptr;  // the app decides where imgui.ini lives
    ImGui::StyleColorsDark();
    ImGuiStyle& st = ImGui::GetStyle();
    st.WindowRounding = 0;
    st.FrameRounding = 3;
    st.GrabRounding = 3;
    // DejaVu Sans when installed (fonts-dejavu-core), ImGui's built-in font otherwise.
    static const ImWchar ranges[] = {0x0020, 0x024F, 0x0370, 0x03FF, 0x0400, 0x04FF,
                                     0x2000, 0x206F, 0x2190, 0x21FF, 0x2200, 0x22FF,
                                     0x2500, 0x257F, 0xFFFD, 0xFFFD, 0};
    const char* ttf = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    std::error_code ec;
    const bool have_ttf = std::filesystem::exists(ttf, ec);
    for (int s = 1; s <= 4; ++s) {
        ImFont* f = nullptr;
        if (have_ttf) {
            ImFontConfig cfg;
            cfg.OversampleH = 2;
            f = io.Fonts->AddFontFromFileTTF(ttf, 15.0f * float(s), &cfg, ranges);
        }
        if (!f) {
            ImFontConfig cfg;
            cfg.SizePixels = 13.0f * float(s);
            f = io.Fonts->AddFontDefault(&cfg);
        }
        fonts_.push_back(f);
    }
    io.FontDefault = fonts_[0];
    ImGui_ImplGlfw_InitForOpenGL(win_, true);
    ImGui_ImplOpenGL3_Init("#version 330 core");
}

Window::~Window() {
    ImGui_ImplOpenGL3_Shutdown();
    ImGui_ImplGlfw_Shutdown();
    ImGui::DestroyContext();
    glfwDestroyWindow(win_);
    glfwTerminate();
}

bool Window::should_close() const {
    return glfwWindowShouldClose(win_);
}

ImFont* Window::font(int scale) const {
    return fonts_[size_t(std::clamp(scale, 1, 4) - 1)];
}

std::string Window::gl_renderer() const {
    const char* r = reinterpret_cast<const char*>(glGetString(GL_RENDERER));
    const char* v = reinterpret_cast<const char*>(glGetString(GL_VERSION));
    return std::string(r ? r : "?") + ", OpenGL " + (v ? v : "?");
}

void Window::begin_frame(double wait_s, float fb_scale) {
    if (wait_s > 0)
        glfwWaitEventsTimeout(wait_s);
    else
        glfwPollEvents();
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGuiIO& io = ImGui::GetIO();
    if (fb_scale > 0) {
        io.DisplayFramebufferScale = ImVec2(fb_scale, fb_scale);
        const int s = std::clamp(int(fb_scale + 0.5f), 1, 4);
        io.FontDefault = font(s);
        io.FontGlobalScale = 1.0f / float(s);
    } else {
        io.FontDefault = fonts_[0];
        io.FontGlobalScale = 1.0f;
    }
    ImGui::NewFrame();
}

void Window::window_size(int* w, int* h) const {
    glfwGetWindowSize(win_, w, h);
}

void Window::render(bool read, std::vector<uint8_t>* rgb, int* out_w, int* out_h, float scale) {
    ImGui::Render();
    ImDrawData* dd = ImGui::GetDrawData();
    int w = 0, h = 0;
    GLuint fbo = 0, rb = 0;
    const bool off = scale > 0 && fbo_ok_;
    if (off) {
        w = int(dd->DisplaySize.x * scale + 0.5f);
        h = int(dd->DisplaySize.y * scale + 0.5f);
        p_glGenFramebuffers(1, &fbo);
        p_glBindFramebuffer(GL_FRAMEBUFFER, fbo);
        p_glGenRenderbuffers(1, &rb);
        p_glBindRenderbuffer(GL_RENDERBUFFER, rb);
        p_glRenderbufferStorage(GL_RENDERBUFFER, GL_RGBA8, w, h);
        p_glFramebufferRenderbuffer(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_RENDERBUFFER, rb);
        if (p_glCheckFramebufferStatus(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE) {
            p_glBindFramebuffer(GL_FRAMEBUFFER, 0);
            p_glDeleteRenderbuffers(1, &rb);
            p_glDeleteFramebuffers(1, &fbo);
            fail("cannot render offscreen at {} x {}", w, h);
        }
    } else {
        glfwGetFramebufferSize(win_, &w, &h);
    }
    glViewport(0, 0, w, h);
    glClearColor(0.06f, 0.06f, 0.07f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(dd);
    if (read && rgb) {
        rgb->resize(size_t(w) * size_t(h) * 3);
        glPixelStorei(GL_PACK_ALIGNMENT, 1);
        if (!off) glReadBuffer(GL_BACK);
        glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE, rgb->data());
        // OpenGL's rows run bottom-up.
        const size_t row = size_t(w) * 3;
        std::vector<uint8_t> tmp(row);
        for (int y = 0; y < h / 2; ++y) {
            uint8_t* a = rgb->data() + size_t(y) * row;
            uint8_t* b = rgb->data() + size_t(h - 1 - y) * row;
            std::copy(a, a + row, tmp.data());
            std::copy(b, b + row, a);
            std::copy(tmp.data(), tmp.data() + row, b);
        }
        if (out_w) *out_w = w;
        if (out_h) *out_h = h;
    }
    if (off) {
        p_glBindFramebuffer(GL_FRAMEBUFFER, 0);
        p_glDeleteRenderbuffers(1, &rb);
        p_glDeleteFramebuffers(1, &fbo);
    }
}

void Window::swap() {
    glfwSwapBuffers(win_);
}

bool write_png(const std::string& path, int w, int h, const uint8_t* rgb) {
    return stbi_write_png(path.c_str(), w, h, 3, rgb, w * 3) != 0;
}

}  // namespace kvs::view
