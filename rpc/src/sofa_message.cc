#include "dtx/rpc/sofa_message.h"

#include <string>

namespace dtx::rpc {

void WireFormat::ApplyTo(BoltFrame& f) const {
  f.protocol = protocol;
  f.ver1 = 2;
  f.switches = crc ? kSwitchCrc : 0;
}

Result<SofaRequest> SofaRequest::FromFrame(const BoltFrame& frame) {
  if (frame.codec != kCodecProtobuf) {
    return InvalidArgument("unsupported serialization codec " + std::to_string(frame.codec) +
                           ": this server speaks protobuf (codec 11)");
  }
  SofaRequest r;
  r.service = frame.Header(kHeaderTargetService);
  if (r.service.empty()) r.service = frame.Header(kHeaderService);
  r.method = frame.Header(kHeaderMethodName);
  r.target_app = frame.Header(kHeaderTargetApp);
  r.body = frame.content;
  if (r.service.empty()) return InvalidArgument("request names no service (header sofa_head_target_service)");
  if (r.method.empty()) return InvalidArgument("request names no method (header sofa_head_method_name)");
  return r;
}

BoltFrame SofaRequest::ToFrame(WireFormat format, uint32_t request_id, int32_t timeout_ms) const {
  BoltFrame f;
  format.ApplyTo(f);
  f.type = CommandType::kRequest;
  f.cmd_code = CommandCode::kRequest;
  f.request_id = request_id;
  f.codec = kCodecProtobuf;
  f.timeout_ms = timeout_ms;
  f.class_name = kSofaRequestClass;
  f.headers.reserve(4 + baggage.size());
  f.headers.emplace_back(kHeaderService, service);
  f.headers.emplace_back(kHeaderMethodName, method);
  f.headers.emplace_back(kHeaderTargetApp, target_app);
  f.headers.emplace_back(kHeaderTargetService, service);
  f.headers.insert(f.headers.end(), baggage.begin(), baggage.end());
  f.content = body;
  return f;
}

SofaResponse SofaResponse::FromFrame(const BoltFrame& frame) {
  SofaResponse r;
  r.status = frame.status;
  r.error = frame.status != ResponseStatus::kSuccess || frame.Header(kHeaderResponseError) == "true";
  r.body = frame.content;
  return r;
}

BoltFrame SofaResponse::ToFrame(WireFormat format, uint32_t request_id) const {
  BoltFrame f;
  format.ApplyTo(f);
  f.type = CommandType::kResponse;
  f.cmd_code = CommandCode::kResponse;
  f.request_id = request_id;
  f.codec = kCodecProtobuf;
  f.status = status;
  f.class_name = kSofaResponseClass;
  f.headers.emplace_back(kHeaderResponseError, error ? "true" : "false");
  f.content = body;
  return f;
}

Result<std::string_view> SofaResponse::ToResult() const {
  if (!error) return body;
  std::string m = "remote error (";
  m += ResponseStatusName(status);
  m += ")";
  if (!body.empty()) {
    m += ": ";
    m += body;
  }
  return RemoteError(std::move(m));
}

BoltFrame HeartbeatRequest(WireFormat format, uint32_t request_id, int32_t timeout_ms) {
  BoltFrame f;
  format.ApplyTo(f);
  f.type = CommandType::kRequest;
  f.cmd_code = CommandCode::kHeartbeat;
  f.request_id = request_id;
  f.codec = kCodecProtobuf;
  f.timeout_ms = timeout_ms;
  return f;
}

BoltFrame HeartbeatAck(const BoltFrame& heartbeat) {
  BoltFrame f;
  WireFormat::Of(heartbeat).ApplyTo(f);
  f.ver1 = heartbeat.ver1;
  f.type = CommandType::kResponse;
  f.cmd_code = CommandCode::kHeartbeat;
  f.ver2 = heartbeat.ver2;
  f.request_id = heartbeat.request_id;
  f.codec = heartbeat.codec;
  f.status = ResponseStatus::kSuccess;
  return f;
}

}  // namespace dtx::rpc
