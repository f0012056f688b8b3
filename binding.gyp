{
  "targets": [
    {
      "target_name": "morsel_mmap",
      "sources": ["src/physical/native/mmap.cc"],
      # Pin C++17 and -O2 rather than inherit common.gypi's -O3/gnu++17.
      # Node 20's NODE_MODULE_INIT casts a 3-arg init to the 4-arg register
      # type, which -Wextra flags as -Wcast-function-type; it is harmless
      # (node's own pattern), so silence it instead of drowning real warnings.
      "cflags!": ["-O3"],
      "cflags_cc!": ["-std=gnu++17", "-O3"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wno-cast-function-type"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_OPTIMIZATION_LEVEL": "2"
      }
    }
  ]
}
