// The UDP heartbeat between ranks (see heartbeat.h).
//
// Protocol: at start every rank publishes (all_gather) a 128-byte record: magic, UDP port, up
// to 8 IPv4 addresses of its interfaces (loopback excluded) and its host name. The job's nonce
// is a hash of all records, the same on every rank, so datagrams of another job (or an earlier
// run of this one) that reach a reused port are ignored. A datagram is 24 bytes: magic, the
// receiving rank, the sending rank, a sequence number and the nonce; anything else is dropped.
#include "distributed/heartbeat.h"

#include <arpa/inet.h>
#include <glog/logging.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iomanip>
#include <map>
#include <sstream>

#include "core/util/strings.h"
#include "distributed/rank_context.h"
#include "distributed/rank_layout.h"

namespace lf::dist {
namespace {

constexpr uint32_t kMagic = 0x4C464842;  // "LFHB"
constexpr size_t kRecordBytes = 128;
constexpr size_t kMaxAddresses = 8;
constexpr size_t kHostBytes = 64;
constexpr size_t kDatagramBytes = 24;
constexpr size_t kMaxHostsListed = 8;

struct Record {
  uint32_t magic = kMagic;
  uint16_t port = 0;  // 0: this rank has no heartbeat socket
  uint8_t address_count = 0;
  uint8_t unused = 0;
  uint32_t addresses[kMaxAddresses] = {};  // network byte order
  char host[kHostBytes] = {};
};
static_assert(sizeof(Record) <= kRecordBytes, "heartbeat record outgrew its slot");

struct Datagram {
  uint32_t magic;
  uint32_t to;
  uint32_t from;
  uint32_t sequence;
  uint64_t nonce;
};
static_assert(sizeof(Datagram) == kDatagramBytes, "heartbeat datagram layout");

std::vector<uint32_t> interface_addresses() {
  std::vector<uint32_t> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr && out.size() < kMaxAddresses; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    out.push_back(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
  }
  freeifaddrs(list);
  return out;
}

// FNV-1a, 64 bits: a job nonce every rank computes alike from the gathered records.
uint64_t fnv1a(const uint8_t* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

std::string seconds(double s) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << s << " s";
  return os.str();
}

}  // namespace

struct Heartbeat::Endpoint {
  std::string host;
  bool has_channel = false;
  std::vector<sockaddr_in> targets;  // where this rank's heartbeats to that peer go
};

std::string describe_peers(const std::vector<PeerStatus>& peers, Seconds silent_after) {
  if (peers.empty()) return "";
  if (std::none_of(peers.begin(), peers.end(), [](const PeerStatus& p) { return p.heard; }))
    return "no heartbeat has arrived from any peer since the start (UDP between the ranks "
           "blocked?): could not tell which peer failed";
  // Silent peers grouped by host, hosts in order of their first rank.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const PeerStatus*>> silent;
  for (const PeerStatus& p : peers) {
    if (p.silent_s <= silent_after.count()) continue;
    if (silent.find(p.host) == silent.end()) order.push_back(p.host);
    silent[p.host].push_back(&p);
  }
  if (order.empty())
    return "every peer's heartbeat is current, so the peers are alive: one is stuck outside this "
           "operation, or the ranks issued their operations in different orders";
  std::ostringstream os;
  os << "no heartbeat from ";
  for (size_t i = 0; i < order.size() && i < kMaxHostsListed; ++i) {
    const std::vector<const PeerStatus*>& group = silent[order[i]];
    std::vector<int> ranks;
    double least = group.front()->silent_s;
    for (const PeerStatus* p : group) {
      ranks.push_back(p->rank);
      least = std::min(least, p->silent_s);
    }
    os << (i > 0 ? ", " : "") << order[i] << " (rank" << (ranks.size() > 1 ? "s " : " ")
       << format_rank_list(ranks) << ") for " << seconds(least);
  }
  if (order.size() > kMaxHostsListed) os << " and " << order.size() - kMaxHostsListed << " more hosts";
  os << (order.size() > 1 ? ": those hosts are" : ": that host is")
     << " down or cut off, or those ranks are stopped";
  return os.str();
}

Heartbeat::Heartbeat(Communicator& comm, Options options)
    : rank_(comm.rank()), world_(comm.world_size()), options_(options) {
  const std::string my_host = rank_context().rank >= 0 ? rank_context().host : local_host_name();
  Record mine;
  socket_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in bound{};
  bound.sin_family = AF_INET;
  bound.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t length = sizeof(bound);
  if (socket_ < 0 || ::bind(socket_, reinterpret_cast<sockaddr*>(&bound), sizeof(bound)) != 0 ||
      ::getsockname(socket_, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    LOG(WARNING) << "heartbeat: no UDP socket (" << std::strerror(errno)
                 << "); timeouts will not be able to name a silent host";
    if (socket_ >= 0) ::close(socket_);
    socket_ = -1;
  } else {
    mine.port = ntohs(bound.sin_port);
    const std::vector<uint32_t> addresses = interface_addresses();
    mine.address_count = static_cast<uint8_t>(addresses.size());
    std::copy(addresses.begin(), addresses.end(), mine.addresses);
  }
  std::strncpy(mine.host, my_host.c_str(), kHostBytes - 1);

  torch::Tensor in = torch::zeros({static_cast<int64_t>(kRecordBytes)}, torch::kUInt8);
  std::memcpy(in.data_ptr<uint8_t>(), &mine, sizeof(mine));
  torch::Tensor all;
  try {
    all = comm.all_gather(in, "heartbeat address exchange").contiguous();
  } catch (...) {
    if (socket_ >= 0) ::close(socket_);
    throw;
  }
  nonce_ = fnv1a(all.data_ptr<uint8_t>(), static_cast<size_t>(all.numel()));

  endpoints_.resize(world_);
  for (int r = 0; r < world_; ++r) {
    Record theirs;
    std::memcpy(&theirs, all.data_ptr<uint8_t>() + r * kRecordBytes, sizeof(theirs));
    theirs.host[kHostBytes - 1] = '\0';
    Endpoint& e = endpoints_[r];
    e.host = theirs.host;
    e.has_channel = theirs.magic == kMagic && theirs.port != 0;
    if (!e.has_channel || r == rank_) continue;
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = htons(theirs.port);
    if (e.host == my_host || theirs.address_count == 0) {
      target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      e.targets.push_back(target);
      continue;
    }
    for (size_t i = 0; i < std::min<size_t>(theirs.address_count, kMaxAddresses); ++i) {
      target.sin_addr.s_addr = theirs.addresses[i];
      e.targets.push_back(target);
    }
  }
  started_ = Clock::now();
  last_heard_.assign(world_, started_);
  heard_.assign(world_, false);
  if (socket_ < 0) return;
  thread_ = std::thread([this] { loop(); });
  if (options_.report_in_timeouts) set_peer_report([this] { return describe(); });
}

Heartbeat::~Heartbeat() {
  if (options_.report_in_timeouts && socket_ >= 0) set_peer_report(nullptr);
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (socket_ >= 0) ::close(socket_);
}

void Heartbeat::loop() {
  const auto period = std::chrono::duration_cast<Clock::duration>(options_.period);
  Clock::time_point next_send = Clock::now();
  while (!stop_) {
    const Clock::time_point now = Clock::now();
    if (now >= next_send) {
      if (!paused_) send_all();
      next_send = std::max(next_send + period, now);
    }
    // Wake at least every 100 ms to notice stop_.
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(next_send - now),
                               std::chrono::milliseconds(100));
    pollfd p{socket_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, wait.count()))) > 0) receive_all();
  }
}

