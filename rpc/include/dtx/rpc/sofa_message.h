// The SOFARPC envelope carried in Bolt frames: SofaRequest and SofaResponse.
//
// A request names its service as "<proto package>.<Service>:<version>" in the `service` and
// `sofa_head_target_service` headers and its method in `sofa_head_method_name`; its content
// is one serialized Protobuf message (codec 11). A response says whether it is an error in
// `sofa_head_response_error`; an error's content is a UTF-8 message. See docs/bolt.md.
//
// Like BoltFrame, both are views: they point into the frame or strings they were made from.
#pragma once

#include <cstdint>
#include <string_view>

#include "dtx/common/status.h"
#include "dtx/rpc/bolt_frame.h"

namespace dtx::rpc {

inline constexpr std::string_view kSofaRequestClass = "com.alipay.sofa.rpc.core.request.SofaRequest";
inline constexpr std::string_view kSofaResponseClass = "com.alipay.sofa.rpc.core.response.SofaResponse";
inline constexpr std::string_view kHeaderService = "service";
inline constexpr std::string_view kHeaderTargetService = "sofa_head_target_service";
inline constexpr std::string_view kHeaderMethodName = "sofa_head_method_name";
inline constexpr std::string_view kHeaderTargetApp = "sofa_head_target_app";
inline constexpr std::string_view kHeaderResponseError = "sofa_head_response_error";

// How a side writes its frames: the protocol version and, for v2, whether frames carry a CRC32.
struct WireFormat {
  BoltProtocol protocol = BoltProtocol::kV1;
  bool crc = true;  // v2 only

  static WireFormat Of(const BoltFrame& f) { return {f.protocol, f.has_crc()}; }
  // The fields of a frame that this format fixes.
  void ApplyTo(BoltFrame& f) const;
};

struct SofaRequest {
  std::string_view service;     // "com.alipay.sofa.rpc.test.ProtoService:1.0"
  std::string_view method;      // "echoObj"
  std::string_view target_app;  // may be empty
  HeaderMap baggage;            // further headers, sent after the standard ones
  std::string_view body;        // one serialized Protobuf message

  // Reads the envelope from a request frame; an error names what is wrong with it.
  static Result<SofaRequest> FromFrame(const BoltFrame& frame);
  // The request frame, in the header order SOFARPC peers send: service, method, target app,
  // target service, then the baggage. The frame's views point into *this.
  BoltFrame ToFrame(WireFormat format, uint32_t request_id, int32_t timeout_ms) const;
};

struct SofaResponse {
  ResponseStatus status = ResponseStatus::kSuccess;
  bool error = false;     // sofa_head_response_error
  std::string_view body;  // the Protobuf response, or the error message when `error`

  // Reads the envelope from a response frame (any status; a non-SUCCESS status is an error).
  static SofaResponse FromFrame(const BoltFrame& frame);
  // The response frame; its views point into *this.
  BoltFrame ToFrame(WireFormat format, uint32_t request_id) const;
  // OK with the body for a success, else a RemoteError naming the status and message.
  Result<std::string_view> ToResult() const;

  static SofaResponse Ok(std::string_view body) { return {ResponseStatus::kSuccess, false, body}; }
  static SofaResponse Error(ResponseStatus status, std::string_view message) { return {status, true, message}; }
};

// A heartbeat request and the acknowledgement that answers one.
BoltFrame HeartbeatRequest(WireFormat format, uint32_t request_id, int32_t timeout_ms);
BoltFrame HeartbeatAck(const BoltFrame& heartbeat);

}  // namespace dtx::rpc
