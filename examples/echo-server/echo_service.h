// The echo service of the SOFARPC samples: com.alipay.sofa.rpc.test.ProtoService:1.0 echoObj.
// It answers EchoResponse{code: 200, message: "hello <name>, you are in <group>"}; a request
// whose name is "fail" gets the application error "echo failed for fail", which lets tests see
// how each side carries an error.
#pragma once

#include <string_view>

#include "dtx/rpc/service_registry.h"

namespace dtx::examples {

inline constexpr std::string_view kEchoService = "com.alipay.sofa.rpc.test.ProtoService:1.0";
inline constexpr std::string_view kEchoMethod = "echoObj";

void AddEchoService(rpc::ServiceRegistry& registry);

}  // namespace dtx::examples
