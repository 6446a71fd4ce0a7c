// XidCommand: recognises the statements that bind a proxy session to a global transaction, by
// cheap prefix checks on the SQL text (no copying, no parsing of any other SQL):
//
//   SET [SESSION] dtx.xid { = | TO } '<xid>'     binds the session until RESET or another SET
//   SET LOCAL dtx.xid { = | TO } '<xid>'         binds it until the transaction block ends
//   SET [LOCAL] dtx.xid { = | TO } DEFAULT       same as RESET
//   RESET dtx.xid                                unbinds
//   SHOW dtx.xid                                 reports the binding
//   /* dtx.xid=<xid> */ <statement>              a leading comment: binds for the transaction that
//                                                the statement runs in (just the statement outside
//                                                a transaction block)
//
// Keywords and the name are case-insensitive; whitespace is free; one trailing ';' is allowed.
// The XID may also be written "double-quoted" or bare. An XID is 1..128 characters of letters,
// digits and "_.:-/@". A statement that starts like one of these but is not one (more statements
// after it, a bad XID) is kMalformed, so that it is refused with a clear error rather than sent on
// to PostgreSQL, where it would set an unrelated setting of the same name.
//
// Thread-safety: stateless functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dtx::sql_proxy {

inline constexpr size_t kMaxXidLength = 128;

enum class XidCommandKind {
  kNone,       // not an XID statement: forward it
  kSet,        // SET / SET SESSION
  kSetLocal,   // SET LOCAL
  kReset,      // RESET, or SET ... DEFAULT (see `local` for SET LOCAL ... DEFAULT)
  kShow,
  kMalformed,  // starts like one but is not valid: `error` says why
};

struct XidCommand {
  XidCommandKind kind = XidCommandKind::kNone;
  std::string xid;    // kSet, kSetLocal
  bool local = false; // kReset from SET LOCAL ... DEFAULT
  std::string error;  // kMalformed
};

// Classifies the whole text of a simple Query message. Returns kNone at the first character that
// rules the statement out, so an ordinary query costs a few comparisons.
XidCommand ParseXidCommand(std::string_view sql);

// The XID of a leading `/* dtx.xid=<xid> */` comment (spaces allowed around the parts); nullopt
// if the text does not start with such a comment or the XID in it is not valid.
std::optional<std::string_view> LeadingXidComment(std::string_view sql);

// True if `xid` is 1..kMaxXidLength characters of the allowed set.
bool IsValidXid(std::string_view xid);

}  // namespace dtx::sql_proxy
