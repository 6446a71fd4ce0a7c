#include "bank.h"

#include <iostream>
#include <thread>

namespace dtx::examples {

Bank::Bank(sdk::Participant& rm, std::string name, BankFaults faults)
    : rm_(rm),
      name_(std::move(name)),
      faults_(std::move(faults)),
      // The whole TCC declaration: action name, Try, Confirm, Cancel.
      debit_(rm.Tcc<Leg>(name_ + ".debit")
                 .Try(&Bank::TryDebit, this)
                 .Confirm(&Bank::ConfirmDebit, this)
                 .Cancel(&Bank::CancelDebit, this)),
      credit_(rm.Tcc<Leg>(name_ + ".credit")
                  .Try(&Bank::TryCredit, this)
                  .Confirm(&Bank::ConfirmCredit, this)
                  .Cancel(&Bank::CancelCredit, this)) {}

Status Bank::Init(int64_t accounts, int64_t initial) {
  return sdk::InLocalTx(*rm_.options().database, [&](sdk::LocalTx& tx) -> Status {
    auto r = tx.Exec(
        "CREATE TABLE IF NOT EXISTS accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL,"
        " frozen BIGINT NOT NULL DEFAULT 0, incoming BIGINT NOT NULL DEFAULT 0)");
    if (!r.ok()) return r.status();
    auto n = tx.Query("SELECT COUNT(*) FROM accounts");
    if (!n.ok()) return n.status();
    if (sdk::AsInt((*n)[0][0]) > 0) return Status::Ok();
    for (int64_t id = 1; id <= accounts; ++id) {
      auto ins = tx.Exec("INSERT INTO accounts (id, balance) VALUES (?, ?)", {id, initial});
      if (!ins.ok()) return ins.status();
    }
    return Status::Ok();
  });
}

Status Bank::Update(sdk::LocalTx& tx, const char* sql, const std::vector<sdk::SqlValue>& params, const char* refusal) {
  auto n = tx.Exec(sql, params);
  if (!n.ok()) return n.status();
  if (*n != 1) return FailedPrecondition(std::string(refusal));
  return Status::Ok();
}

void Bank::MaybeHang(const char* phase, const sdk::TccContext& ctx) {
  if (faults_.hang_in != phase) return;
  std::cout << "HANG " << phase << " " << ctx.xid() << std::endl;
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}

Status Bank::TryDebit(sdk::TccContext& ctx, const Leg& leg) {
  if (leg.amount <= 0) return InvalidArgument("amount must be positive");
  DTX_RETURN_IF_ERROR(Update(*ctx.local(),
                             "UPDATE accounts SET balance = balance - ?, frozen = frozen + ? WHERE id = ? AND balance >= ?",
                             {leg.amount, leg.amount, leg.account, leg.amount}, "no such account or not enough money"));
  MaybeHang("try", ctx);
  return Status::Ok();
}

Status Bank::ConfirmDebit(sdk::TccContext& ctx, const Leg& leg) {
  DTX_RETURN_IF_ERROR(Update(*ctx.local(), "UPDATE accounts SET frozen = frozen - ? WHERE id = ?",
                             {leg.amount, leg.account}, "no such account"));
  MaybeHang("confirm", ctx);
  if (faults_.slow_confirm_ms > 0 && !slowed_.exchange(true)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(faults_.slow_confirm_ms));
  }
  return Status::Ok();
}

Status Bank::CancelDebit(sdk::TccContext& ctx, const Leg& leg) {
  DTX_RETURN_IF_ERROR(Update(*ctx.local(), "UPDATE accounts SET balance = balance + ?, frozen = frozen - ? WHERE id = ?",
                             {leg.amount, leg.amount, leg.account}, "no such account"));
  MaybeHang("cancel", ctx);
  return Status::Ok();
}

Status Bank::TryCredit(sdk::TccContext& ctx, const Leg& leg) {
  if (leg.amount <= 0) return InvalidArgument("amount must be positive");
  DTX_RETURN_IF_ERROR(Update(*ctx.local(), "UPDATE accounts SET incoming = incoming + ? WHERE id = ?",
                             {leg.amount, leg.account}, "no such account"));
  MaybeHang("try", ctx);
  return Status::Ok();
}

Status Bank::ConfirmCredit(sdk::TccContext& ctx, const Leg& leg) {
  DTX_RETURN_IF_ERROR(Update(*ctx.local(),
                             "UPDATE accounts SET balance = balance + ?, incoming = incoming - ? WHERE id = ?",
                             {leg.amount, leg.amount, leg.account}, "no such account"));
  MaybeHang("confirm", ctx);
  if (faults_.slow_confirm_ms > 0 && !slowed_.exchange(true)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(faults_.slow_confirm_ms));
  }
  return Status::Ok();
}

Status Bank::CancelCredit(sdk::TccContext& ctx, const Leg& leg) {
  DTX_RETURN_IF_ERROR(Update(*ctx.local(), "UPDATE accounts SET incoming = incoming - ? WHERE id = ?",
                             {leg.amount, leg.account}, "no such account"));
  MaybeHang("cancel", ctx);
  return Status::Ok();
}

Status Bank::PlainDebit(const Leg& leg) {
  return sdk::InLocalTx(*rm_.options().database, [&](sdk::LocalTx& tx) {
    return Update(tx, "UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?",
                  {leg.amount, leg.account, leg.amount}, "no such account or not enough money");
  });
}

Status Bank::PlainCredit(const Leg& leg) {
  return sdk::InLocalTx(*rm_.options().database, [&](sdk::LocalTx& tx) {
    return Update(tx, "UPDATE accounts SET balance = balance + ? WHERE id = ?", {leg.amount, leg.account},
                  "no such account");
  });
}

Result<Summary> Bank::Summarize() {
  Summary s;
  Status st = sdk::InLocalTx(*rm_.options().database, [&](sdk::LocalTx& tx) -> Status {
    auto rows = tx.Query(
        "SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(frozen), 0), COALESCE(SUM(incoming), 0), COUNT(*) FROM accounts");
    if (!rows.ok()) return rows.status();
    const auto& r = (*rows)[0];
    s = {sdk::AsInt(r[0]), sdk::AsInt(r[1]), sdk::AsInt(r[2]), sdk::AsInt(r[3])};
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return s;
}

}  // namespace dtx::examples
