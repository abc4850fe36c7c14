# Compile options shared by every kvscope target: kvs_project_options(<target>).
# Warnings (and -Werror with KVS_WERROR) apply to project code only, never to system headers.
function(kvs_project_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 reports -Wrestrict false positives inside libstdc++'s std::string at -O3
    # (GCC bug 105651); they are not in our code.
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
  if(KVS_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(KVS_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  else()
    # x86-64-v3: AVX2 + FMA + F16C; runs on any x86 CPU since ~2015.
    target_compile_options(${target} PRIVATE -march=x86-64-v3)
  endif()
endfunction()

if(KVS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(KVS_FUZZ)
  # Coverage instrumentation for libFuzzer on every target; the fuzz_* programs link the fuzzer.
  add_compile_options(-fsanitize=fuzzer-no-link)
  add_link_options(-fsanitize=fuzzer-no-link)
endif()