void Heartbeat::send_all() {
  Datagram d{kMagic, 0, static_cast<uint32_t>(rank_), ++sequence_, nonce_};
  for (int r = 0; r < world_; ++r) {
    d.to = static_cast<uint32_t>(r);
    for (const sockaddr_in& target : endpoints_[r].targets)
      // Best effort: a full buffer or an unreachable network is what we are here to detect.
      (void)::sendto(socket_, &d, sizeof(d), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&target),
                     sizeof(target));
  }
}

void Heartbeat::receive_all() {
  Datagram d{};
  while (true) {
    const ssize_t n = ::recv(socket_, &d, sizeof(d), MSG_DONTWAIT);
    if (n < 0) return;  // EAGAIN: drained (or an error we cannot act on)
    if (n != static_cast<ssize_t>(sizeof(d)) || d.magic != kMagic || d.nonce != nonce_ ||
        d.to != static_cast<uint32_t>(rank_) || d.from >= static_cast<uint32_t>(world_))
      continue;
    std::lock_guard<std::mutex> lock(mutex_);
    last_heard_[d.from] = Clock::now();
    heard_[d.from] = true;
  }
}

std::vector<PeerStatus> Heartbeat::peers() const {
  std::vector<PeerStatus> out;
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  for (int r = 0; r < world_; ++r) {
    if (r == rank_ || !endpoints_[r].has_channel) continue;
    out.push_back(PeerStatus{r, endpoints_[r].host, heard_[r],
                             std::chrono::duration_cast<Seconds>(now - last_heard_[r]).count()});
  }
  return out;
}

std::string Heartbeat::describe() const {
  if (socket_ < 0) return "";
  return describe_peers(peers(), options_.silent_after);
}

}  // namespace lf::dist
