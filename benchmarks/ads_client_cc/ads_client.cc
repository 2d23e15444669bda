// A simulated sidecar in C++: benchmarks/ads_client.py's protocol behaviour, with a C++
// gRPC client like Envoy's (streams.py --clients cc; build: make bench-client). N ADS streams in one process, each on a
// channel of its own (its own TCP connection), subscribing to CDS and LDS, ACKing every
// response, and with --fronted subscribing by name to RDS/EDS/SDS as ads_client.py does.
// Prints the same JSON lines on stdout. The nodes come from --nodes FILE (lines of
// "namespace<TAB>hex of the serialised Node, id empty", written by streams.py with
// ads_client.node_of); each stream's id is appended as field 1 (the last value wins).
//
// Every field number below is envoy's, taken from the Python descriptors.

#include <absl/synchronization/mutex.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ads.grpc.pb.h"

using envoy::service::discovery::v3::AggregatedDiscoveryService;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

namespace {

const std::string CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const std::string EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const std::string LDS = "type.googleapis.com/envoy.config.listener.v3.Listener";
const std::string RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const std::string SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const std::string HCM = "envoy.filters.network.http_connection_manager";
const std::string TLS =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

using Names = std::vector<std::string>;  // sorted, unique (Python: tuple(sorted(set)))

// ---- protobuf wire reading, by hand, for the few fields the sidecar follows ----------

struct Wire {
  const uint8_t* p;
  const uint8_t* end;
  explicit Wire(std::string_view s)
      : p(reinterpret_cast<const uint8_t*>(s.data())), end(p + s.size()) {}

  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  // The next field: its number, wire type, and (length-delimited) bytes or (varint) value.
  // False at the end or on malformed input.
  bool next(uint32_t& field, uint32_t& type, std::string_view& bytes, uint64_t& value) {
    if (p >= end) return false;
    uint64_t key;
    if (!varint(key)) return false;
    field = uint32_t(key >> 3);
    type = uint32_t(key & 7);
    switch (type) {
      case 0:
        return varint(value);
      case 1:
        if (end - p < 8) return false;
        p += 8;
        return true;
      case 2: {
        uint64_t len;
        if (!varint(len) || uint64_t(end - p) < len) return false;
        bytes = std::string_view(reinterpret_cast<const char*>(p), len);
        p += len;
        return true;
      }
      case 5:
        if (end - p < 4) return false;
        p += 4;
        return true;
      default:
        return false;  // groups: never in these messages
    }
  }
};

#define FIELDS(data)                      \
  Wire w(data);                           \
  uint32_t f, t;                          \
  std::string_view b;                     \
  uint64_t v;                             \
  while (w.next(f, t, b, v))

// google.protobuf.Any {type_url = 1, value = 2}; a message field given twice merges.
void parse_any(std::string_view data, std::string_view& type_url, std::string_view& value) {
  FIELDS(data) {
    if (f == 1 && t == 2) type_url = b;
    if (f == 2 && t == 2) value = b;
  }
}

// Listener.filter_chains(3) -> FilterChain.filters(3) -> Filter{name 1, typed_config 4}
// -> HttpConnectionManager.rds(3, oneof route_specifier with 4, 31) -> Rds.route_config_name(2)
void hcm_routes(std::string_view hcm, std::set<std::string>& out) {
  int specifier = 0;
  std::string_view route;
  FIELDS(hcm) {
    if (t != 2) continue;
    if (f == 3) {
      if (specifier != 3) route = {};
      specifier = 3;
      FIELDS(b) {
        if (f == 2 && t == 2) route = b;
      }
    } else if (f == 4 || f == 31) {
      specifier = int(f);
    }
  }
  if (specifier == 3) out.emplace(route);
}

void filter_routes(std::string_view filter, std::set<std::string>& out) {
  std::string_view name, type_url, value;
  FIELDS(filter) {
    if (f == 1 && t == 2) name = b;
    if (f == 4 && t == 2) parse_any(b, type_url, value);
  }
  if (name == HCM && !value.empty()) hcm_routes(value, out);
}

Names route_names(const std::vector<std::string_view>& values) {
  std::set<std::string> out;
  for (auto value : values) {
    if (value.find(HCM) == std::string_view::npos) continue;  // the DNS listener
    FIELDS(value) {
      if (f != 3 || t != 2) continue;
      FIELDS(b) {
        if (f == 3 && t == 2) filter_routes(b, out);
      }
    }
  }
  return Names(out.begin(), out.end());
}

// CommonTlsContext.tls_certificate_sds_secret_configs(6)[].name(1) and
// validation_context_sds_secret_config(7, oneof with 3, 8, 10, 12).name(1)
struct Common {
  std::vector<std::string_view> certificates;
  int validation = 0;
  std::string_view validation_name;
};

void parse_common(std::string_view data, Common& c) {
  FIELDS(data) {
    if (t != 2) continue;
    if (f == 6) {
      std::string_view name;
      FIELDS(b) {
        if (f == 1 && t == 2) name = b;
      }
      c.certificates.push_back(name);
    } else if (f == 7) {
      if (c.validation != 7) c.validation_name = {};
      c.validation = 7;
      FIELDS(b) {
        if (f == 1 && t == 2) c.validation_name = b;
      }
    } else if (f == 3 || f == 8 || f == 10 || f == 12) {
      c.validation = int(f);
    }
  }
}

// Cluster{name 1, type 2 (oneof with cluster_type 38), eds_cluster_config 3 {service_name 2},
// transport_socket 24 {typed_config 3}}; UpstreamTlsContext.common_tls_context(1)
void cluster_names(const std::vector<std::string_view>& values, Names& eds_out,
                   Names& secrets_out) {
  std::set<std::string> eds, secrets;
  for (auto value : values) {
    std::string_view name, service, socket_type, socket_value;
    int discovery = 0;
    uint64_t type = 0;
    FIELDS(value) {
      if (f == 1 && t == 2) {
        name = b;
      } else if (f == 2 && t == 0) {
        discovery = 2;
        type = v;
      } else if (f == 38 && t == 2) {
        discovery = 38;
        type = 0;
      } else if (f == 3 && t == 2) {
        FIELDS(b) {
          if (f == 2 && t == 2) service = b;
        }
      } else if (f == 24 && t == 2) {
        FIELDS(b) {
          if (f == 3 && t == 2) parse_any(b, socket_type, socket_value);
        }
      }
    }
    if (discovery == 2 && type == 3) eds.emplace(service.empty() ? name : service);  // EDS
    if (socket_type == TLS) {
      Common common;
      FIELDS(socket_value) {
        if (f == 1 && t == 2) parse_common(b, common);
      }
      for (auto c : common.certificates) secrets.emplace(c);
      if (common.validation == 7) secrets.emplace(common.validation_name);
    }
  }
  eds_out.assign(eds.begin(), eds.end());
  secrets_out.assign(secrets.begin(), secrets.end());
}

// ---- output ----------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

double now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* code_name(int code) {
  static const char* names[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? names[code] : "UNKNOWN";
}

struct Options {
  std::string address;
  bool fronted = false;
  std::string watch;
};

class Client;

// ---- the streams, driven by one thread from a completion queue --------------------------
//
// Like Envoy's main thread, one thread does every stream's work: it polls the completion
// queue (gRPC's I/O happens in that poll), handles each response, queues the requests, and
// starts new streams after their back-off (a grpc::Alarm on the same queue). No locks but
// the output's.

class Client;
class Stream;

enum class Op { kStart, kRead, kWrite, kFinish, kRetry, kStop };

struct Tag {
  Op op;
  Stream* stream;  // kStart, kRead, kWrite, kFinish
  int index;       // kRetry
};

class Stream {
 public:
  Stream(Client* client, int index, const std::string& node, grpc::CompletionQueue* cq);
  // One event of this stream; false once it is over (nothing of it in the queue any more).
  bool on(Op op, bool ok);
  void cancel() { context_.TryCancel(); }
  int index() const { return index_; }
  const grpc::Status& status() const { return status_; }

 private:
  void write(DiscoveryRequest&& request);
  void pump();
  void handle();

  Client* client_;
  int index_;
  std::string cid_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<AggregatedDiscoveryService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<DiscoveryRequest, DiscoveryResponse>> call_;
  DiscoveryResponse response_;
  grpc::Status status_;
  Tag start_{Op::kStart, this, 0}, read_{Op::kRead, this, 0}, write_{Op::kWrite, this, 0},
      finish_{Op::kFinish, this, 0};
  int pending_ = 0;  // tags of this stream in the queue
  bool started_ = false, writing_ = false, broken_ = false, finished_ = false, done_ = false;
  std::deque<DiscoveryRequest> writes_;  // the first one in flight while writing_
  // Named subscriptions (RDS, EDS, SDS) and the last version and nonce of each type.
  std::map<std::string, Names> names_;
  std::map<std::string, std::pair<std::string, std::string>> last_;
};

class Client {
 public:
  Client(Options opts, std::vector<std::string> nodes, int first)
      : opts_(std::move(opts)), nodes_(std::move(nodes)), first_(first),
        slots_(nodes_.size()) {
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].retry = {Op::kRetry, nullptr, int(i)};
  }

  const Options& opts() const { return opts_; }
  std::string cid(int index) const { return "c" + std::to_string(first_ + index); }
  bool stopping() const { return stopping_; }

  void emit(std::string line) {
    std::lock_guard<std::mutex> lock(out_mu_);
    out_.push_back(std::move(line));
  }

  void flush() {
    std::vector<std::string> lines;
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      lines.swap(out_);
    }
    for (auto& line : lines) {
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    std::fflush(stdout);
  }

  // The thread of every stream: start them all, then serve the queue.
  void run() {
    for (size_t i = 0; i < slots_.size(); ++i) start(int(i));
    void* got;
    bool ok;
    while (cq_.Next(&got, &ok)) {
      Tag* tag = static_cast<Tag*>(got);
      if (tag->op == Op::kStop) {
        stopping_ = true;
        for (auto& slot : slots_)
          if (slot.stream) slot.stream->cancel();
      } else if (tag->op == Op::kRetry) {
        if (!stopping_) start(tag->index);
      } else if (!tag->stream->on(tag->op, ok)) {
        ended(tag->stream);
      }
    }
  }

  // --seconds passed (another thread): end every stream (no more lines, no reconnection),
  // as ads_client.py cancels its tasks; the process itself, like it, ends when stdin closes.
  void stop() { stop_alarm_.Set(&cq_, gpr_now(GPR_CLOCK_MONOTONIC), &stop_tag_); }

 private:
  struct Slot {
    std::unique_ptr<Stream> stream;
    grpc::Alarm alarm;
    Tag retry;
  };

  void start(int index) {
    slots_[index].stream = std::make_unique<Stream>(this, index, nodes_[index], &cq_);
  }

  // The server ended a stream: say how, and open a new one after Envoy's back-off.
  void ended(Stream* stream) {
    Slot& slot = slots_[stream->index()];
    int code = stream->status().error_code();
    slot.stream.reset();  // its channel closes, as ads_client.py's ``async with`` does
    if (stopping_) return;
    emit(std::string("{\"e\": \"") + code_name(code) + "\"}");
    double delay = std::uniform_real_distribution<double>(0.1, 1.0)(rng_);
    slot.alarm.Set(&cq_, std::chrono::system_clock::now() +
                             std::chrono::microseconds(int64_t(delay * 1e6)),
                   &slot.retry);
  }

  Options opts_;
  std::vector<std::string> nodes_;
  int first_;
  std::vector<Slot> slots_;
  grpc::CompletionQueue cq_;
  grpc::Alarm stop_alarm_;
  Tag stop_tag_{Op::kStop, nullptr, 0};
  bool stopping_ = false;
  std::mutex out_mu_;
  std::vector<std::string> out_;
  std::mt19937_64 rng_{std::random_device{}()};
};

Stream::Stream(Client* client, int index, const std::string& node, grpc::CompletionQueue* cq)
    : client_(client), index_(index), cid_(client->cid(index)) {
  // Like Envoy: a connection of its own (not gRPC's shared subchannel), 256 MiB receive
  // windows and no BDP probing (ads_client.py's ENVOY_WINDOW), no message size limit.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt("grpc.http2.lookahead_bytes", 256 * 1024 * 1024);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  channel_ = grpc::CreateCustomChannel(client->opts().address,
                                       grpc::InsecureChannelCredentials(), args);
  stub_ = AggregatedDiscoveryService::NewStub(channel_);
  call_ = stub_->PrepareAsyncStreamAggregatedResources(&context_, cq);
  call_->StartCall(&start_);
  pending_ = 1;
  DiscoveryRequest cds;
  cds.set_type_url(CDS);
  cds.set_node(node);
  write(std::move(cds));
  DiscoveryRequest lds;
  lds.set_type_url(LDS);
  write(std::move(lds));
}

