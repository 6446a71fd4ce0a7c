// Status and Result<T>: the one way dtx reports expected failures.
//
// A Status is either OK or a code with a message. OK costs nothing to create or copy;
// an error holds its message on the heap. Result<T> holds a T or a non-OK Status.
// Both are [[nodiscard]]: a caller handles the failure or says why it does not.
// Exceptions are kept for programming errors (broken invariants), never for I/O or input.
//
// Thread-safety: values; distinct objects may be used from distinct threads freely.
#pragma once

#include <cassert>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dtx {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,     // the caller's input is malformed
  kNotFound,            // the thing named does not exist
  kAlreadyExists,
  kFailedPrecondition,  // the system is not in a state that allows the call
  kTimeout,             // a deadline passed before the outcome was known
  kUnavailable,         // a peer or resource cannot be reached now; retrying may help
  kCancelled,           // the caller or a shutdown gave up on the operation
  kResourceExhausted,   // a limit was hit (frame size, queue length, disk)
  kUnauthenticated,
  kPermissionDenied,
  kCorruption,          // stored or received data is damaged
  kIOError,
  kRemoteError,         // the peer ran the call and answered with an error
  kInternal,            // a bug: an invariant of our own was broken
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  // The message without the code; empty for OK.
  std::string_view message() const;
  // "Timeout: call timed out after 3000 ms"; "OK" for OK.
  std::string ToString() const;

  // Prefixes the message with context, keeping the code: "loading config: <message>".
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const State> state_;  // null means OK; shared so copies are cheap
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Shorthands for the common codes.
inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
inline Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
inline Status RemoteError(std::string m) { return {StatusCode::kRemoteError, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Result<T>: a T, or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result needs a value or an error");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  T value_or(T fallback) const& { return ok() ? std::get<T>(v_) : std::move(fallback); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace dtx

// Returns the Status of an expression from the enclosing function if it is not OK.
#define DTX_RETURN_IF_ERROR(expr)          \
  do {                                     \
    ::dtx::Status dtx_status_ = (expr);    \
    if (!dtx_status_.ok()) return dtx_status_; \
  } while (0)
