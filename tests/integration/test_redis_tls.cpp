// The Redis dedup store over TLS (rediss://) against real redis-servers with
// TLS, which each test starts itself on free loopback ports. The CA, the
// server's and the client's certificates are made with the openssl command
// at test time. Needs redis-server (built with TLS, as Debian's is) and
// openssl on PATH; if either is missing, the tests fail.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <thread>

#include "../unit/dedup_conformance.hpp"
#include "../unit/test_util.hpp"
#include "log/logger.hpp"
#include "training_output.h"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kPassword = "tdo-tls-hunter2";

void run(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"/usr/bin/env"};
    argv.insert(argv.end(), args.begin(), args.end());
    INFO(args[0] + " " + (args.size() > 1 ? args[1] : ""));
    REQUIRE(tdo_test::wait_for(tdo_test::spawn(argv)) == 0);
}

// A CA, a server certificate for 127.0.0.1 and localhost, a client
// certificate, and a second CA that signed neither: made once per process.
struct Pki {
    tdo_test::TempDir dir;
    std::string ca, server_cert, server_key, client_cert, client_key, other_ca;

    Pki() {
        const std::string d = dir.path();
        ca = d + "/ca.crt";
        other_ca = d + "/other-ca.crt";
        server_cert = d + "/server.crt";
        server_key = d + "/server.key";
        client_cert = d + "/client.crt";
        client_key = d + "/client.key";
        auto make_ca = [&](const std::string& name) {
            run({"openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-keyout", d + "/" + name + ".key", "-out", d + "/" + name + ".crt",
                 "-days", "3", "-subj", "/CN=tdo test " + name});
        };
        make_ca("ca");
        make_ca("other-ca");
        auto make_leaf = [&](const std::string& name, const std::string& cn, const std::string& ext) {
            tdo_test::write_file(d + "/" + name + ".ext", ext);
            run({"openssl", "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-keyout", d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj", "/CN=" + cn});
            run({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", ca, "-CAkey", d + "/ca.key",
                 "-set_serial", name == "server" ? "2" : "3", "-days", "3", "-out", d + "/" + name + ".crt", "-extfile",
                 d + "/" + name + ".ext"});
        };
        make_leaf(
            "server", "localhost",
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
        make_leaf("client", "tdo-test-client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    }
};

const Pki& pki() {
    static Pki p;
    return p;
}

bool accepts_connections(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

// A redis-server with a TLS port (and a plain one), a password, no
// persistence; `auth_clients`: "no", "optional" or "yes" (a client
// certificate signed by the CA is required).
class TlsRedis {
public:
    explicit TlsRedis(const std::string& auth_clients = "optional", int tls_port = 0)
        : tls_port_(tls_port ? tls_port : tdo_test::free_port()), plain_port_(tdo_test::free_port()) {
        const Pki& p = pki();
        pid_ = tdo_test::spawn({"/usr/bin/env",
                                "redis-server",
                                "--bind",
                                "127.0.0.1",
                                "--port",
                                std::to_string(plain_port_),
                                "--tls-port",
                                std::to_string(tls_port_),
                                "--tls-cert-file",
                                p.server_cert,
                                "--tls-key-file",
                                p.server_key,
                                "--tls-ca-cert-file",
                                p.ca,
                                "--tls-auth-clients",
                                auth_clients,
                                "--requirepass",
                                kPassword,
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                                "--daemonize",
                                "no",
                                "--dir",
                                dir_.path(),
                                "--logfile",
                                dir_ / "redis.log"});
        REQUIRE(pid_ > 0);
        const auto deadline = Clock::now() + 10s;
        while (!(accepts_connections(tls_port_) && accepts_connections(plain_port_)) && Clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                FAIL("redis-server exited: " + tdo_test::read_file(dir_ / "redis.log"));
            }
            std::this_thread::sleep_for(20ms);
        }
        REQUIRE(accepts_connections(tls_port_));
    }
    ~TlsRedis() { stop(); }
    TlsRedis(const TlsRedis&) = delete;
    TlsRedis& operator=(const TlsRedis&) = delete;

    void kill_now() {
        if (pid_ > 0) ::kill(pid_, SIGKILL);
    }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        tdo_test::wait_for(pid_);
        pid_ = -1;
    }

    int tls_port() const { return tls_port_; }
    int plain_port() const { return plain_port_; }
    std::string url(const std::string& host = "127.0.0.1") const {
        return "rediss://:" + kPassword + "@" + host + ":" + std::to_string(tls_port_) + "/0";
    }

private:
    tdo_test::TempDir dir_;
    int tls_port_, plain_port_;
    pid_t pid_ = -1;
};

std::string unique_namespace() {
    static std::atomic<int> counter{0};
    return "tdo-tls-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

RedisTlsOptions tls_options(const std::string& ca = pki().ca) {
    RedisTlsOptions t;
    t.ca_file = ca;
    return t;
}

std::unique_ptr<DedupStore> open_store(const std::string& url, const RedisTlsOptions& tls,
                                       const std::string& ns = "tdo-tls", std::chrono::milliseconds timeout = 2000ms,
                                       const Logger* logger = nullptr) {
    RedisStoreOptions o;
    o.url = url;
    o.timeout = timeout;
    o.owner_key_prefix = ns + ":owner:";
    o.tls = tls;
    o.logger = logger;
    return make_redis_dedup_store(o);
}

// The message of the Error that `fn` throws (with its code in `code`).
template <class Fn>
std::string error_of(Fn&& fn, ErrorCode* code = nullptr) {
    try {
        fn();
    } catch (const Error& e) {
        if (code) *code = e.code();
        return e.what();
    }
    FAIL("expected an error");
    return "";
}

// Every log event of the process while it lives.
class LogCapture {
public:
    LogCapture() {
        set_log_callback(
            [this](LogLevel, std::string_view event, std::string_view json) {
                std::lock_guard<std::mutex> lock(mutex_);
                text_ += std::string(event) + " " + std::string(json) + "\n";
            },
            LogLevel::Debug);
    }
    ~LogCapture() { set_log_callback({}, LogLevel::Off); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;
    std::string all() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return text_;
    }

private:
    mutable std::mutex mutex_;
    std::string text_;
};

// JSON for a writer using `url` with the given redis_tls_* keys (already JSON members).
std::string writer_json(const std::string& dir, const std::string& url, const std::string& tls_keys,
                        const std::string& extra = "") {
    return "{\"output_dir\":\"" + dir + "\",\"redis_url\":\"" + url + "\",\"dedup_namespace\":\"" + unique_namespace() +
           "\",\"log_level\":\"off\",\"flush_interval_ms\":50" + (tls_keys.empty() ? "" : "," + tls_keys) + extra + "}";
}

std::string json_key(const std::string& key, const std::string& value) { return "\"" + key + "\":\"" + value + "\""; }

// What secrets look like in messages: the password, the key file's path.
void check_no_secrets(const std::string& text) {
    CHECK_THAT(text, !Catch::Contains("hunter2"));
    CHECK_THAT(text, !Catch::Contains("client.key"));
    CHECK_THAT(text, !Catch::Contains("server.key"));
    CHECK_THAT(text, !Catch::Contains("PRIVATE KEY"));
}

}  // namespace

TEST_CASE("Redis over TLS: claims, commits, owners and batches like every store", "[integration][redis-tls]") {
    TlsRedis redis;
    tdo_test::TempDir dir;
    // The certificate checked by IP address (the URL's host) ...
    const std::string ns = unique_namespace();
    auto store = open_store(redis.url(), tls_options(), ns);
    CHECK(std::string(store->kind()) == "redis");
    tdo_test::check_dedup_conformance(*store, ns, dir.path());
    // ... and by name, given by redis_tls_server_name (or the URL's host).
    const std::string ns2 = unique_namespace();
    RedisTlsOptions by_name = tls_options();
    by_name.server_name = "localhost";
    auto a = open_store(redis.url(), by_name, ns2);
    auto b = open_store(redis.url(), by_name, ns2);
    tdo_test::check_dedup_two_writers(*a, *b, ns2, dir.path());
    // Threads share the pool; more threads than connections take turns.
    const std::string ns3 = unique_namespace();
    RedisStoreOptions o;
    o.url = redis.url();
    o.tls = tls_options();
    o.pool_size = 2;
    o.owner_key_prefix = ns3 + ":owner:";
    auto small = make_redis_dedup_store(o);
    tdo_test::check_dedup_threads(*small, ns3, dir.path(), 8, 200);
}

TEST_CASE("Redis over TLS: a process opens and closes many stores", "[integration][redis-tls]") {
    TlsRedis redis;
    for (int i = 0; i < 300; ++i) {
        auto store = open_store(redis.url(), tls_options());
        REQUIRE(store->claim("tdo-tls:many:" + unique_namespace(), "o", 60s) == ClaimState::Claimed);
    }
}

TEST_CASE("Redis over TLS: a writer configured with the redis_tls_* keys, and a client certificate",
          "[integration][redis-tls]") {
    TlsRedis redis("yes");  // client certificates required
    const Pki& p = pki();
    LogCapture logs;
    tdo_test::TempDir dir;
    {
        TrainingOutput w(Config::from_json(writer_json(dir.path(), redis.url(),
                                                       json_key("redis_tls_ca_file", p.ca) + "," +
                                                           json_key("redis_tls_cert_file", p.client_cert) + "," +
                                                           json_key("redis_tls_key_file", p.client_key))));
        const auto msg = tdo_test::message_json("StepsRecord");
        CHECK(w.generate("Walked to work.", msg, tdo_test::result_json()) == Outcome::Written);
        CHECK(w.generate("Walked to work.", msg, tdo_test::result_json()) == Outcome::Duplicate);
        w.close();
        CHECK(w.stats().dedup_store_errors == 0);
        CHECK(w.stats().lines_appended == 1);
    }
    check_no_secrets(logs.all());

    // Without a certificate the server refuses: an error at open, not an outage.
    tdo_writer* w = nullptr;
    CHECK(tdo_writer_open(&w, writer_json(dir.path(), redis.url(), json_key("redis_tls_ca_file", p.ca)).c_str()) ==
          TDO_E_DEDUP_STORE);
    CHECK(w == nullptr);
    const std::string error = tdo_last_error();
    INFO(error);
    CHECK_THAT(error, Catch::Contains("certificate") && Catch::Contains("rediss://:***@127.0.0.1"));
    check_no_secrets(error);
    check_no_secrets(logs.all());

    // A client certificate from a CA the server does not trust: refused too.
    // (Its own CA's key and certificate serve as a client certificate.)
    const std::string other_key = p.dir / "other-ca.key";
    CHECK(tdo_writer_open(
              &w, writer_json(dir.path(), redis.url(),
                              json_key("redis_tls_ca_file", p.ca) + "," + json_key("redis_tls_cert_file", p.other_ca) +
                                  "," + json_key("redis_tls_key_file", other_key))
                      .c_str()) == TDO_E_DEDUP_STORE);
    CHECK_THAT(tdo_last_error(), Catch::Contains("client certificate"));
    check_no_secrets(tdo_last_error());
}

TEST_CASE("Redis over TLS: a certificate from another CA, or for another name, is refused at open",
          "[integration][redis-tls]") {
    TlsRedis redis;
    const Pki& p = pki();
    ErrorCode code{};
    // Another CA.
    std::string e = error_of([&] { open_store(redis.url(), tls_options(p.other_ca)); }, &code);
    CHECK(code == ErrorCode::DedupStore);
    // (The server sends its CA along: "self-signed certificate in certificate chain".)
    CHECK_THAT(e, Catch::Contains("certificate was not accepted") &&
                      (Catch::Contains("unable to get local issuer certificate") ||
                       Catch::Contains("self-signed certificate in certificate chain")) &&
                      Catch::Contains("redis_tls_ca_file"));
    check_no_secrets(e);
    // The system's CAs (no redis_tls_ca_file) do not know the test CA either.
    e = error_of([&] { open_store(redis.url(), RedisTlsOptions{}); }, &code);
    CHECK(code == ErrorCode::DedupStore);
    CHECK_THAT(e, Catch::Contains("certificate was not accepted"));
    // Another name, another address.
    RedisTlsOptions other_name = tls_options();
    other_name.server_name = "redis.example.com";
    e = error_of([&] { open_store(redis.url(), other_name); }, &code);
    CHECK(code == ErrorCode::DedupStore);
    CHECK_THAT(e, Catch::Contains("hostname mismatch") && Catch::Contains("redis_tls_server_name"));
    check_no_secrets(e);
    other_name.server_name = "127.0.0.2";
    e = error_of([&] { open_store(redis.url(), other_name); }, &code);
    CHECK_THAT(e, Catch::Contains("IP address mismatch"));
    // Verification off (tests only): accepted, with a warning.
    RedisTlsOptions unverified = tls_options(p.other_ca);
    unverified.verify = false;
    unverified.server_name = "redis.example.com";
    LogCapture logs;
    Logger logger(LogLevel::Off);
    auto store = open_store(redis.url(), unverified, "tdo-tls-unverified", 2000ms, &logger);
    CHECK(store->claim("tdo-tls-unverified:" + unique_namespace(), "o", 60s) == ClaimState::Claimed);
    CHECK_THAT(logs.all(), Catch::Contains("training_output_redis_tls_unverified"));

    // Through the C ABI: TDO_E_DEDUP_STORE, the password masked.
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    CHECK(
        tdo_writer_open(&w, writer_json(dir.path(), redis.url(), json_key("redis_tls_ca_file", p.other_ca)).c_str()) ==
        TDO_E_DEDUP_STORE);
    CHECK_THAT(tdo_last_error(), Catch::Contains("rediss://:***@127.0.0.1:" + std::to_string(redis.tls_port())));
    check_no_secrets(tdo_last_error());
    check_no_secrets(logs.all());
}

TEST_CASE("Redis over TLS: a wrong password, a plain port, a plain URL: clear errors without secrets",
          "[integration][redis-tls]") {
    TlsRedis redis;
    const std::string port = std::to_string(redis.tls_port());
    ErrorCode code{};
    std::string e =
        error_of([&] { open_store("rediss://:hunter2-wrong@127.0.0.1:" + port + "/0", tls_options()); }, &code);
    CHECK(code == ErrorCode::DedupStore);
    CHECK_THAT(e, Catch::Contains("authentication failed"));
    check_no_secrets(e);
    LogCapture logs;
    Logger logger(LogLevel::Off);
    // rediss:// to the plain port: Redis waits for the end of a line that
    // never comes; the store starts unavailable, within the timeout.
    auto t0 = Clock::now();
    auto plain = open_store("rediss://:" + kPassword + "@127.0.0.1:" + std::to_string(redis.plain_port()) + "/0",
                            tls_options(), "tdo-tls", 300ms, &logger);
    CHECK(Clock::now() - t0 < 300ms + 1s);  // without the bound it would wait for ever
    CHECK_THAT(logs.all(), Catch::Contains("no answer to the TLS handshake within 300 ms"));
    e = error_of([&] { plain->claim("tdo-tls:x", "o", 60s); });
    check_no_secrets(e);
    // redis:// to the TLS port: the server hangs up; the store starts unavailable.
    auto store = open_store("redis://:" + kPassword + "@127.0.0.1:" + port + "/0", {}, "tdo-tls", 500ms, &logger);
    e = error_of([&] { store->claim("tdo-tls:x", "o", 60s); });
    CHECK_THAT(logs.all(), Catch::Contains("training_output_dedup_store_unavailable"));
    check_no_secrets(e);
    check_no_secrets(logs.all());
}

TEST_CASE("Redis over TLS: files that cannot be used are configuration errors naming the key, never the key's path",
          "[integration][redis-tls]") {
    TlsRedis redis;
    const Pki& p = pki();
    tdo_test::TempDir dir;
    const std::string secret_key = dir / "secret-hunter2.key";
    tdo_test::write_file(secret_key, "-----BEGIN PRIVATE KEY-----\nhunter2hunter2\n-----END PRIVATE KEY-----\n");
    ErrorCode code{};
    auto with = [&](const std::string& ca, const std::string& cert, const std::string& key) {
        RedisTlsOptions t;
        t.ca_file = ca;
        t.cert_file = cert;
        t.key_file = key;
        return error_of([&] { open_store(redis.url(), t); }, &code);
    };
    std::string e = with(dir / "missing-ca.crt", "", "");
    CHECK(code == ErrorCode::Config);
    CHECK_THAT(e, Catch::Contains("\"redis_tls_ca_file\"") && Catch::Contains("missing-ca.crt"));
    e = with(secret_key, "", "");  // not a certificate
    CHECK_THAT(e, Catch::Contains("\"redis_tls_ca_file\""));
    e = with(p.ca, p.client_cert, dir / "missing-hunter2.key");
    CHECK(code == ErrorCode::Config);
    CHECK_THAT(e, Catch::Contains("\"redis_tls_key_file\": cannot be read"));
    check_no_secrets(e);
    e = with(p.ca, p.client_cert, secret_key);  // not a key
    CHECK(code == ErrorCode::Config);
    CHECK_THAT(e, Catch::Contains("\"redis_tls_key_file\""));
    check_no_secrets(e);
    e = with(p.ca, p.client_cert, p.server_key);  // another certificate's key
    CHECK(code == ErrorCode::Config);
    CHECK_THAT(e, Catch::Contains("\"redis_tls_key_file\"") && Catch::Contains("not the key of the certificate"));
    check_no_secrets(e);
    e = with(p.ca, dir / "missing-client.crt", p.client_key);
    CHECK_THAT(e, Catch::Contains("\"redis_tls_cert_file\""));
    check_no_secrets(e);
    e = with(p.ca, p.client_cert, "");
    CHECK_THAT(e, Catch::Contains("\"redis_tls_key_file\": required with redis_tls_cert_file"));

    // The same through a writer's configuration.
    tdo_writer* w = nullptr;
    CHECK(tdo_writer_open(&w, writer_json(dir.path(), redis.url(),
                                          json_key("redis_tls_cert_file", p.client_cert) + "," +
                                              json_key("redis_tls_key_file", secret_key))
                                  .c_str()) == TDO_E_CONFIG);
    CHECK_THAT(tdo_last_error(), Catch::Contains("redis_tls_key_file"));
    check_no_secrets(tdo_last_error());
}

TEST_CASE("Redis over TLS: a server that never answers the handshake: no call waits past the timeout",
          "[integration][redis-tls]") {
    // A socket that listens but never reads: TCP connects, the handshake gets no answer.
    int port = 0;
    const int fd = tdo_test::bound_loopback_socket(&port);
    REQUIRE(::listen(fd, 64) == 0);
    const std::string url = "rediss://:hunter2-silent@127.0.0.1:" + std::to_string(port) + "/0";
    LogCapture logs;
    tdo_test::TempDir dir;
    // The same writer against a port where nothing listens fails at once: that open's time is
    // what the writer needs besides the handshake (loading the CA, the spool), slow under
    // sanitizers on a busy machine, so the bound is on the difference.
    const std::string ca = pki().ca;  // made once per run by openssl processes: not part of any open
    const auto open_with = [&](const std::string& redis_url, const std::string& path) {
        const auto config = Config::from_json(
            writer_json(path, redis_url, json_key("redis_tls_ca_file", ca), ",\"redis_timeout_ms\":200"));
        const auto t0 = Clock::now();
        auto writer = std::make_unique<TrainingOutput>(config);
        return std::make_pair(std::move(writer), Clock::now() - t0);
    };
    tdo_test::TempDir refused_dir;
    auto baseline = open_with("rediss://:hunter2-silent@127.0.0.1:" + std::to_string(tdo_test::free_port()) + "/0",
                              refused_dir.path());
    baseline.first->close();
    auto [writer, open_time] = open_with(url, dir.path());
    TrainingOutput& w = *writer;
    INFO("open: " << std::chrono::duration_cast<std::chrono::milliseconds>(open_time).count()
                  << " ms, without the handshake: "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(baseline.second).count() << " ms");
    CHECK(open_time >= 150ms);
    CHECK(open_time - baseline.second < 200ms + 1s);
    CHECK_THAT(logs.all(), Catch::Contains("no answer to the TLS handshake within 200 ms"));
    Clock::duration slowest{};
    for (int i = 0; i < 100; ++i) {
        auto t = Clock::now();
        CHECK(w.generate("Quiet night " + std::to_string(i % 10), tdo_test::message_json("SleepSessionRecord"),
                         tdo_test::result_json()) == Outcome::Written);
        slowest = std::max(slowest, Clock::now() - t);
    }
    CHECK(slowest < 200ms + 1s);
    w.close();
    check_no_secrets(logs.all());
    ::close(fd);
}

TEST_CASE("Redis over TLS: a server killed mid-pipeline: the call fails, the host gets no SIGPIPE, the store recovers",
          "[integration][redis-tls]") {
    struct sigaction old_action {};
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, &old_action);  // a SIGPIPE would end this process

    auto redis = std::make_unique<TlsRedis>();
    const int port = redis->tls_port();
    RedisStoreOptions o;
    o.url = redis->url();
    o.tls = tls_options();
    o.timeout = 5000ms;
    o.reconnect_base = 10ms;
    o.reconnect_max = 50ms;
    o.owner_key_prefix = "tdo-tls:owner:";
    auto store = make_redis_dedup_store(o);
    std::vector<std::string> keys;
    for (int i = 0; i < 100000; ++i) keys.push_back("tdo-tls:big:" + std::string(64, 'k') + std::to_string(i));
    CHECK(store->claim("tdo-tls:first", "o", 60s) == ClaimState::Claimed);
    std::thread killer([&] {
        std::this_thread::sleep_for(30ms);
        redis->kill_now();
    });
    for (int round = 0; round < 3; ++round) {
        try {
            store->claim_batch(keys, "o", 60s);
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::DedupStore);
        }
    }
    killer.join();
    redis.reset();
    // Back on the same port: the store reconnects by itself.
    redis = std::make_unique<TlsRedis>("optional", port);
    const auto deadline = Clock::now() + 10s;
    bool back = false;
    while (!back && Clock::now() < deadline) {
        try {
            back = store->claim("tdo-tls:after", "o", 60s) == ClaimState::Claimed;
        } catch (const Error&) {
            std::this_thread::sleep_for(20ms);
        }
    }
    CHECK(back);
    ::sigaction(SIGPIPE, &old_action, nullptr);
}