void Stream::write(DiscoveryRequest&& request) {
  if (broken_) return;
  writes_.push_back(std::move(request));
  pump();
}

void Stream::pump() {
  if (!started_ || writing_ || broken_ || finished_ || writes_.empty()) return;
  writing_ = true;
  ++pending_;
  call_->Write(writes_.front(), &write_);
}

bool Stream::on(Op op, bool ok) {
  --pending_;
  switch (op) {
    case Op::kStart:
      if (ok) {
        started_ = true;
        pump();
        ++pending_;
        call_->Read(&response_, &read_);
      } else {
        finished_ = true;  // the call could not start: its status
        ++pending_;
        call_->Finish(&status_, &finish_);
      }
      break;
    case Op::kWrite:
      writing_ = false;
      writes_.pop_front();
      if (!ok) {
        broken_ = true;
        writes_.clear();
      }
      pump();
      break;
    case Op::kRead:
      if (ok && !client_->stopping()) {
        handle();
        ++pending_;
        call_->Read(&response_, &read_);
      } else {
        finished_ = true;  // the server ended the stream (or it failed): its status
        ++pending_;
        call_->Finish(&status_, &finish_);
      }
      break;
    case Op::kFinish:
      done_ = true;
      break;
    default:
      break;
  }
  return !(done_ && pending_ == 0);
}

