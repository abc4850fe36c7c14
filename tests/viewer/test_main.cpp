// Catch2 main of test_viewer (tests/CMakeLists.txt's kvs_test_main is defined after viewer/).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
