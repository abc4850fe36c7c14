// The policy registry: one line per policy file in policies/. To add a policy, write
// policies/<name>.cpp defining `PolicyEntry policy_<name>()` and list it here.
#include "simulator/policy.h"

namespace kvs::sim {

PolicyEntry policy_full();
PolicyEntry policy_window();
PolicyEntry policy_h2o();
PolicyEntry policy_tova();
PolicyEntry policy_snapkv();
PolicyEntry policy_pyramidkv();
PolicyEntry policy_adakv();
PolicyEntry policy_dynamickv();
PolicyEntry policy_composite();
PolicyEntry policy_knorm();
PolicyEntry policy_keydiff();
PolicyEntry policy_quant();
PolicyEntry policy_agd();
PolicyEntry policy_agacc();
PolicyEntry policy_kmeans();
PolicyEntry policy_razor();
PolicyEntry policy_cam();
PolicyEntry policy_expattn();
PolicyEntry policy_uncomp();
PolicyEntry policy_zack();

const std::vector<PolicyEntry>& policy_registry() {
    static const std::vector<PolicyEntry> all = {
        policy_full(),      policy_window(),    policy_h2o(),     policy_tova(),
        policy_snapkv(),    policy_pyramidkv(), policy_adakv(),   policy_dynamickv(),
        policy_composite(), policy_knorm(),     policy_keydiff(), policy_quant(),
        policy_agd(),       policy_agacc(),     policy_kmeans(),  policy_razor(),
        policy_cam(),       policy_expattn(),   policy_uncomp(),  policy_zack()};
    return all;
}

}  // namespace kvs::sim
