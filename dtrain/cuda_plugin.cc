#include "dtrain/cuda_plugin.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

namespace dtrain {

const CudaPlugin* cuda_plugin(std::string* why) {
#if defined(DTRAIN_HAVE_CUDA)
  static std::once_flag once;
  static const CudaPlugin* plugin = nullptr;
  static std::string error;
  std::call_once(once, [] {
    // Next to the program (build/bin/, or the install's bin/ and lib/).
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    std::string tried;
    for (const auto& dir : {exe.parent_path(), exe.parent_path().parent_path() / "lib"}) {
      const std::string path = (dir / "libdtrain_cuda.so").string();
      if (!std::filesystem::exists(path)) {
        tried += (tried.empty() ? "" : ", ") + path;
        continue;
      }
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        error = std::string("cannot load the CUDA plugin: ") + dlerror();
        return;
      }
      using Entry = const CudaPlugin* (*)();
      auto entry = reinterpret_cast<Entry>(dlsym(h, "dtrain_cuda_plugin_v1"));
      if (!entry) {
        error = path + " has no dtrain_cuda_plugin_v1";
        return;
      }
      plugin = entry();
      return;
    }
    error = "the CUDA plugin is not installed (looked for " + tried + ")";
  });
  if (!plugin && why) *why = error;
  return plugin;
#else
  if (why)
    *why =
        "this build has no CUDA backend (the CUDA toolkit was not found at build time; see "
        "DTRAIN_CUDA in docs/gpu.md)";
  return nullptr;
#endif
}

}  // namespace dtrain