void Stream::handle() {
  const Options& opts = client_->opts();
  const DiscoveryResponse& resp = response_;
  const std::string& type_url = resp.type_url();
  last_[type_url] = {resp.version_info(), resp.nonce()};
  {
    DiscoveryRequest ack;
    ack.set_type_url(type_url);
    ack.set_version_info(resp.version_info());
    ack.set_response_nonce(resp.nonce());
    for (const auto& name : names_[type_url]) ack.add_resource_names(name);
    write(std::move(ack));
  }
  std::vector<std::string_view> values;
  if (opts.fronted || !opts.watch.empty()) {
    values.reserve(resp.resources_size());
    for (const auto& r : resp.resources()) values.emplace_back(r.value());
  }
  if (opts.fronted) {
    std::vector<std::pair<const std::string*, Names>> wanted;
    if (type_url == LDS) {
      wanted.emplace_back(&RDS, route_names(values));
    } else if (type_url == CDS) {
      Names eds, secrets;
      cluster_names(values, eds, secrets);
      wanted.emplace_back(&EDS, std::move(eds));
      wanted.emplace_back(&SDS, std::move(secrets));
    }
    for (auto& [type, names] : wanted) {
      Names& current = names_[*type];
      if (names == current) continue;
      current = names;
      DiscoveryRequest sub;
      sub.set_type_url(*type);
      auto it = last_.find(*type);
      if (it != last_.end()) {
        sub.set_version_info(it->second.first);
        sub.set_response_nonce(it->second.second);
      }
      for (const auto& name : names) sub.add_resource_names(name);
      write(std::move(sub));
    }
  }
  const char* kind = type_url == LDS ? "lds" : type_url == RDS ? "rds" : nullptr;
  if (kind && (kind[0] == 'l' || opts.fronted)) {
    char t[64];
    std::snprintf(t, sizeof t, "%.6f", now());
    std::string line = "{\"c\": " + json_string(cid_) + ", \"v\": " +
                       json_string(resp.version_info()) + ", \"t\": " + t;
    if (opts.fronted) line += std::string(", \"k\": \"") + kind + "\"";
    if (!opts.watch.empty()) {
      bool carried = false;
      size_t bytes = 0;
      for (auto value : values) {
        bytes += value.size();
        if (!carried && value.find(opts.watch) != std::string_view::npos) carried = true;
      }
      line += ", \"w\": " + std::to_string(carried ? 1 : 0) +
              ", \"b\": " + std::to_string(bytes);
    }
    client_->emit(line + "}");
  }
}

