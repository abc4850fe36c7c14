// Short run labels: the policy, its budget and the parameters that differ from its defaults.
#include <catch2/catch.hpp>

#include "viewdata/labels.h"
#include "viewdata/replay_backend.h"

using namespace kvs::view;

namespace {
// As `kvscope policies --json` lists them (extra keys ignored).
const char* kPolicies = R"([
 {"name":"full","summary":"","details":"","needs_budget":false,"takes_budget":false,"params":[]},
 {"name":"h2o","summary":"","needs_budget":true,"takes_budget":true,"params":[
   {"name":"budget","default":"","help":""},{"name":"recent","default":"32","help":""},
   {"name":"gqa","default":"mean","help":""},{"name":"bits","default":"16","help":""},
   {"name":"group","default":"32","help":""}]},
 {"name":"quant","summary":"","params":[
   {"name":"bits","default":"4","help":""},{"name":"group","default":"32","help":""},
   {"name":"residual","default":"128","help":""},{"name":"format","default":"kivi","help":""}]},
 {"name":"agd","summary":"","params":[
   {"name":"budget","default":"","help":""},{"name":"gamma","default":"0.9","help":""}]}
])";

RunInfo info(const std::string& policy, const std::string& spec, const std::string& budget) {
    RunInfo i;
    i.policy = policy;
    i.spec = spec;
    i.budget = budget;
    i.mode = "stream";
    return i;
}
}  // namespace

TEST_CASE("labels: spec parsing and default comparison", "[cpu]") {
    const auto [name, params] = parse_spec("h2o:budget=256,recent=32,gqa=mean");
    CHECK(name == "h2o");
    REQUIRE(params.size() == 3);
    CHECK(params[0] == std::make_pair(std::string("budget"), std::string("256")));
    CHECK(params[2].second == "mean");
    CHECK(parse_spec("full").second.empty());
    CHECK(parse_spec("x:flag").second[0].second.empty());
    CHECK(same_value("0.9", "0.90"));
    CHECK(same_value("mean", "mean"));
    CHECK_FALSE(same_value("2", "4"));
    CHECK_FALSE(same_value("", "0"));
}

TEST_CASE("labels: policy, budget and the non-default parameters", "[cpu]") {
    const auto pol = parse_policies_json(kPolicies);
    CHECK(short_label(info("full", "full", ""), pol) == "full");
    CHECK(short_label(info("h2o", "h2o:budget=256,recent=32,gqa=mean,bits=16,group=32", "256"),
                      pol) == "h2o 256");
    CHECK(short_label(info("h2o", "h2o:budget=64,recent=8,gqa=max,bits=16,group=32", "64"), pol) ==
          "h2o 64 recent=8,gqa=max");
    CHECK(short_label(info("quant", "quant:bits=4,group=32,residual=128,format=kivi", ""), pol) ==
          "quant");
    CHECK(short_label(info("quant", "quant:bits=2,group=32,residual=128,format=kivi", ""), pol) ==
          "quant bits=2");
    CHECK(short_label(info("quant", "quant:bits=4,group=32,residual=0,format=q8_0", ""), pol) ==
          "quant residual=0,format=q8_0");
    CHECK(short_label(info("agd", "agd:budget=0.2,gamma=0.90", "0.2"), pol) == "agd 0.2");
    // Prefill mode is part of the label.
    RunInfo p = info("h2o", "h2o:budget=256,recent=32", "256");
    p.mode = "prefill";
    p.prefill_len = 1000;
    CHECK(short_label(p, pol) == "h2o 256 (prefill 1000)");
    // Without the policy list (no kvscope), or for a policy it does not know: the full spec.
    CHECK(short_label(info("h2o", "h2o:budget=256,recent=32", "256"), {}) ==
          "h2o:budget=256,recent=32");
    CHECK(short_label(info("mine", "mine:budget=9,x=1", "9"), pol) == "mine:budget=9,x=1");
    // Duplicates become distinguishable.
    std::vector<std::string> l = {"h2o 256", "full", "h2o 256", "h2o 256"};
    make_unique_labels(l);
    CHECK(l == std::vector<std::string>{"h2o 256", "full", "h2o 256 #2", "h2o 256 #3"});
}
