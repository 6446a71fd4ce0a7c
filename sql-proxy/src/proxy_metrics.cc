#include "dtx/sql_proxy/proxy_metrics.h"

namespace dtx::sql_proxy {
namespace {

void Metric(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

template <typename T>
void Sample(std::string& out, const char* name, const char* labels, const std::atomic<T>& v) {
  out += name;
  out += labels;
  out += ' ';
  out += std::to_string(v.load(std::memory_order_relaxed));
  out += '\n';
}

}  // namespace

std::string ProxyMetrics::Render() const {
  std::string out;
  Metric(out, "dtx_sql_proxy_connections_total", "counter", "TCP connections accepted (sessions and cancel requests).");
  Sample(out, "dtx_sql_proxy_connections_total", "", connections_total);
  Metric(out, "dtx_sql_proxy_sessions_total", "counter", "Sessions whose startup was relayed to a PostgreSQL server.");
  Sample(out, "dtx_sql_proxy_sessions_total", "", sessions_total);
  Metric(out, "dtx_sql_proxy_sessions_tls_total", "counter", "Client connections that set up TLS.");
  Sample(out, "dtx_sql_proxy_sessions_tls_total", "", sessions_tls);
  Metric(out, "dtx_sql_proxy_server_sessions_tls_total", "counter", "Server connections that set up TLS (--server-tls).");
  Sample(out, "dtx_sql_proxy_server_sessions_tls_total", "", sessions_server_tls);
  Metric(out, "dtx_sql_proxy_sessions_active", "gauge", "Client connections open now.");
  Sample(out, "dtx_sql_proxy_sessions_active", "", sessions_active);
  Metric(out, "dtx_sql_proxy_bytes_total", "counter", "Bytes relayed, by direction.");
  Sample(out, "dtx_sql_proxy_bytes_total", "{direction=\"client_to_server\"}", bytes_client_to_server);
  Sample(out, "dtx_sql_proxy_bytes_total", "{direction=\"server_to_client\"}", bytes_server_to_client);
  Metric(out, "dtx_sql_proxy_messages_total", "counter", "Protocol messages relayed, by direction.");
  Sample(out, "dtx_sql_proxy_messages_total", "{direction=\"client_to_server\"}", messages_client_to_server);
  Sample(out, "dtx_sql_proxy_messages_total", "{direction=\"server_to_client\"}", messages_server_to_client);
  Metric(out, "dtx_sql_proxy_server_error_responses_total", "counter", "ErrorResponse messages relayed from PostgreSQL.");
  Sample(out, "dtx_sql_proxy_server_error_responses_total", "", server_error_responses);
  Metric(out, "dtx_sql_proxy_auth_failures_total", "counter", "Sessions whose server refused the startup or the password.");
  Sample(out, "dtx_sql_proxy_auth_failures_total", "", auth_failures);
  Metric(out, "dtx_sql_proxy_cancel_requests_total", "counter", "CancelRequest packets received.");
  Sample(out, "dtx_sql_proxy_cancel_requests_total", "", cancel_requests);
  Metric(out, "dtx_sql_proxy_cancel_requests_unmatched_total", "counter", "CancelRequests whose key matched no session.");
  Sample(out, "dtx_sql_proxy_cancel_requests_unmatched_total", "", cancel_requests_unmatched);
  Metric(out, "dtx_sql_proxy_xid_commands_total", "counter", "SET/RESET/SHOW dtx.xid statements answered by the proxy.");
  Sample(out, "dtx_sql_proxy_xid_commands_total", "", xid_commands);
  Metric(out, "dtx_sql_proxy_xid_comment_statements_total", "counter", "Statements bound by a leading dtx.xid comment.");
  Sample(out, "dtx_sql_proxy_xid_comment_statements_total", "", xid_comment_statements);
  Metric(out, "dtx_sql_proxy_begins_held_total", "counter",
         "BEGINs answered by the proxy and sent to the server in front of the session's next message.");
  Sample(out, "dtx_sql_proxy_begins_held_total", "", begins_held);
  Metric(out, "dtx_sql_proxy_errors_total", "counter", "Sessions ended or refused by an error, by kind.");
  Sample(out, "dtx_sql_proxy_errors_total", "{kind=\"client_protocol\"}", errors_client_protocol);
  Sample(out, "dtx_sql_proxy_errors_total", "{kind=\"backend_connect\"}", errors_backend_connect);
  Sample(out, "dtx_sql_proxy_errors_total", "{kind=\"backend_lost\"}", errors_backend_lost);
  Sample(out, "dtx_sql_proxy_errors_total", "{kind=\"client_lost\"}", errors_client_lost);
  Sample(out, "dtx_sql_proxy_errors_total", "{kind=\"tls\"}", errors_tls);
  Metric(out, "dtx_sql_proxy_at_global_total", "counter", "Global transactions through dtx.begin/commit/rollback, by outcome.");
  Sample(out, "dtx_sql_proxy_at_global_total", "{event=\"begin\"}", at_global_begins);
  Sample(out, "dtx_sql_proxy_at_global_total", "{event=\"commit\"}", at_global_commits);
  Sample(out, "dtx_sql_proxy_at_global_total", "{event=\"rollback\"}", at_global_rollbacks);
  Metric(out, "dtx_sql_proxy_at_statements_total", "counter", "Writes of bound sessions recorded in undo logs.");
  Sample(out, "dtx_sql_proxy_at_statements_total", "", at_statements);
  Metric(out, "dtx_sql_proxy_at_branches_total", "counter", "Local transactions that wrote as AT branches, by outcome.");
  Sample(out, "dtx_sql_proxy_at_branches_total", "{outcome=\"committed\"}", at_branches_committed);
  Sample(out, "dtx_sql_proxy_at_branches_total", "{outcome=\"failed\"}", at_branches_failed);
  Metric(out, "dtx_sql_proxy_at_refusals_total", "counter", "Statements refused or failed by the proxy in AT mode.");
  Sample(out, "dtx_sql_proxy_at_refusals_total", "", at_refusals);
  Metric(out, "dtx_sql_proxy_at_unbound_checks_total", "counter", "Coordinator checks of unbound writes against the global locks (one per write outside a block, one per block inside one).");
  Sample(out, "dtx_sql_proxy_at_unbound_checks_total", "", at_unbound_checks);
  return out;
}

}  // namespace dtx::sql_proxy