std::string unhex(const std::string& hex) {
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// The node with its id: field 1 (tag 0x0a), length-delimited, appended (last value wins).
std::string with_id(const std::string& node, const std::string& cid) {
  std::string out = node;
  out += '\x0a';
  for (uint64_t n = cid.size(); ; n >>= 7) {
    if (n < 0x80) {
      out += char(n);
      break;
    }
    out += char((n & 0x7f) | 0x80);
  }
  return out + cid;
}

// --names-of lds|cds (parity.py): stdin holds one response's resources, a hex line each;
// prints the names subscribed to from them, as JSON: {"rds": [...]} or {"eds": [...],
// "sds": [...]}.
int names_of(const std::string& kind) {
  std::vector<std::string> owned;
  std::string line;
  while (std::getline(std::cin, line)) owned.push_back(unhex(line));
  std::vector<std::string_view> values(owned.begin(), owned.end());
  auto list = [](const Names& names) {
    std::string out = "[";
    for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + json_string(names[i]);
    return out + "]";
  };
  if (kind == "lds") {
    std::printf("{\"rds\": %s}\n", list(route_names(values)).c_str());
  } else {
    Names eds, secrets;
    cluster_names(values, eds, secrets);
    std::printf("{\"eds\": %s, \"sds\": %s}\n", list(eds).c_str(), list(secrets).c_str());
  }
  return 0;
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ads_client: %s\nusage: ads_client --address HOST:PORT --nodes FILE "
               "[--first N] [--count N] [--namespaces a,b] [--seconds S] [--fronted] "
               "[--extensions N] [--watch NAME] [--hold]\n",
               why.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every absl::Mutex (gRPC's locks) for lock-order cycles, a
  // debugging aid that took ~23% of this client's CPU (perf): off, as in a release build
  // of Envoy.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Options opts;
  std::string nodes_file, namespaces_arg = "acme,foo,globex";
  int first = 0, count = 250;
  double seconds = 120;
  bool hold = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--names-of") return names_of(value());
    if (a == "--address") opts.address = value();
    else if (a == "--nodes") nodes_file = value();
    else if (a == "--first") first = std::stoi(value());
    else if (a == "--count") count = std::stoi(value());
    else if (a == "--namespaces") namespaces_arg = value();
    else if (a == "--seconds") seconds = std::stod(value());
    else if (a == "--fronted") opts.fronted = true;
    else if (a == "--extensions") value();  // already in the nodes of --nodes
    else if (a == "--watch") opts.watch = value();
    else if (a == "--hold") hold = true;
    else usage("unknown argument " + a);
  }
  if (opts.address.empty()) usage("--address is required");
  if (nodes_file.empty()) usage("--nodes is required (streams.py writes it)");
  std::map<std::string, std::string> node_of;
  {
    std::ifstream in(nodes_file);
    if (!in) usage("cannot read " + nodes_file);
    std::string line;
    while (std::getline(in, line)) {
      auto tab = line.find('\t');
      if (tab != std::string::npos) node_of[line.substr(0, tab)] = unhex(line.substr(tab + 1));
    }
  }
  std::vector<std::string> namespaces;
  for (size_t start = 0;;) {
    auto comma = namespaces_arg.find(',', start);
    namespaces.push_back(namespaces_arg.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  std::vector<std::string> nodes;
  for (int i = first; i < first + count; ++i) {
    const std::string& ns = namespaces[i % namespaces.size()];
    auto it = node_of.find(ns);
    if (it == node_of.end()) usage("no node for namespace " + ns + " in " + nodes_file);
    nodes.push_back(with_id(it->second, "c" + std::to_string(i)));
  }
  if (hold) {
    std::printf("{\"ready\": 1}\n");
    std::fflush(stdout);
    std::string line;
    if (!std::getline(std::cin, line)) return 0;
  }
  static Client client(opts, std::move(nodes), first);
  std::thread([] { client.run(); }).detach();
  std::atomic<bool> stdin_closed{false};
  std::thread([&stdin_closed] {
    char buf[4096];
    while (::read(0, buf, sizeof buf) > 0) {
    }
    stdin_closed = true;
  }).detach();
  double deadline = now() + seconds;
  while (now() < deadline && !stdin_closed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    client.flush();
  }
  client.stop();
  while (!stdin_closed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::_Exit(0);
}
