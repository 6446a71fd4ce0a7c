// Bank: the accounts of one example bank in its own database, and its two TCC actions:
// "<name>.debit" (Try freezes the amount, Confirm drops it, Cancel gives it back) and
// "<name>.credit" (Try promises the amount as incoming, Confirm adds it to the balance, Cancel
// drops the promise). Money held by a bank is balance + frozen; incoming is not money yet.
//
// Thread-safety: the methods run on many threads at once, each in its own local transaction.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "dtx/sdk/participant.h"

namespace dtx::examples {

struct Leg {
  int64_t account = 0;
  int64_t amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Leg, account, amount)

struct Summary {
  int64_t balance = 0, frozen = 0, incoming = 0, accounts = 0;
};

// Faults for the tests: where to stop forever (the test then kills the process), or to slow down.
struct BankFaults {
  std::string hang_in;          // "try", "confirm" or "cancel": hang inside the local transaction
  int64_t slow_confirm_ms = 0;  // the first Confirm takes this long (the coordinator asks again)
};

class Bank {
 public:
  Bank(sdk::Participant& rm, std::string name, BankFaults faults);

  // Creates and fills the accounts table (when empty): accounts 1..n with `initial` each.
  Status Init(int64_t accounts, int64_t initial);

  sdk::TccAction<Leg>& debit() { return debit_; }
  sdk::TccAction<Leg>& credit() { return credit_; }

  // Plain local transactions, for comparison.
  Status PlainDebit(const Leg& leg);
  Status PlainCredit(const Leg& leg);
  Result<Summary> Summarize();

  Status TryDebit(sdk::TccContext& ctx, const Leg& leg);
  Status ConfirmDebit(sdk::TccContext& ctx, const Leg& leg);
  Status CancelDebit(sdk::TccContext& ctx, const Leg& leg);
  Status TryCredit(sdk::TccContext& ctx, const Leg& leg);
  Status ConfirmCredit(sdk::TccContext& ctx, const Leg& leg);
  Status CancelCredit(sdk::TccContext& ctx, const Leg& leg);

 private:
  Status Update(sdk::LocalTx& tx, const char* sql, const std::vector<sdk::SqlValue>& params, const char* refusal);
  void MaybeHang(const char* phase, const sdk::TccContext& ctx);

  sdk::Participant& rm_;
  std::string name_;
  BankFaults faults_;
  std::atomic<bool> slowed_{false};
  sdk::TccAction<Leg> debit_;
  sdk::TccAction<Leg> credit_;
};

}  // namespace dtx::examples
