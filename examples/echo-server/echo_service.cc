#include "echo_service.h"

#include "echo.pb.h"

namespace dtx::examples {

using com::alipay::sofa::rpc::test::EchoRequest;
using com::alipay::sofa::rpc::test::EchoResponse;

void AddEchoService(rpc::ServiceRegistry& registry) {
  registry.AddSyncMethod<EchoRequest, EchoResponse>(
      std::string(kEchoService), std::string(kEchoMethod),
      [](const rpc::CallContext&, const EchoRequest& request) -> Result<EchoResponse> {
        if (request.name() == "fail") return RemoteError("echo failed for fail");
        EchoResponse response;
        response.set_code(200);
        response.set_message("hello " + request.name() + ", you are in " +
                             com::alipay::sofa::rpc::test::Group_Name(request.group()));
        return response;
      });
}

}  // namespace dtx::examples
