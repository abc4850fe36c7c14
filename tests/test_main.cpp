// Catch2 main of every test binary, with visible skips (kvs_skip.h): exit 77 when every test case
// that ran called kvs_test::skip and no assertion failed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <iostream>
#include <set>
#include <string>

#include "kvs_skip.h"

namespace {

int g_cases_run = 0;
std::set<std::string> g_skipped;

struct CountCases : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        TestEventListenerBase::testCaseStarting(info);
        ++g_cases_run;
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(CountCases)

void kvs_test::skip(const std::string& reason) {
    const std::string name = Catch::getResultCapture().getCurrentTestName();
    std::cout << "KVS_SKIPPED: " << name << ": " << reason << std::endl;
    g_skipped.insert(name);
}

int main(int argc, char** argv) {
    const int failed = Catch::Session().run(argc, argv);
    if (failed == 0 && g_cases_run > 0 && int(g_skipped.size()) == g_cases_run) {
        std::cout << "every test case that ran (" << g_cases_run << ") was skipped: exit "
                  << kvs_test::kSkipExitCode << std::endl;
        return kvs_test::kSkipExitCode;
    }
    return failed;
}
